-- Explorer: scores of one model version by topic and sentiment, so a search for a rare combination
-- ("Dividend", "positive") starts from the few matching scores instead of reading every score.
CREATE INDEX scores_version_topic_sentiment_idx
    ON scores (model_version, topic, sentiment, article_id) INCLUDE (score);
