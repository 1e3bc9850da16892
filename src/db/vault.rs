//! The credential vault's SQL: master key check values, credentials, standing grants, TOTP,
//! recovery codes.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, Tx};
use crate::vault::crypto::Sealed;
use crate::{on_pool, on_tx};

// ---------------------------------------------------------------- master keys

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MasterRow {
    pub key_id: String,
    pub check_value: String,
    pub state: String,
}

pub async fn master_keys(db: &Db) -> Result<Vec<MasterRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, MasterRow>(
        "SELECT key_id, check_value, state FROM vault_master_keys ORDER BY created_at"
    )
    .fetch_all(p)
    .await)?)
}

/// The master keys, read inside a write transaction that seals a secret: on PostgreSQL the rows
/// are share-locked, so a rotation cannot promote a new key until this transaction committed
/// (and its final sweep then sees the row sealed here).
pub async fn master_keys_tx(tx: &mut Tx) -> Result<Vec<MasterRow>> {
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT key_id, check_value, state FROM vault_master_keys ORDER BY key_id FOR SHARE"
        }
        Backend::Sqlite => {
            "SELECT key_id, check_value, state FROM vault_master_keys ORDER BY key_id"
        }
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, MasterRow>(sql)
        .fetch_all(c)
        .await)?)
}

async fn master_keys_tx_update(tx: &mut Tx) -> Result<()> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, |c| sqlx::query(
            "SELECT key_id FROM vault_master_keys ORDER BY key_id FOR UPDATE"
        )
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Records a master key (`current` on first start, `next` when a rotation begins).
pub async fn insert_master(
    db: &Db,
    key_id: &str,
    check_value: &str,
    state: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    on_pool!(db, |p| sqlx::query(
        "INSERT INTO vault_master_keys (key_id, check_value, state, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO NOTHING"
    )
    .bind(key_id)
    .bind(check_value)
    .bind(state)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Ends a rotation: `old` retired, `new` current, in the caller's transaction.
pub async fn promote_master(tx: &mut Tx, old: &str, new: &str, now: DateTime<Utc>) -> Result<()> {
    // Lock the rows in the order sealers share-lock them (by key id): no deadlock.
    master_keys_tx_update(tx).await?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE vault_master_keys SET state = 'retired', retired_at = $2 WHERE key_id = $1"
    )
    .bind(old)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE vault_master_keys SET state = 'current' WHERE key_id = $1"
    )
    .bind(new)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// How many sealed rows each master key wraps (credentials and TOTP secrets).
pub async fn wrapped_counts(db: &Db) -> Result<Vec<(String, i64)>> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT master_key_id, COUNT(*) FROM (SELECT master_key_id FROM credentials \
         UNION ALL SELECT master_key_id FROM totp UNION ALL SELECT master_key_id FROM totp_pending \
         UNION ALL SELECT master_key_id FROM webhooks WHERE master_key_id IS NOT NULL) t \
         GROUP BY master_key_id ORDER BY master_key_id",
        )
        .fetch_all(p)
        .await
    })?)
}

// ---------------------------------------------------------------- credentials

/// Metadata of a credential: never the secret.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub id: i64,
    pub name: String,
    /// Key of the systems register.
    pub system: String,
    pub account: String,
    /// `password`, `key` or `token`.
    pub kind: String,
    pub department: String,
    pub rotation_days: Option<i64>,
    pub version: i64,
    /// Set when the secret was revealed for a change: rotate it (POST …/rotate).
    pub rotate_after_use: bool,
    /// The change the secret was last revealed for, while `rotate_after_use`.
    pub rotate_reason_change_id: Option<i64>,
    pub secret_changed_at: DateTime<Utc>,
    pub last_revealed_at: Option<DateTime<Utc>>,
    pub last_revealed_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! cred_select {
    () => {
        "SELECT c.id, c.name, c.system_key AS system, c.account, c.kind, c.department, \
         c.rotation_days, c.version, c.rotate_after_use, c.rotate_reason_change_id, \
         c.secret_changed_at, c.last_revealed_at, u.username AS last_revealed_by, c.created_at, \
         c.updated_at FROM credentials c LEFT JOIN users u ON u.id = c.last_revealed_by"
    };
}

