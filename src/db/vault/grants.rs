//! The vault's standing grants.

use super::*;

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

/// Standing grants still waiting for their second person (unapproved, unrevoked, unexpired),
/// oldest first.
pub async fn awaiting_approval(
    db: &Db,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CredentialGrant>> {
    let sql = concat!(
        "SELECT ",
        grant_cols!(),
        " FROM credential_grants WHERE approved_by IS NULL AND revoked_at IS NULL \
         AND expires_at > $1 ORDER BY id LIMIT $2"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, CredentialGrant>(sql)
        .bind(now)
        .bind(limit)
        .fetch_all(p)
        .await)?)
}

macro_rules! active_grant_sql {
    () => {
        "SELECT id FROM credential_grants WHERE credential_id = $1 AND grantee_id = $2 \
         AND approved_by IS NOT NULL AND revoked_at IS NULL AND expires_at > $3"
    };
}

/// Whether `user_id` holds an approved, unexpired, unrevoked grant for the credential.
pub async fn has_active_grant(
    db: &Db,
    credential_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let found = on_pool!(db, |p| sqlx::query_scalar::<_, i64>(active_grant_sql!())
        .bind(credential_id)
        .bind(user_id)
        .bind(now)
        .fetch_all(p)
        .await)?;
    Ok(!found.is_empty())
}

/// [`has_active_grant`] inside the transaction that decides on it: on PostgreSQL the grant rows
/// are held, so a revocation racing the decision either waits for it or wins and is seen.
pub async fn has_active_grant_held(
    tx: &mut Tx,
    credential_id: i64,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(active_grant_sql!(), " FOR SHARE"),
        Backend::Sqlite => active_grant_sql!(),
    };
    let found = on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(sql)
        .bind(credential_id)
        .bind(user_id)
        .bind(now)
        .fetch_all(c)
        .await)?;
    Ok(!found.is_empty())
}
