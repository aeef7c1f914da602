-- Alerts: a count rule (test: poisson_count) is explained by the negative stories its window expected
-- at the value's usual rate; the alert state keeps that figure of its latest test, and each event the
-- figure it transitioned with, for emails, the CLI and the dashboard.
ALTER TABLE alert_state ADD COLUMN expected_negatives double precision;
ALTER TABLE alert_events ADD COLUMN expected_negatives double precision;
