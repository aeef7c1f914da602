-- Scoring: model versions, one score per (article, model version), and hourly rollups per dimension.

CREATE TABLE model_versions (
    version    text PRIMARY KEY,
    name       text,
    path       text,
    metrics    jsonb,
    created_at timestamptz DEFAULT now(),
    active     bool NOT NULL DEFAULT false
);
-- At most one active version: the one the dashboard and the alerts read.
CREATE UNIQUE INDEX model_versions_one_active ON model_versions ((true)) WHERE active;

CREATE TABLE scores (
    article_id      bigint REFERENCES articles ON DELETE CASCADE,
    model_version   text REFERENCES model_versions,
    topic           text NOT NULL,
    topic_probs     jsonb NOT NULL,
    sentiment       text NOT NULL CHECK (sentiment IN ('negative', 'neutral', 'positive')),
    sentiment_probs jsonb NOT NULL,
    score           real NOT NULL,
    scored_at       timestamptz DEFAULT now(),
    PRIMARY KEY (article_id, model_version)
);
-- The primary key serves "is this article scored by version v"; this one serves "all scores of version v".
CREATE INDEX scores_model_version_idx ON scores (model_version, article_id);

CREATE TABLE rollups_hourly (
    model_version text,
    dimension     text CHECK (dimension IN ('all', 'topic', 'ticker', 'source')),
    value         text,
    bucket        timestamptz,
    articles      int NOT NULL DEFAULT 0,
    stories       int NOT NULL DEFAULT 0,
    negative      int NOT NULL DEFAULT 0,
    neutral       int NOT NULL DEFAULT 0,
    positive      int NOT NULL DEFAULT 0,
    neg_stories   int NOT NULL DEFAULT 0,
    score_sum     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (model_version, dimension, value, bucket)
);
CREATE INDEX rollups_hourly_dimension_bucket_idx ON rollups_hourly (dimension, bucket);

-- One row per scored article and each dimension value it counts toward: the single definition of
-- "which buckets an article belongs to" that both the incremental update and the rebuild aggregate.
CREATE VIEW score_facts AS
SELECT s.model_version,
       s.article_id,
       a.story_id,
       a.published_at,
       date_trunc('hour', a.published_at, 'UTC') AS bucket,
       s.sentiment,
       s.score,
       d.dimension,
       d.value
FROM scores s
JOIN articles a ON a.id = s.article_id
JOIN sources src ON src.id = a.source_id
CROSS JOIN LATERAL (
    SELECT 'all'::text, '*'::text
    UNION ALL SELECT 'topic', s.topic
    UNION ALL SELECT 'source', src.name
    -- DISTINCT: a ticker listed twice in one article still counts that article once.
    UNION ALL SELECT DISTINCT 'ticker', t FROM unnest(a.tickers) AS t
) AS d (dimension, value);
