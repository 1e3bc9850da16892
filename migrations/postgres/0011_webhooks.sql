-- Outbound webhooks (src/webhooks.rs): subscriptions receive the events of the e-mail notices,
-- through the same outbox, sender, retries and dead letters.

CREATE TABLE webhooks (
    id BIGSERIAL PRIMARY KEY,
    url TEXT NOT NULL,
    -- JSON array of the events of policies/notifications.toml
    events TEXT NOT NULL,
    -- json | wecom | dingtalk
    format TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    -- The signing secret, sealed by the vault (envelope encryption), when there is one.
    secret_version BIGINT NOT NULL DEFAULT 0,
    key_id TEXT,
    master_key_id TEXT REFERENCES vault_master_keys(key_id),
    wrapped_key BYTEA,
    nonce BYTEA,
    ciphertext BYTEA,
    created_by BIGINT REFERENCES users(id),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    deleted_at TIMESTAMPTZ
);

-- `email` (recipients, subject, bodies) or `webhook` (body_text holds the event's JSON).
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
ALTER TABLE outbox ADD COLUMN webhook_id BIGINT REFERENCES webhooks(id);
