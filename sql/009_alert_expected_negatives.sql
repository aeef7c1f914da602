-- Alerts: a count rule (test: poisson_count) is explained by the negative stories its window expected
-- at the value's usual rate; the alert state keeps that figure of its latest test for emails and pages.
ALTER TABLE alert_state ADD COLUMN expected_negatives double precision;
