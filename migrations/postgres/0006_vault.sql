-- Credential vault (issue 6): envelope-encrypted credentials, standing grants, TOTP second
-- factor, hashed recovery codes, the confidential assets register and its disclosures.
-- Nothing here is readable without the master key, which never lives in the database: only
-- its identifier and a check value (an HMAC of a fixed label) are stored.

CREATE TABLE vault_master_keys (
    key_id TEXT PRIMARY KEY,
    check_value TEXT NOT NULL,
    -- 'current' (exactly one), 'next' (a rotation in progress) or 'retired'
    state TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    retired_at TIMESTAMPTZ
);

CREATE TABLE credentials (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    system_key TEXT NOT NULL REFERENCES systems(key),
    account TEXT NOT NULL,
    kind TEXT NOT NULL,
    department TEXT NOT NULL,
    rotation_days BIGINT,
    -- the secret's version: 1 at creation, +1 on every rotation
    version BIGINT NOT NULL,
    -- id of the data key (random per version), bound into the ciphertext's associated data
    key_id TEXT NOT NULL,
    -- the master key that wraps the data key
    master_key_id TEXT NOT NULL REFERENCES vault_master_keys(key_id),
    wrapped_key BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    rotate_after_use BOOLEAN NOT NULL DEFAULT FALSE,
    rotate_reason_change_id BIGINT REFERENCES change_requests(id),
    secret_changed_at TIMESTAMPTZ NOT NULL,
    last_revealed_at TIMESTAMPTZ,
    last_revealed_by BIGINT REFERENCES users(id),
    created_by BIGINT REFERENCES users(id),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX credentials_system ON credentials(system_key);

CREATE TABLE credential_grants (
    id BIGSERIAL PRIMARY KEY,
    credential_id BIGINT NOT NULL REFERENCES credentials(id),
    grantee_id BIGINT NOT NULL REFERENCES users(id),
    reason TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    granted_by BIGINT NOT NULL REFERENCES users(id),
    granted_at TIMESTAMPTZ NOT NULL,
    approved_by BIGINT REFERENCES users(id),
    approved_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ,
    CHECK (approved_by IS NULL OR approved_by <> grantee_id),
    CHECK (approved_by IS NULL OR approved_by <> granted_by)
);
CREATE INDEX credential_grants_lookup ON credential_grants(credential_id, grantee_id);

CREATE TABLE totp (
    user_id BIGINT PRIMARY KEY REFERENCES users(id),
    key_id TEXT NOT NULL,
    master_key_id TEXT NOT NULL REFERENCES vault_master_keys(key_id),
    wrapped_key BYTEA NOT NULL,
    nonce BYTEA NOT NULL,
    ciphertext BYTEA NOT NULL,
    confirmed BOOLEAN NOT NULL DEFAULT FALSE,
    -- the last accepted time step: a code is accepted once
    last_step BIGINT NOT NULL DEFAULT 0,
    failures BIGINT NOT NULL DEFAULT 0,
    blocked_until TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL,
    confirmed_at TIMESTAMPTZ
);

CREATE TABLE totp_recovery_codes (
    id BIGSERIAL PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    code_hash TEXT NOT NULL,
    used_at TIMESTAMPTZ
);
CREATE INDEX totp_recovery_codes_user ON totp_recovery_codes(user_id);

CREATE TABLE assets (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    -- 'document' or 'repository'
    kind TEXT NOT NULL,
    location TEXT NOT NULL,
    custodian_id BIGINT NOT NULL REFERENCES users(id),
    department TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE disclosures (
    id BIGSERIAL PRIMARY KEY,
    asset_id BIGINT NOT NULL REFERENCES assets(id),
    recipient TEXT NOT NULL,
    purpose TEXT NOT NULL,
    requested_by BIGINT NOT NULL REFERENCES users(id),
    requested_at TIMESTAMPTZ NOT NULL,
    manager_approved_by BIGINT REFERENCES users(id),
    manager_approved_at TIMESTAMPTZ,
    compliance_approved_by BIGINT REFERENCES users(id),
    compliance_approved_at TIMESTAMPTZ,
    refused_by BIGINT REFERENCES users(id),
    refused_at TIMESTAMPTZ,
    refusal_reason TEXT,
    -- 'requested', 'approved', 'refused'
    status TEXT NOT NULL
);
