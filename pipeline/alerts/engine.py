"""Alert evaluation: negative-share spikes per dimension value, with an Alertmanager-style lifecycle.

Each rule looks at one dimension (all, topic, ticker, source) over a window ending at ``now`` and compares
every value's share of negative stories with its trailing baseline (``stats.spike_test``). A fingerprint
(rule + dimension + value) moves inactive → pending → firing → resolved:

- a breach makes it pending; it fires once it has breached for ``for`` (0: at once);
- a pending alert whose breach ends goes back to inactive silently (no email);
- a firing alert resolves only after ``keep_firing_for`` without a breach (no flapping);
- after resolving it cannot fire again until ``cooldown`` has passed;
- firing and resolved are transitions: each is recorded once and, unless silenced, queued as an email
  in the outbox in the same transaction as the state change (so a crash loses or doubles nothing).

Transitions of the same dimension value at the same evaluation (say the 6h and 24h rules of one ticker)
go out as one grouped email.

A new firing of a topic, source or all rule is inhibited (recorded and shown, no email for it or its
resolution) when tickers with firing alerts explain it: its test, run again on the window without the
articles that name them, no longer breaches. One company's storm then mails as that company's alerts.
When none of those tickers fires any more and the alert still breaches, unexplained by another firing
ticker, the inhibition is released: its firing email goes out then, and its resolution will too. A firing
held back by a silence is released the same way when the silence ends.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from pipeline import store
from pipeline.alerts import emails, notify
from pipeline.alerts.lifecycle import (
    HOUR,
    AlertState,
    Counts,
    Transition,
    observe,
    pooled_prior,
    rule_test,
    silenced,
    step_rule,
    window_end,
)
from pipeline.alerts.report import AlertReport, alert_view
from pipeline.alerts.rules import Rule, load_rules
from pipeline.alerts.stats import COUNT_TESTS, dispersion, market_activity
from pipeline.config import Settings, get_settings

HEADLINES_PER_EMAIL = 5


def _state_from_row(row: Any) -> AlertState:
    data = dict(row._mapping)
    data.pop("fingerprint")
    return AlertState(**data | {"inhibited_by": tuple(data["inhibited_by"] or ())})


def _state_row(state: AlertState) -> dict[str, Any]:
    return {"fingerprint": state.fingerprint, **asdict(state), "inhibited_by": list(state.inhibited_by)}


CountsKey = tuple[str, timedelta, timedelta, timedelta, bool, str]


def _counts_key(rule: Rule) -> CountsKey:
    """Return what the counts of ``rule`` depend on: rules that share it share one query."""
    count_test = rule.test in COUNT_TESTS
    return (rule.dimension, rule.window, rule.baseline, rule.baseline_gap, count_test, rule.negatives)


def _counts(conn: Connection, version: str, rule: Rule, now: datetime) -> dict[str, Counts]:
    end = window_end(now)
    win_start = end - rule.window
    base_end = win_start - rule.baseline_gap
    bounds = (base_end - rule.baseline, base_end, win_start, end)
    rows = store.window_counts(conn, version, rule.dimension, *bounds)
    activity = 1.0
    if rule.test in COUNT_TESTS:
        every = store.window_counts(conn, version, "all", *bounds)
        if every:
            a = every[0]
            activity = market_activity(a.stories, rule.window / HOUR, a.base_stories, rule.baseline / HOUR)
    soft = rule.negatives == "probabilities"
    spread = 1.0
    if soft:
        spread = dispersion(sum(r.base_neg_expected for r in rows), sum(r.base_neg_expected_sq for r in rows))
    return {
        r.value: Counts(
            r.stories,
            r.neg_expected if soft else r.neg_stories,
            r.base_stories,
            r.base_neg_expected if soft else r.base_neg,
            activity,
            spread,
        )
        for r in rows
    }


def _event_row(t: Transition) -> dict[str, Any]:
    s = t.state
    return {
        "fingerprint": s.fingerprint,
        "transition": t.transition,
        "at": t.at,
        "rule": s.rule,
        "dimension": s.dimension,
        "value": s.value,
        "severity": s.severity,
        "neg_share": s.neg_share,
        "baseline": s.baseline,
        "stories": s.stories,
        "neg_stories": s.neg_stories,
        "base_stories": s.base_stories,
        "p_value": s.p_value,
        "expected_negatives": s.expected_negatives,
        "silenced": t.silenced,
        "inhibited_by": list(t.inhibited_by),
    }


def _message_id(group_key: str, settings: Settings) -> str:
    # Derived from the group key, so every attempt (and any manual resend) carries the same Message-ID
    # and receiving systems can drop a duplicate.
    domain = settings.alert_from.rpartition("@")[2] or "finsent.localhost"
    return f"<finsent-{hashlib.sha256(group_key.encode()).hexdigest()[:32]}@{domain}>"


def _queue_emails(
    conn: Connection,
    version: str,
    rules: Mapping[str, Rule],
    transitions: Sequence[tuple[Transition, int]],
    now: datetime,
    settings: Settings,
) -> int:
    """Queue one email per group of unsilenced transitions; return how many emails are new or reused."""
    groups: dict[tuple[str, str, str, tuple[str, ...]], list[tuple[Transition, int]]] = defaultdict(list)
    for t, event_id in transitions:
        if t.silenced:
            continue
        recipients = tuple(sorted(rules[t.state.rule].recipients))
        groups[(t.transition, t.state.dimension, t.state.value, recipients)].append((t, event_id))
    for (transition, dimension, value, recipients), members in groups.items():
        group_key = f"{transition}|{dimension}={value}|{now.isoformat()}|{','.join(recipients)}"
        widest = max(members, key=lambda m: m[0].window)[0]
        end = window_end(now)
        headlines = [
            emails.Headline(r.title, r.url, r.source, r.published_at, r.score, r.copies)
            for r in store.negative_headlines(
                conn, version, dimension, value, end - widest.window, end, HEADLINES_PER_EMAIL
            )
        ]
        email = emails.render_alert_email(
            transition,
            dimension,
            value,
            [emails.AlertFigures.from_state(m[0].state, m[0].window) for m in members],
            headlines,
            now,
            _release_note([m[0] for m in members]),
        )
        outbox_id = store.enqueue_email(
            conn,
            {
                "group_key": group_key,
                "message_id": _message_id(group_key, settings),
                "transition": transition,
                "recipients": list(recipients),
                "subject": email.subject,
                "body_text": email.text,
                "body_html": email.html,
                "next_attempt_at": now,
            },
        )
        store.link_events_to_email(conn, [event_id for _, event_id in members], outbox_id)
    return len(groups)


def _release_note(transitions: Sequence[Transition]) -> str | None:
    """Return why a released (held-back) firing among ``transitions`` is emailed only now, or None."""
    released = [t for t in transitions if t.released]
    held_by = sorted({ticker for t in released for ticker in t.released_from})
    notes = []
    if held_by:
        notes.append(
            f"Held back while firing alerts for {', '.join(held_by)} explained it. They have ended and this"
            " alert still fires without their stories."
        )
    if any(not t.released_from for t in released):
        notes.append("Held back by a silence that has ended; this alert still fires.")
    return " ".join(notes) or None


def _inhibited(
    conn: Connection,
    version: str,
    rule: Rule,
    t: Transition,
    firing_tickers: Sequence[str],
    counts: Mapping[str, Counts],
) -> Transition:
    """Return ``t``, inhibited when it is a new firing of a non-ticker rule that ``firing_tickers`` explain.

    Explained: the rule's test on the window without the articles naming those tickers does not breach
    (the baseline stays as it is). The alert still fires and shows; only its emails are held back.
    """
    base = counts.get(t.state.value)
    if (
        t.transition != "firing"
        or t.silenced
        or rule.dimension == "ticker"
        or not rule.inhibit_by_tickers
        or not firing_tickers
        or base is None
    ):
        return t
    end = window_end(t.at)
    stories, neg, neg_expected, found = store.window_counts_without_tickers(
        conn, version, rule.dimension, t.state.value, end - rule.window, end, firing_tickers
    )
    if not found:
        return t
    remaining = neg_expected if rule.negatives == "probabilities" else neg
    without = Counts(stories, remaining, base.base_stories, base.base_neg, base.activity, base.dispersion)
    if rule_test(rule, without, pooled_prior(counts)).breach:
        return t
    held = replace(t.state, notified=False, inhibited_by=tuple(found))
    return replace(t, state=held, silenced=True, inhibited_by=tuple(found))


def _released(
    conn: Connection,
    version: str,
    rule: Rule,
    state: AlertState,
    firing_tickers: Sequence[str],
    counts: Mapping[str, Counts],
    now: datetime,
    silences: Sequence[Mapping[str, Any]],
) -> tuple[AlertState, Transition | None]:
    """Return a held-back firing alert's state after checking what holds it at ``now``, and the firing
    transition to email when nothing does any more.

    An inhibition (``inhibited_by``) holds it until none of its tickers fires and no other firing ticker
    explains it; a silence (a firing never notified) until no silence matches. Either is released only
    while the alert still breaches: one only kept firing by ``keep_firing_for`` resolves quietly.
    """
    if state.last_breach_at != now:
        return state, None
    if state.inhibited_by:
        if any(ticker in firing_tickers for ticker in state.inhibited_by):
            return state, None
        again = _inhibited(
            conn, version, rule, Transition(state, "firing", now, False, rule.window), firing_tickers, counts
        )
        if again.inhibited_by:
            return again.state, None  # another firing ticker explains it now
    if silenced(silences, rule.name, rule.dimension, state.value):
        return replace(state, inhibited_by=()), None  # a silence holds it back (still or instead)
    freed = replace(state, inhibited_by=(), notified=True)
    return freed, Transition(
        freed, "firing", now, False, rule.window, released_from=state.inhibited_by, released=True
    )


def evaluate(
    now: datetime | None = None,
    *,
    engine: Engine | None = None,
    rules: Sequence[Rule] | None = None,
    settings: Settings | None = None,
) -> AlertReport:
    """Return what evaluating every rule at ``now`` (default: the current time) found and changed.

    State changes, transition events and queued emails commit together in one transaction; a rerun at
    the same ``now`` changes nothing. Emails are only queued here; ``notify.deliver_outbox`` sends them.
    """
    from pipeline.store.db import get_engine

    now = (now or datetime.now(UTC)).astimezone(UTC)
    settings = settings or get_settings()
    rules = list(rules) if rules is not None else load_rules(settings=settings)
    engine = engine or get_engine()
    by_name = {rule.name: rule for rule in rules}
    with engine.begin() as conn:
        store.lock_alert_evaluation(conn)
        version = store.alert_model_version(conn)
        report = AlertReport(now=now, model_version=version)
        states = {row.fingerprint: _state_from_row(row) for row in store.alert_states(conn, list(by_name))}
        silences = [dict(row._mapping) for row in store.active_silences(conn, now)]
        recorded: list[tuple[Transition, int]] = []
        changed_all: dict[str, AlertState] = {}
        counts_cache: dict[CountsKey, dict[str, Counts]] = {}
        stepped: list[tuple[Transition, dict[str, Counts]]] = []
        for rule in rules:
            key = _counts_key(rule)
            if key not in counts_cache:
                counts_cache[key] = _counts(conn, version, rule, now) if version else {}
            changed, transitions = step_rule(rule, observe(rule, counts_cache[key]), states, now, silences)
            changed_all.update(changed)
            stepped += [(t, counts_cache[key]) for t in transitions]
        # Inhibition needs every rule's outcome first: a ticker rule may come after the rules it explains.
        firing_tickers = sorted(
            {
                s.value
                for s in {**states, **changed_all}.values()
                if s.dimension == "ticker" and s.status == "firing"
            }
        )
        for t, value_counts in stepped:
            if version:
                t = _inhibited(conn, version, by_name[t.state.rule], t, firing_tickers, value_counts)
                changed_all[t.state.fingerprint] = t.state  # an inhibited firing is not notified
            # The event references the state row, so that row goes first.
            store.save_alert_state(conn, _state_row(t.state))
            event_id = store.insert_alert_event(conn, _event_row(t))
            if event_id is not None:
                recorded.append((t, event_id))
        released: list[tuple[Transition, int]] = []
        # Held back: a firing that was inhibited, or silenced (never notified).
        held = [
            s
            for s in {**states, **changed_all}.values()
            if s.status == "firing" and (s.inhibited_by or not s.notified) and s.rule in by_name
        ]
        for state in held:
            if version is None:  # nothing scored yet: nothing to release on
                break
            rule = by_name[state.rule]
            counts = counts_cache[_counts_key(rule)]
            new, release = _released(conn, version, rule, state, firing_tickers, counts, now, silences)
            changed_all[new.fingerprint] = new
            if release is None or new.firing_since is None:
                continue
            event_id = store.release_alert_event(conn, new.fingerprint, new.firing_since, now)
            if event_id is not None:
                released.append((release, event_id))
        for state in changed_all.values():
            store.save_alert_state(conn, _state_row(state))
        if version:
            report.emails_queued = _queue_emails(conn, version, by_name, recorded + released, now, settings)
        report.new_firing = sum(1 for t, _ in recorded if t.transition == "firing")
        report.released = len(released)
        report.resolved = sum(1 for t, _ in recorded if t.transition == "resolved")
        current = {**states, **changed_all}
        open_states = [s for s in current.values() if s.rule in by_name and s.status != "inactive"]
        report.firing = sum(1 for s in open_states if s.status == "firing")
        fired_now = {t.state.fingerprint: t.inhibited_by for t, _ in recorded if t.transition == "firing"}
        released_now = {t.state.fingerprint: t.released_from for t, _ in released}
        resolved_now = [t.state for t, _ in recorded if t.transition == "resolved"]
        report.alerts = [
            alert_view(s, transition="firing", inhibited_by=fired_now[s.fingerprint])
            if s.fingerprint in fired_now
            else alert_view(s, transition="released", inhibited_by=released_now[s.fingerprint])
            if s.fingerprint in released_now
            else alert_view(s)
            for s in open_states
        ]
        report.alerts += [alert_view(s, "resolved", "resolved") for s in resolved_now]
        report.alerts.sort(key=lambda a: (a.status != "firing", a.rule, a.dimension, a.value))
        outbox = store.outbox_counts(conn)
    report.emails_pending = outbox.get("pending", 0) + outbox.get("sending", 0)
    report.emails_failed = outbox.get("failed", 0)
    report.emails_unconfirmed = outbox.get("unconfirmed", 0)
    return report


def run_alerts(
    now: datetime | None = None,
    *,
    engine: Engine | None = None,
    rules: Sequence[Rule] | None = None,
    settings: Settings | None = None,
) -> AlertReport:
    """Return the report of evaluating at ``now``, then delivering the outbox (`finsent alerts`)."""
    settings = settings or get_settings()
    report = evaluate(now, engine=engine, rules=rules, settings=settings)
    delivery = notify.deliver_outbox(engine=engine, settings=settings)
    report.emails_sent = delivery.sent
    report.emails_pending = delivery.pending
    report.emails_failed = delivery.failed
    report.emails_unconfirmed = delivery.unconfirmed
    return report
