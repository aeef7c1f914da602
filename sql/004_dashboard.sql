-- Dashboard: indexes for its read-only queries, and the read-only role it connects as.

-- Every Overview/Alerts/Model chart reads one dimension of one model version over a range of hours, across
-- all values; with the counts in the index those reads are index-only scans (the primary key leads with
-- value, so it only serves one value at a time).
CREATE INDEX rollups_hourly_version_dimension_bucket_idx
    ON rollups_hourly (model_version, dimension, bucket)
    INCLUDE (value, articles, stories, negative, neutral, positive, neg_stories, score_sum);

-- Explorer's text search: words of the headline and summary (the expression must match the query's).
CREATE INDEX articles_text_search_idx
    ON articles USING gin (to_tsvector('english'::regconfig, title || ' ' || summary));

-- The Alerts timeline pairs each firing with the next transition of the same fingerprint.
CREATE INDEX alert_events_fingerprint_at_idx ON alert_events (fingerprint, at, id);

-- The role the dashboard reads as: SELECT only. NOLOGIN: a login role is granted membership (or the
-- dashboard's connection switches to it with SET ROLE). Roles are cluster-wide, so another database on the
-- same server may have created it already, possibly at this very moment; a migrating user without
-- CREATEROLE skips the role and leaves a notice rather than failing the whole migration.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'finsent_readonly') THEN
        BEGIN
            CREATE ROLE finsent_readonly NOLOGIN;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN
                NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'finsent_readonly not created (no CREATEROLE); the dashboard runs read-only '
                             'transactions as the connecting user';
                RETURN;
        END;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO finsent_readonly', current_database());
    GRANT USAGE ON SCHEMA public TO finsent_readonly;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO finsent_readonly;
    -- Tables and views that later migrations create are readable too.
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO finsent_readonly;
END
$$;
