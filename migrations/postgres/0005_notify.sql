-- Email notices: the transactional outbox and the runs of scheduled jobs.
-- An outbox row is written in the same transaction as the change that causes it.

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    change_id BIGINT REFERENCES change_requests(id),
    -- JSON array of addresses
    recipients TEXT NOT NULL,
    subject TEXT NOT NULL,
    body_text TEXT NOT NULL,
    body_html TEXT NOT NULL,
    ics TEXT,
    message_id TEXT NOT NULL UNIQUE,
    -- pending | sending | sent | failed | dead
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL,
    lease_until TIMESTAMPTZ,
    last_error TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    sent_at TIMESTAMPTZ
);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
CREATE INDEX outbox_change ON outbox(change_id, id);

-- One run per job and slot across all instances: the unique key decides who runs it.
CREATE TABLE job_runs (
    job TEXT NOT NULL,
    slot TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job, slot)
);
