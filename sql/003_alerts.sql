-- Alerting: alert state per fingerprint (rule + dimension + value), transitions, silences, email outbox.

-- Only fingerprints that were ever pending have a row; "inactive" rows keep resolved_at for the cooldown.
CREATE TABLE alert_state (
    fingerprint    text PRIMARY KEY,
    rule           text NOT NULL,
    dimension      text NOT NULL CHECK (dimension IN ('all', 'topic', 'ticker', 'source')),
    value          text NOT NULL,
    status         text NOT NULL CHECK (status IN ('inactive', 'pending', 'firing')),
    severity       text NOT NULL,
    pending_since  timestamptz,
    firing_since   timestamptz,
    last_breach_at timestamptz,
    resolved_at    timestamptz,
    -- Whether the firing transition was notified (not silenced): only then is "resolved" mailed.
    notified       bool NOT NULL DEFAULT false,
    neg_share      double precision,
    baseline       double precision,
    stories        int,
    neg_stories    int,
    base_stories   int,
    p_value        double precision,
    evaluated_at   timestamptz NOT NULL,
    UNIQUE (rule, dimension, value)
);
CREATE INDEX alert_state_open_idx ON alert_state (status) WHERE status <> 'inactive';

-- One email per group of transitions (same transition, dimension value, evaluation time, recipients).
CREATE TABLE alert_outbox (
    id              bigserial PRIMARY KEY,
    group_key       text NOT NULL UNIQUE,
    message_id      text NOT NULL UNIQUE,
    transition      text NOT NULL CHECK (transition IN ('firing', 'resolved')),
    recipients      text[] NOT NULL DEFAULT '{}',
    subject         text NOT NULL,
    body_text       text NOT NULL,
    body_html       text NOT NULL,
    -- pending -> sending (claimed) -> sent; failed after the last retry; unconfirmed when the sender
    -- stopped after handing the message over and before recording it (never resent automatically).
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'unconfirmed')),
    attempts        int NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    claimed_at      timestamptz,
    sent_at         timestamptz,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alert_outbox_due_idx ON alert_outbox (next_attempt_at) WHERE status = 'pending';

-- Every transition, mailed or not; (fingerprint, transition, at) makes a re-evaluation idempotent.
CREATE TABLE alert_events (
    id           bigserial PRIMARY KEY,
    fingerprint  text NOT NULL REFERENCES alert_state ON DELETE CASCADE,
    transition   text NOT NULL CHECK (transition IN ('firing', 'resolved')),
    at           timestamptz NOT NULL,
    rule         text NOT NULL,
    dimension    text NOT NULL,
    value        text NOT NULL,
    severity     text NOT NULL,
    neg_share    double precision,
    baseline     double precision,
    stories      int,
    neg_stories  int,
    base_stories int,
    p_value      double precision,
    silenced     bool NOT NULL DEFAULT false,
    outbox_id    bigint REFERENCES alert_outbox ON DELETE SET NULL,
    UNIQUE (fingerprint, transition, at)
);
CREATE INDEX alert_events_at_idx ON alert_events (at);

-- Matchers are glob patterns (NULL matches anything); a silence is active in [starts_at, ends_at)
-- until it is expired.
CREATE TABLE alert_silences (
    id         bigserial PRIMARY KEY,
    rule       text,
    dimension  text,
    value      text,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz NOT NULL,
    comment    text NOT NULL DEFAULT '',
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Set by "silence expire": the silence stops applying from this moment on.
    expired_at timestamptz,
    CHECK (ends_at > starts_at)
);
CREATE INDEX alert_silences_ends_idx ON alert_silences (ends_at);
