-- An e-mail's calendar entry carries its method (REQUEST or CANCEL) in its own column, set when
-- the message is queued: the sender no longer guesses it from the entry's text (a change titled
-- "METHOD:CANCEL" made its REQUEST look like a cancellation). Rows queued before this migration
-- are read once, here, the way the sender used to read them.
ALTER TABLE outbox ADD COLUMN ics_method TEXT CHECK (ics_method IN ('REQUEST', 'CANCEL'));
UPDATE outbox SET ics_method = CASE WHEN ics LIKE '%METHOD:CANCEL%' THEN 'CANCEL' ELSE 'REQUEST' END
    WHERE ics IS NOT NULL;
ALTER TABLE outbox ADD CONSTRAINT outbox_ics_has_method CHECK ((ics IS NULL) = (ics_method IS NULL));
