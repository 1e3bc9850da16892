-- Fingerprints of the server keys this database was created with: a wrong or regenerated key
-- refuses to start instead of sealing audit entries that can never verify.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created_at TEXT NOT NULL
);

-- A revision counter for stored calendar years (independent of instance clocks).
ALTER TABLE holiday_years ADD COLUMN revision INTEGER NOT NULL DEFAULT 0;

-- The audit head only moves forward and is never deleted.
CREATE TRIGGER audit_head_forward_only BEFORE UPDATE ON audit_head
WHEN NEW.seq <= OLD.seq
BEGIN SELECT RAISE(ABORT, 'audit_head only moves forward'); END;
CREATE TRIGGER audit_head_no_delete BEFORE DELETE ON audit_head
BEGIN SELECT RAISE(ABORT, 'audit_head cannot be deleted'); END;
