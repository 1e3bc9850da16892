-- Systems register, change requests, their systems and life-cycle events, calendar feeds.

CREATE TABLE systems (
    key TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_department TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE change_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL,
    category TEXT NOT NULL,
    action TEXT,
    -- JSON array of system keys (also in change_systems, for filters and conflicts)
    systems TEXT NOT NULL,
    description TEXT NOT NULL,
    impact TEXT,
    risk TEXT NOT NULL,
    rollback_plan TEXT NOT NULL,
    planned_start TEXT NOT NULL,
    planned_end TEXT NOT NULL,
    requester_id INTEGER NOT NULL REFERENCES users(id),
    assignee_id INTEGER NOT NULL REFERENCES users(id),
    emergency BOOLEAN NOT NULL,
    justification TEXT,
    status TEXT NOT NULL,
    -- the server's clock when the notice was recorded, and that day in the bank's time zone
    notified_at TEXT NOT NULL,
    notified_on TEXT NOT NULL,
    earliest_start TEXT,
    approved_by INTEGER REFERENCES users(id),
    approved_at TEXT,
    started_at TEXT,
    completed_at TEXT,
    outcome TEXT,
    completion_notes TEXT,
    review_notes TEXT,
    reviewed_by INTEGER REFERENCES users(id),
    reviewed_at TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX change_requests_start ON change_requests(planned_start);
CREATE INDEX change_requests_status_end ON change_requests(status, planned_end);

CREATE TABLE change_systems (
    change_id INTEGER NOT NULL REFERENCES change_requests(id),
    system_key TEXT NOT NULL REFERENCES systems(key),
    PRIMARY KEY (change_id, system_key)
);
CREATE INDEX change_systems_key ON change_systems(system_key, change_id);

CREATE TABLE change_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    change_id INTEGER NOT NULL REFERENCES change_requests(id),
    from_status TEXT,
    to_status TEXT NOT NULL,
    actor_id INTEGER REFERENCES users(id),
    at TEXT NOT NULL,
    comment TEXT
);
CREATE INDEX change_events_change ON change_events(change_id, id);

-- Personal iCalendar feed tokens, stored as SHA-256 hashes.
CREATE TABLE calendar_feeds (
    user_id INTEGER PRIMARY KEY REFERENCES users(id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);
