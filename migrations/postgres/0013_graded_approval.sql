-- Graded approval (分级审批): each change's approval round and the stages it carries, the
-- decisions of each stage, delegations, and the reminders and escalations sent once per stage.

-- Rescheduling or amending starts a new round: the decisions of earlier rounds stay as history
-- and count no more.
ALTER TABLE change_requests ADD COLUMN approval_round BIGINT NOT NULL DEFAULT 1;
-- JSON: the stages of this round, resolved from policies/change-policy.toml when it began.
ALTER TABLE change_requests ADD COLUMN approval_plan TEXT;
-- When the current stage began waiting (reminders count working hours from here).
ALTER TABLE change_requests ADD COLUMN stage_since TIMESTAMPTZ;
-- The standard-change template it was filed from (approved at filing by that template).
ALTER TABLE change_requests ADD COLUMN standard_change TEXT;

CREATE TABLE change_approvals (
    id BIGSERIAL PRIMARY KEY,
    change_id BIGINT NOT NULL REFERENCES change_requests(id),
    round BIGINT NOT NULL,
    stage BIGINT NOT NULL,
    approve BOOLEAN NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users(id),
    -- A delegate decided in this person's place.
    on_behalf_of BIGINT REFERENCES users(id),
    comment TEXT,
    decided_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX change_approvals_change ON change_approvals(change_id, round);

CREATE TABLE approval_nudges (
    change_id BIGINT NOT NULL REFERENCES change_requests(id),
    round BIGINT NOT NULL,
    stage BIGINT NOT NULL,
    -- reminder | escalation
    kind TEXT NOT NULL,
    sent_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (change_id, round, stage, kind)
);

CREATE TABLE delegations (
    id BIGSERIAL PRIMARY KEY,
    delegator_id BIGINT NOT NULL REFERENCES users(id),
    delegate_id BIGINT NOT NULL REFERENCES users(id),
    starts_at TIMESTAMPTZ NOT NULL,
    ends_at TIMESTAMPTZ NOT NULL,
    reason TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX delegations_delegate ON delegations(delegate_id, ends_at);
CREATE INDEX delegations_delegator ON delegations(delegator_id, ends_at);
