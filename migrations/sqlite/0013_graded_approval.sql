-- Graded approval (分级审批): each change's approval round and the stages it carries, the
-- decisions of each stage, delegations, and the reminders and escalations sent once per stage.

-- Rescheduling or amending starts a new round: the decisions of earlier rounds stay as history
-- and count no more.
ALTER TABLE change_requests ADD COLUMN approval_round INTEGER NOT NULL DEFAULT 1;
-- JSON: the stages of this round, resolved from policies/change-policy.toml when it began.
ALTER TABLE change_requests ADD COLUMN approval_plan TEXT;
-- When the current stage began waiting (reminders count working hours from here).
ALTER TABLE change_requests ADD COLUMN stage_since TEXT;
-- The standard-change template it was filed from (approved at filing by that template).
ALTER TABLE change_requests ADD COLUMN standard_change TEXT;

CREATE TABLE change_approvals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    change_id INTEGER NOT NULL REFERENCES change_requests(id),
    round INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    approve BOOLEAN NOT NULL,
    user_id INTEGER NOT NULL REFERENCES users(id),
    -- A delegate decided in this person's place.
    on_behalf_of INTEGER REFERENCES users(id),
    comment TEXT,
    decided_at TEXT NOT NULL
);
CREATE INDEX change_approvals_change ON change_approvals(change_id, round);

CREATE TABLE approval_nudges (
    change_id INTEGER NOT NULL REFERENCES change_requests(id),
    round INTEGER NOT NULL,
    stage INTEGER NOT NULL,
    -- reminder | escalation
    kind TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (change_id, round, stage, kind)
);

CREATE TABLE delegations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    delegator_id INTEGER NOT NULL REFERENCES users(id),
    delegate_id INTEGER NOT NULL REFERENCES users(id),
    starts_at TEXT NOT NULL,
    ends_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
CREATE INDEX delegations_delegate ON delegations(delegate_id, ends_at);
CREATE INDEX delegations_delegator ON delegations(delegator_id, ends_at);
