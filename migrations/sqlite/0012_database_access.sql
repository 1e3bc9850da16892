-- Just-in-time database access (src/dbaccess): database targets of the systems register, and
-- the temporary accounts created on them for a change's window.

CREATE TABLE database_targets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    system_key TEXT NOT NULL REFERENCES systems(key),
    name TEXT NOT NULL,
    -- postgres | mysql
    engine TEXT NOT NULL,
    host TEXT NOT NULL,
    port INTEGER NOT NULL,
    database_name TEXT NOT NULL,
    -- A vault credential allowed to create and drop accounts; used by the server only.
    admin_credential_id INTEGER NOT NULL REFERENCES credentials(id),
    -- JSON: per change action (insert, update, delete, schema, read) the roles (PostgreSQL)
    -- or privileges (MariaDB) a temporary account receives.
    grants TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    deleted_at TEXT,
    UNIQUE (system_key, name)
);

CREATE TABLE database_accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target_id INTEGER NOT NULL REFERENCES database_targets(id),
    change_id INTEGER NOT NULL REFERENCES change_requests(id),
    user_id INTEGER NOT NULL REFERENCES users(id),
    username TEXT NOT NULL,
    -- live | revoked
    status TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked_at TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT
);
CREATE INDEX database_accounts_live ON database_accounts(status, expires_at);
