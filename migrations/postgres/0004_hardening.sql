-- Fingerprints of the server keys this database was created with: a wrong or regenerated key
-- refuses to start instead of sealing audit entries that can never verify.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);

-- A revision counter for stored calendar years (independent of instance clocks).
ALTER TABLE holiday_years ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;

-- The audit head only moves forward and is never deleted.
CREATE FUNCTION audit_head_forward_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'DELETE' OR NEW.seq <= OLD.seq THEN
        RAISE EXCEPTION 'audit_head only moves forward';
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER audit_head_forward_only BEFORE UPDATE OR DELETE ON audit_head
    FOR EACH ROW EXECUTE FUNCTION audit_head_forward_only();
