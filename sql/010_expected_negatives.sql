-- Alerts: expected negatives. A model that under-calls negative news (reads a bad sentence as neutral
-- with p(negative) = 0.4) leaves a storm under a count of stories it *calls* negative; the sum of each
-- story's calibrated p(negative) counts it in expectation. Rollups keep that sum beside the count, and
-- alert figures that carry it (a count rule with `negatives: probabilities`) are no longer whole numbers.

-- score_facts gains each score's p(negative), appended (a view may only grow at its end).
CREATE OR REPLACE VIEW score_facts AS
SELECT s.model_version,
       s.article_id,
       a.story_id,
       a.published_at,
       date_trunc('hour', a.published_at, 'UTC') AS bucket,
       s.sentiment,
       s.score,
       d.dimension,
       d.value,
       COALESCE((s.sentiment_probs ->> 'negative')::double precision,
                (s.sentiment = 'negative')::int::double precision) AS p_negative
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

-- Per bucket: the sum over its stories of the mean p(negative) of each story's copies in the bucket, and
-- the sum of its square: a sum of probabilities varies less than a count of as many whole stories, and
-- the count test scales its Poisson tail by that ratio (stats.poisson_count_p).
ALTER TABLE rollups_hourly ADD COLUMN neg_expected double precision NOT NULL DEFAULT 0;
ALTER TABLE rollups_hourly ADD COLUMN neg_expected_sq double precision NOT NULL DEFAULT 0;

UPDATE rollups_hourly r SET neg_expected = x.neg_expected, neg_expected_sq = x.neg_expected_sq
FROM (
    SELECT model_version, dimension, value, bucket, sum(p) AS neg_expected, sum(p * p) AS neg_expected_sq
    FROM (
        SELECT model_version, dimension, value, bucket, story_id, avg(p_negative) AS p
        FROM score_facts GROUP BY model_version, dimension, value, bucket, story_id
    ) AS per_story
    GROUP BY model_version, dimension, value, bucket
) AS x
WHERE r.model_version = x.model_version AND r.dimension = x.dimension AND r.value = x.value
  AND r.bucket = x.bucket;

ALTER TABLE alert_state ALTER COLUMN neg_stories TYPE double precision;
ALTER TABLE alert_events ALTER COLUMN neg_stories TYPE double precision;
