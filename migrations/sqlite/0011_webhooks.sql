-- Outbound webhooks (src/webhooks.rs): subscriptions receive the events of the e-mail notices,
-- through the same outbox, sender, retries and dead letters.

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    -- JSON array of the events of policies/notifications.toml
    events TEXT NOT NULL,
    -- json | wecom | dingtalk
    format TEXT NOT NULL,
    active BOOLEAN NOT NULL DEFAULT 1,
    -- The signing secret, sealed by the vault (envelope encryption), when there is one.
    secret_version INTEGER NOT NULL DEFAULT 0,
    key_id TEXT,
    master_key_id TEXT REFERENCES vault_master_keys(key_id),
    wrapped_key BLOB,
    nonce BLOB,
    ciphertext BLOB,
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT
);

-- `email` (recipients, subject, bodies) or `webhook` (body_text holds the event's JSON).
ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'email';
ALTER TABLE outbox ADD COLUMN webhook_id INTEGER REFERENCES webhooks(id);