pub struct NewCredential<'a> {
    pub name: &'a str,
    pub system: &'a str,
    pub account: &'a str,
    pub kind: &'a str,
    pub department: &'a str,
    pub rotation_days: Option<i64>,
    pub created_by: i64,
}

/// Inserts the metadata with an empty secret; the caller seals the secret with the new id
/// and stores it with [`store_secret`] in the same transaction.
pub async fn insert_credential(
    tx: &mut Tx,
    n: &NewCredential<'_>,
    master_key_id: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    let empty: Vec<u8> = Vec::new();
    Ok(on_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO credentials (name, system_key, account, kind, department, rotation_days, \
         version, key_id, master_key_id, wrapped_key, nonce, ciphertext, rotate_after_use, \
         secret_changed_at, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, '', $7, $8, $8, $8, FALSE, $9, $10, $9, $9) RETURNING id"
    )
    .bind(n.name)
    .bind(n.system)
    .bind(n.account)
    .bind(n.kind)
    .bind(n.department)
    .bind(n.rotation_days)
    .bind(master_key_id)
    .bind(&empty)
    .bind(now)
    .bind(n.created_by)
    .fetch_one(c)
    .await
    })?)
}

/// Stores a new version of the secret; clears "rotate after use".
pub async fn store_secret(
    tx: &mut Tx,
    id: i64,
    version: i64,
    s: &Sealed,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE credentials SET version = $2, key_id = $3, master_key_id = $4, wrapped_key = $5, \
         nonce = $6, ciphertext = $7, rotate_after_use = FALSE, rotate_reason_change_id = NULL, \
         secret_changed_at = $8, updated_at = $8 WHERE id = $1"
    )
    .bind(id)
    .bind(version)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn list_credentials(db: &Db) -> Result<Vec<Credential>> {
    let sql = concat!(cred_select!(), " ORDER BY c.name");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Credential>(sql)
        .fetch_all(p)
        .await)?)
}

