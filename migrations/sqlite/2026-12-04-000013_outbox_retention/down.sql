DROP INDEX outbox_sent_unscrubbed;
