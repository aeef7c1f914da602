-- Ingestion: the feeds we poll, the deduplicated articles they yield, and a log of every poll.

CREATE TABLE sources (
    id              serial PRIMARY KEY,
    name            text UNIQUE NOT NULL,
    url             text NOT NULL,
    tags            text[] NOT NULL DEFAULT '{}',
    fulltext        bool NOT NULL DEFAULT false,
    -- Validators of the last successful poll, sent back as If-None-Match / If-Modified-Since.
    etag            text,
    last_modified   text,
    last_fetched_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE articles (
    id            bigserial PRIMARY KEY,
    source_id     int NOT NULL REFERENCES sources,
    guid          text,
    url           text,
    canonical_url text,
    title         text NOT NULL,
    summary       text NOT NULL DEFAULT '',
    body          text,
    published_at  timestamptz NOT NULL,
    date_missing  bool NOT NULL DEFAULT false,
    fetched_at    timestamptz NOT NULL,
    language      text,
    content_hash  text NOT NULL,
    title_hash    text NOT NULL,
    -- Id of the first article of its near-duplicate cluster (its own id when it starts a story).
    story_id      bigint NOT NULL,
    tickers       text[] NOT NULL DEFAULT '{}',
    CONSTRAINT articles_canonical_url_key UNIQUE (canonical_url),
    CONSTRAINT articles_source_guid_key UNIQUE (source_id, guid)
);

CREATE INDEX articles_published_at_idx ON articles (published_at);
CREATE INDEX articles_story_id_idx ON articles (story_id);
CREATE INDEX articles_tickers_idx ON articles USING gin (tickers);
-- Exact-duplicate checks by title, and the recent window the near-duplicate index is rebuilt from.
CREATE INDEX articles_title_hash_idx ON articles (title_hash);
CREATE INDEX articles_fetched_at_idx ON articles (fetched_at);
CREATE INDEX articles_source_published_idx ON articles (source_id, published_at);

CREATE TABLE fetch_log (
    id          bigserial PRIMARY KEY,
    run_id      uuid NOT NULL,
    source_id   int REFERENCES sources,
    started_at  timestamptz,
    status      text CHECK (status IN ('ok', 'not_modified', 'error')),
    http_status int,
    bytes       bigint,
    items_seen  int,
    items_new   int,
    duplicates  int,
    invalid     int,
    filtered    int,
    duration_ms int,
    error       text
);

CREATE INDEX fetch_log_run_id_idx ON fetch_log (run_id);
CREATE INDEX fetch_log_source_started_idx ON fetch_log (source_id, started_at);