pub async fn get_credential(db: &Db, id: i64) -> Result<Credential> {
    let sql = concat!(cred_select!(), " WHERE c.id = $1");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Credential>(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

pub async fn get_credential_tx(tx: &mut Tx, id: i64) -> Result<Credential> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(cred_select!(), " WHERE c.id = $1 FOR UPDATE OF c"),
        Backend::Sqlite => concat!(cred_select!(), " WHERE c.id = $1"),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Credential>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// The five columns every sealed secret is stored in (credentials, totp, totp_pending).
#[derive(sqlx::FromRow)]
struct SealedCols {
    key_id: String,
    master_key_id: String,
    wrapped_key: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl From<SealedCols> for Sealed {
    fn from(c: SealedCols) -> Sealed {
        Sealed {
            key_id: c.key_id,
            master_key_id: c.master_key_id,
            wrapped_key: c.wrapped_key,
            nonce: c.nonce,
            ciphertext: c.ciphertext,
        }
    }
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    version: i64,
    #[sqlx(flatten)]
    sealed: SealedCols,
}

/// The sealed secret of a credential and its version, read in the caller's transaction.
pub async fn sealed_secret(tx: &mut Tx, id: i64) -> Result<(i64, Sealed)> {
    let r = on_tx!(tx, |c| sqlx::query_as::<_, SealedRow>(
        "SELECT version, key_id, master_key_id, wrapped_key, nonce, ciphertext \
         FROM credentials WHERE id = $1"
    )
    .bind(id)
    .fetch_one(c)
    .await)?;
    Ok((r.version, r.sealed.into()))
}

/// Records a reveal; one for a change flags the credential "rotate after use".
pub async fn mark_revealed(
    tx: &mut Tx,
    id: i64,
    user_id: i64,
    change_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE credentials SET last_revealed_at = $3, last_revealed_by = $2, \
         rotate_after_use = (rotate_after_use OR $4), \
         rotate_reason_change_id = COALESCE($5, rotate_reason_change_id) WHERE id = $1"
    )
    .bind(id)
    .bind(user_id)
    .bind(now)
    .bind(change_id.is_some())
    .bind(change_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Credentials flagged "rotate after use" for changes assigned to `user_id`.
pub async fn rotation_reminders(db: &Db, user_id: i64) -> Result<Vec<Credential>> {
    let sql = concat!(
        cred_select!(),
        " JOIN change_requests r ON r.id = c.rotate_reason_change_id \
         WHERE c.rotate_after_use AND r.assignee_id = $1 ORDER BY c.name"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Credential>(sql)
        .bind(user_id)
        .fetch_all(p)
        .await)?)
}

/// Every credential still flagged "rotate after use", with the assignee of the change it was
/// revealed for.
pub async fn rotation_due(db: &Db) -> Result<Vec<(Credential, i64)>> {
    let due = on_pool!(db, |p| sqlx::query_as::<_, (i64, i64)>(
        "SELECT c.id, r.assignee_id FROM credentials c \
         JOIN change_requests r ON r.id = c.rotate_reason_change_id \
         WHERE c.rotate_after_use ORDER BY c.id"
    )
    .fetch_all(p)
    .await)?;
    let mut out = Vec::with_capacity(due.len());
    for (id, assignee) in due {
        out.push((get_credential(db, id).await?, assignee));
    }
    Ok(out)
}

// ---------------------------------------------------------------- change windows

/// A change as far as the reveal rule needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WindowRow {
    pub id: i64,
    pub requester_id: i64,
    pub assignee_id: i64,
    pub emergency: bool,
    pub status: String,
    pub planned_end: DateTime<Utc>,
    pub touches: bool,
}

/// Changes `in_progress` that touch `system`, the caller's own first.
pub async fn windows_for(db: &Db, system: &str, user_id: i64) -> Result<Vec<WindowRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, WindowRow>(
        "SELECT c.id, c.requester_id, c.assignee_id, c.emergency, c.status, c.planned_end, \
         TRUE AS touches \
         FROM change_requests c JOIN change_systems s ON s.change_id = c.id \
         WHERE s.system_key = $1 AND c.status = 'in_progress' \
         ORDER BY CASE WHEN c.assignee_id = $2 THEN 0 ELSE 1 END, c.id"
    )
    .bind(system)
    .bind(user_id)
    .fetch_all(p)
    .await)?)
}

/// One change and whether it touches `system`.
pub async fn window(db: &Db, change_id: i64, system: &str) -> Result<Option<WindowRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, WindowRow>(
        "SELECT c.id, c.requester_id, c.assignee_id, c.emergency, c.status, c.planned_end, \
         EXISTS (SELECT 1 FROM change_systems s WHERE s.change_id = c.id AND s.system_key = $2) \
         AS touches FROM change_requests c WHERE c.id = $1"
    )
    .bind(change_id)
    .bind(system)
    .fetch_optional(p)
    .await)?)
}

