-- Recovery codes were stored as unsalted SHA-256 of 50-bit codes; they are now 120-bit codes
-- stored as a MAC keyed with the server's audit key. The old ones cannot be checked any more:
-- their holders make new ones (POST /api/v1/me/totp/recovery-codes).
DELETE FROM totp_recovery_codes;

-- A session may also be limited to enrolling a second factor.
ALTER TABLE sessions DROP CONSTRAINT sessions_scope_check;
ALTER TABLE sessions ADD CONSTRAINT sessions_scope_check
    CHECK (scope IN ('password_change', 'enrolment'));
