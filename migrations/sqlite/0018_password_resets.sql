-- Dual control of privilege (双人复核) for passwords: a password an admin chooses for a holder of
-- a privileged role (or of a role that grants roles) waits for a second person's approval.
-- The hash is kept only while the request is pending.
CREATE TABLE password_resets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id INTEGER NOT NULL REFERENCES users(id),
    password_hash TEXT,
    requested_by INTEGER NOT NULL REFERENCES users(id),
    requested_at TEXT NOT NULL,
    lapses_at TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'refused', 'expired')),
    decided_by INTEGER REFERENCES users(id),
    decided_at TEXT,
    reason TEXT
);
-- At most one open request per user.
CREATE UNIQUE INDEX password_resets_pending ON password_resets(user_id) WHERE status = 'pending';
