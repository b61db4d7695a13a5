-- Sent mail still holding its rendered body, for the retention job that empties it.
CREATE INDEX outbox_sent_unscrubbed ON outbox (sent_at) WHERE sent_at IS NOT NULL AND payload <> '{}';
