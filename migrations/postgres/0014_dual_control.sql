-- Dual control of privilege (双人复核): a grant of a privileged role is a request a second person
-- approves; a password an admin sets is temporary; sessions carry what they may do.

CREATE TABLE role_requests (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    role TEXT NOT NULL,
    -- The grant's own end, if it has one.
    expires_at TIMESTAMPTZ,
    requested_by BIGINT NOT NULL REFERENCES users(id),
    requested_at TIMESTAMPTZ NOT NULL,
    -- Undecided by then: the request lapses.
    lapses_at TIMESTAMPTZ NOT NULL,
    -- pending | active | refused | expired
    status TEXT NOT NULL CHECK (status IN ('pending', 'active', 'refused', 'expired')),
    decided_by BIGINT REFERENCES users(id),
    decided_at TIMESTAMPTZ,
    reason TEXT
);
-- At most one open request per user and role.
CREATE UNIQUE INDEX role_requests_pending ON role_requests(user_id, role) WHERE status = 'pending';
CREATE INDEX role_requests_status ON role_requests(status, requested_at);

-- Set by an admin (creation or reset): the password signs in only to be changed, until then.
ALTER TABLE users ADD COLUMN password_temporary_until TIMESTAMPTZ;

-- What a session may do: NULL everything its roles permit; `password_change` only changing a
-- temporary password. Where it signed in from, for the list of one's sessions.
ALTER TABLE sessions ADD COLUMN scope TEXT CHECK (scope IN ('password_change'));
ALTER TABLE sessions ADD COLUMN address TEXT;
