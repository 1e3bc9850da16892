-- A replacement second factor waits here until a code from the new phone confirms it; the
-- confirmed factor in `totp` stays in force meanwhile (src/vault/factor.rs). Sealed like it.
CREATE TABLE totp_pending (
    user_id BIGINT PRIMARY KEY REFERENCES users(id),
    key_id TEXT NOT NULL,
    master_key_id TEXT NOT NULL REFERENCES vault_master_keys(key_id),
    wrapped_key BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