// ---------------------------------------------------------------- standing grants

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct CredentialGrant {
    pub id: i64,
    pub credential_id: i64,
    pub grantee_id: i64,
    pub reason: String,
    pub expires_at: DateTime<Utc>,
    pub granted_by: i64,
    pub granted_at: DateTime<Utc>,
    /// A second person, neither the grantee nor the granter; the grant counts only once approved.
    pub approved_by: Option<i64>,
    pub approved_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

macro_rules! grant_cols {
    () => {
        "id, credential_id, grantee_id, reason, expires_at, granted_by, granted_at, approved_by, \
         approved_at, revoked_at"
    };
}

pub async fn insert_grant(
    tx: &mut Tx,
    credential_id: i64,
    grantee_id: i64,
    reason: &str,
    expires_at: DateTime<Utc>,
    granted_by: i64,
    now: DateTime<Utc>,
) -> Result<CredentialGrant> {
    let sql = concat!(
        "INSERT INTO credential_grants (credential_id, grantee_id, reason, expires_at, granted_by, \
         granted_at) VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        grant_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, CredentialGrant>(sql)
        .bind(credential_id)
        .bind(grantee_id)
        .bind(reason)
        .bind(expires_at)
        .bind(granted_by)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

pub async fn get_grant_tx(tx: &mut Tx, id: i64) -> Result<CredentialGrant> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(
            "SELECT ",
            grant_cols!(),
            " FROM credential_grants WHERE id = $1 FOR UPDATE"
        ),
        Backend::Sqlite => concat!(
            "SELECT ",
            grant_cols!(),
            " FROM credential_grants WHERE id = $1"
        ),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, CredentialGrant>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

pub async fn approve_grant(
    tx: &mut Tx,
    id: i64,
    approver: i64,
    now: DateTime<Utc>,
) -> Result<CredentialGrant> {
    let sql = concat!(
        "UPDATE credential_grants SET approved_by = $2, approved_at = $3 WHERE id = $1 \
         AND approved_by IS NULL RETURNING ",
        grant_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, CredentialGrant>(sql)
        .bind(id)
        .bind(approver)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

/// Ends a grant now (the caller checked it is neither revoked nor expired).
pub async fn revoke_grant(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<CredentialGrant> {
    let sql = concat!(
        "UPDATE credential_grants SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL \
         RETURNING ",
        grant_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, CredentialGrant>(sql)
        .bind(id)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

pub async fn grants_of_credential(db: &Db, credential_id: i64) -> Result<Vec<CredentialGrant>> {
    let sql = concat!(
        "SELECT ",
        grant_cols!(),
        " FROM credential_grants WHERE credential_id = $1 ORDER BY id"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, CredentialGrant>(sql)
        .bind(credential_id)
        .fetch_all(p)
        .await)?)
}

/// Whether `user_id` holds an approved, unexpired, unrevoked grant for the credential.
pub async fn has_active_grant(
    db: &Db,
    credential_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    Ok(on_pool!(db, |p| {
        sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM credential_grants WHERE credential_id = $1 \
         AND grantee_id = $2 AND approved_by IS NOT NULL AND revoked_at IS NULL AND expires_at > $3)"
    )
    .bind(credential_id)
    .bind(user_id)
    .bind(now)
    .fetch_one(p)
    .await
    })?)
}

// ---------------------------------------------------------------- TOTP

#[derive(Debug, Clone)]
pub struct TotpRow {
    pub sealed: Sealed,
    pub confirmed: bool,
    pub last_step: i64,
    pub failures: i64,
    pub blocked_until: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TotpDb {
    #[sqlx(flatten)]
    sealed: SealedCols,
    confirmed: bool,
    last_step: i64,
    failures: i64,
    blocked_until: Option<DateTime<Utc>>,
}

/// Starts (or restarts) enrolment: an unconfirmed secret replaces any previous one.
pub async fn put_totp(tx: &mut Tx, user_id: i64, s: &Sealed, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO totp (user_id, key_id, master_key_id, wrapped_key, nonce, ciphertext, \
         confirmed, last_step, failures, created_at) VALUES ($1, $2, $3, $4, $5, $6, FALSE, 0, 0, $7) \
         ON CONFLICT (user_id) DO UPDATE SET key_id = $2, master_key_id = $3, wrapped_key = $4, \
         nonce = $5, ciphertext = $6, confirmed = FALSE, last_step = 0, failures = 0, \
         blocked_until = NULL, created_at = $7, confirmed_at = NULL"
    )
    .bind(user_id)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// A replacement secret for a user whose confirmed factor stays in force until it is confirmed.
pub async fn put_totp_pending(
    tx: &mut Tx,
    user_id: i64,
    s: &Sealed,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
            "INSERT INTO totp_pending (user_id, key_id, master_key_id, wrapped_key, nonce, \
             ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (user_id) DO UPDATE SET key_id = $2, master_key_id = $3, \
             wrapped_key = $4, nonce = $5, ciphertext = $6, created_at = $7",
        )
        .bind(user_id)
        .bind(&s.key_id)
        .bind(&s.master_key_id)
        .bind(&s.wrapped_key)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn delete_totp_pending(tx: &mut Tx, user_id: i64) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "DELETE FROM totp_pending WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The replacement secret waiting for confirmation, locked for the transaction (PostgreSQL: a
/// master key rotation cannot re-wrap it while it is being promoted).
/// Only one started after `since` counts: an older one is forgotten.
pub async fn totp_pending_for_update(
    tx: &mut Tx,
    user_id: i64,
    since: DateTime<Utc>,
) -> Result<Option<Sealed>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        sealed: SealedCols,
        created_at: DateTime<Utc>,
    }
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, created_at \
             FROM totp_pending WHERE user_id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, created_at \
             FROM totp_pending WHERE user_id = $1"
        }
    };
    let r = on_tx!(tx, |c| sqlx::query_as::<_, Row>(sql)
        .bind(user_id)
        .fetch_optional(c)
        .await)?;
    match r {
        Some(r) if r.created_at > since => Ok(Some(r.sealed.into())),
        Some(_) => {
            delete_totp_pending(tx, user_id).await?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The replacement secret was confirmed at `step`: it becomes the user's factor, the old one
/// is gone.
pub async fn promote_totp_pending(
    tx: &mut Tx,
    user_id: i64,
    s: &Sealed,
    step: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE totp SET key_id = $2, master_key_id = $3, wrapped_key = $4, nonce = $5, \
         ciphertext = $6, confirmed = TRUE, last_step = $7, failures = 0, blocked_until = NULL, \
         created_at = $8, confirmed_at = $8 WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(step)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    delete_totp_pending(tx, user_id).await
}

/// The TOTP state of a user, locked for the rest of the transaction (PostgreSQL).
pub async fn totp_for_update(tx: &mut Tx, user_id: i64) -> Result<Option<TotpRow>> {
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, confirmed, last_step, \
             failures, blocked_until FROM totp WHERE user_id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, confirmed, last_step, \
             failures, blocked_until FROM totp WHERE user_id = $1"
        }
    };
    let r = on_tx!(tx, |c| sqlx::query_as::<_, TotpDb>(sql)
        .bind(user_id)
        .fetch_optional(c)
        .await)?;
    Ok(r.map(|r| TotpRow {
        sealed: r.sealed.into(),
        confirmed: r.confirmed,
        last_step: r.last_step,
        failures: r.failures,
        blocked_until: r.blocked_until,
    }))
}

/// A code was accepted: its step becomes the last used one; failures reset.
pub async fn totp_accept(
    tx: &mut Tx,
    user_id: i64,
    step: i64,
    confirm: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE totp SET last_step = $2, failures = 0, blocked_until = NULL, \
         confirmed = (confirmed OR $3), confirmed_at = COALESCE(confirmed_at, $4) \
         WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(step)
    .bind(confirm)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn totp_failure(
    tx: &mut Tx,
    user_id: i64,
    failures: i64,
    blocked_until: Option<DateTime<Utc>>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE totp SET failures = $2, blocked_until = $3 WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(failures)
    .bind(blocked_until)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn has_confirmed_totp(db: &Db, user_id: i64) -> Result<bool> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM totp WHERE user_id = $1 AND confirmed)"
    )
    .bind(user_id)
    .fetch_one(p)
    .await)?)
}

