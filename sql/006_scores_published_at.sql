-- Explorer: each score carries its article's publication time, so a search by topic reads one model
-- version's scores of each (topic, sentiment) newest first and stops after the rows it shows, instead of
-- reading every article of the date range (or every score of the topic) and sorting. Articles keep the
-- time they were stored with (nothing updates articles.published_at), so the copy cannot go stale.

-- The index this replaces goes first, so that the backfill does not maintain it row by row.
DROP INDEX scores_version_topic_sentiment_idx;

ALTER TABLE scores ADD COLUMN published_at timestamptz;
UPDATE scores s SET published_at = a.published_at FROM articles a WHERE a.id = s.article_id;
ALTER TABLE scores ALTER COLUMN published_at SET NOT NULL;

CREATE INDEX scores_version_topic_sentiment_published_idx
    ON scores (model_version, topic, sentiment, published_at, article_id) INCLUDE (score);
-- Statistics for the new column now; autovacuum clears the backfill's dead row versions later.
ANALYZE scores;
