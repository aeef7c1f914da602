-- Alerts: a firing alert that a firing ticker alert explains is recorded but not emailed (inhibited, as
-- Alertmanager's inhibit rules do); inhibited_by names the tickers whose stories explained it.
ALTER TABLE alert_events ADD COLUMN inhibited_by text[] NOT NULL DEFAULT '{}';