/// Replaces a user's recovery codes with these hashes.
pub async fn set_recovery_codes(tx: &mut Tx, user_id: i64, hashes: &[String]) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "DELETE FROM totp_recovery_codes WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    for h in hashes {
        on_tx!(tx, |c| sqlx::query(
            "INSERT INTO totp_recovery_codes (user_id, code_hash) VALUES ($1, $2)"
        )
        .bind(user_id)
        .bind(h)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Uses up a recovery code; true if it was valid and unused.
pub async fn use_recovery_code(
    tx: &mut Tx,
    user_id: i64,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "UPDATE totp_recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 \
         AND used_at IS NULL"
    )
    .bind(user_id)
    .bind(hash)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

// ---------------------------------------------------------------- key rotation

/// A sealed row to re-wrap: (table, row id, sealed).
pub struct WrappedRow {
    pub table: &'static str,
    pub id: i64,
    pub sealed: Sealed,
}

#[derive(sqlx::FromRow)]
struct WrapDb {
    id: i64,
    key_id: String,
    master_key_id: String,
    wrapped_key: Vec<u8>,
}

/// Up to `limit` rows still wrapped by `master_key_id`, locked for the transaction.
pub async fn wrapped_by(tx: &mut Tx, master_key_id: &str, limit: i64) -> Result<Vec<WrappedRow>> {
    let (creds, totps, pending, hooks) = match tx.backend() {
        Backend::Postgres => (
            "SELECT id, key_id, master_key_id, wrapped_key FROM credentials \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2 FOR UPDATE",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2 FOR UPDATE",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp_pending \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2 FOR UPDATE",
            "SELECT id, key_id, master_key_id, wrapped_key FROM webhooks \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2 FOR UPDATE",
        ),
        Backend::Sqlite => (
            "SELECT id, key_id, master_key_id, wrapped_key FROM credentials \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp_pending \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2",
            "SELECT id, key_id, master_key_id, wrapped_key FROM webhooks \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2",
        ),
    };
    // One table per batch: a batch holding credential rows and then waiting for a TOTP row
    // would deadlock with a reveal, which locks the caller's TOTP row and then the credential.
    let mut out = Vec::new();
    for (table, sql) in [
        ("credentials", creds),
        ("totp", totps),
        ("totp_pending", pending),
        ("webhooks", hooks),
    ] {
        let left = limit - out.len() as i64;
        if left <= 0 || !out.is_empty() {
            break;
        }
        let rows = on_tx!(tx, |c| sqlx::query_as::<_, WrapDb>(sql)
            .bind(master_key_id)
            .bind(left)
            .fetch_all(c)
            .await)?;
        out.extend(rows.into_iter().map(|r| WrappedRow {
            table,
            id: r.id,
            sealed: Sealed {
                key_id: r.key_id,
                master_key_id: r.master_key_id,
                wrapped_key: r.wrapped_key,
                nonce: Vec::new(),
                ciphertext: Vec::new(),
            },
        }));
    }
    Ok(out)
}

/// Stores a re-wrapped data key (only if the row still has the data key it had).
pub async fn store_wrapped(tx: &mut Tx, row: &WrappedRow, new: &Sealed) -> Result<()> {
    let sql = match row.table {
        "credentials" => {
            "UPDATE credentials SET master_key_id = $3, wrapped_key = $4 WHERE id = $1 AND key_id = $2"
        }
        "totp" => {
            "UPDATE totp SET master_key_id = $3, wrapped_key = $4 WHERE user_id = $1 AND key_id = $2"
        }
        "webhooks" => {
            "UPDATE webhooks SET master_key_id = $3, wrapped_key = $4 WHERE id = $1 AND key_id = $2"
        }
        _ => {
            "UPDATE totp_pending SET master_key_id = $3, wrapped_key = $4 \
             WHERE user_id = $1 AND key_id = $2"
        }
    };
    on_tx!(tx, |c| sqlx::query(sql)
        .bind(row.id)
        .bind(&row.sealed.key_id)
        .bind(&new.master_key_id)
        .bind(&new.wrapped_key)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}

// ---------------------------------------------------------------- access log

/// Audit entries about one credential, newest first.
pub async fn access_log(
    db: &Db,
    credential_id: i64,
    limit: i64,
) -> Result<Vec<crate::audit::Record>> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, crate::audit::Record>(
            "SELECT seq, at, actor_id, actor, action, target, outcome, code, reason, policy_ids, \
         details, request_id, prev_hash, hash FROM audit_log WHERE target = $1 \
         ORDER BY seq DESC LIMIT $2",
        )
        .bind(format!("credential:{credential_id}"))
        .bind(limit)
        .fetch_all(p)
        .await
    })?)
}
