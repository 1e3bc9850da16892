-- Rotation after use by the machine (issue 15): a password credential may name the account it
-- is on a database target; changeguard then sets a new random password on the target itself.
ALTER TABLE credentials ADD COLUMN target_database_id BIGINT REFERENCES database_targets(id);
ALTER TABLE credentials ADD COLUMN target_account TEXT;

-- The next version of a credential while it is being set on the target: written (sealed)
-- before the target is changed, promoted to the credential when the target took it. A pending
-- version left by a crash is set again and promoted by the minute job.
CREATE TABLE credential_pending (
    credential_id BIGINT PRIMARY KEY REFERENCES credentials(id),
    version BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    master_key_id TEXT NOT NULL,
    wrapped_key BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    -- Rotated because the secret was revealed for a change (clears "rotate after use").
    after_use BOOLEAN NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
