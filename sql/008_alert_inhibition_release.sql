-- Alerts: a held-back firing (inhibited, or silenced) that still breaches once no firing ticker alert
-- explains it and no silence matches is emailed then (Alertmanager notifies when an inhibition or a
-- silence ends). alert_state.inhibited_by: the tickers of a firing alert's current inhibition;
-- alert_events.released_at: when its held-back firing email was queued.
ALTER TABLE alert_state ADD COLUMN inhibited_by text[] NOT NULL DEFAULT '{}';
ALTER TABLE alert_events ADD COLUMN released_at timestamptz;

-- Alerts inhibited before this migration carry their inhibition over from their firing event.
UPDATE alert_state s SET inhibited_by = e.inhibited_by
FROM alert_events e
WHERE s.status = 'firing' AND NOT s.notified
  AND e.fingerprint = s.fingerprint AND e.transition = 'firing' AND e.at = s.firing_since
  AND cardinality(e.inhibited_by) > 0;
