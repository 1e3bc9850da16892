-- Recovery codes were stored as unsalted SHA-256 of 50-bit codes; they are now 120-bit codes
-- stored as a MAC keyed with the server's audit key. The old ones cannot be checked any more:
-- their holders make new ones (POST /api/v1/me/totp/recovery-codes).
DELETE FROM totp_recovery_codes;

-- A session may also be limited to enrolling a second factor. SQLite cannot change a column's
-- CHECK: the column is made anew, and the sessions it limited (temporary passwords) end, so
-- none of them wakes up unlimited.
DELETE FROM sessions WHERE scope IS NOT NULL;
ALTER TABLE sessions DROP COLUMN scope;
ALTER TABLE sessions ADD COLUMN scope TEXT CHECK (scope IN ('password_change', 'enrolment'));
