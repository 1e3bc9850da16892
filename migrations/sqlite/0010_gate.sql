-- The admission gate (src/gate): machine identities, their API tokens, and the events tools
-- report about changes they saw or made.

-- `person` signs in with a password; `service` (a pipeline, a deployment tool, a database
-- executor) only with API tokens, never at the console.
ALTER TABLE users ADD COLUMN kind TEXT NOT NULL DEFAULT 'person';
ALTER TABLE users ADD COLUMN description TEXT NOT NULL DEFAULT '';

-- A service account's API tokens: only the SHA-256 of the token (256 random bits) is kept.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    created_by INTEGER REFERENCES users(id),
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    last_used_at TEXT,
    revoked_at TEXT,
    UNIQUE (user_id, name)
);

-- What a tool saw happen on a system: matched to the change open at that time, or, with
-- none, an unauthorized change (违规变更).
CREATE TABLE gate_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_key TEXT NOT NULL REFERENCES systems(key),
    kind TEXT NOT NULL,
    summary TEXT NOT NULL,
    source TEXT NOT NULL,
    occurred_at TEXT NOT NULL,
    change_id INTEGER REFERENCES change_requests(id),
    reported_by INTEGER NOT NULL REFERENCES users(id),
    created_at TEXT NOT NULL
);
CREATE INDEX gate_events_occurred ON gate_events(occurred_at);
