//! Database targets and the temporary accounts made on them.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, Result, Tx};
use crate::{on_pool, on_tx};

/// A database of a system, as the register shows it (the admin credential by id only).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Target {
    pub id: i64,
    pub system_key: String,
    pub name: String,
    /// postgres | mysql
    pub engine: String,
    pub host: String,
    pub port: i32,
    pub database_name: String,
    pub admin_credential_id: i64,
    /// JSON object: action -> roles or privileges.
    #[serde(skip)]
    pub grants: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! target_cols {
    () => {
        "id, system_key, name, engine, host, port, database_name, admin_credential_id, grants, \
         created_at, updated_at"
    };
}

pub struct NewTarget<'a> {
    pub system_key: &'a str,
    pub name: &'a str,
    pub engine: &'a str,
    pub host: &'a str,
    pub port: i32,
    pub database_name: &'a str,
    pub admin_credential_id: i64,
    pub grants: &'a str,
}

pub async fn insert_target(tx: &mut Tx, t: &NewTarget<'_>, now: DateTime<Utc>) -> Result<Target> {
    let sql = concat!(
        "INSERT INTO database_targets (system_key, name, engine, host, port, database_name, \
         admin_credential_id, grants, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING ",
        target_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Target>(sql)
        .bind(t.system_key)
        .bind(t.name)
        .bind(t.engine)
        .bind(t.host)
        .bind(t.port)
        .bind(t.database_name)
        .bind(t.admin_credential_id)
        .bind(t.grants)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

pub async fn targets_of(db: &Db, system: &str) -> Result<Vec<Target>> {
    let sql = concat!(
        "SELECT ",
        target_cols!(),
        " FROM database_targets WHERE system_key = $1 AND deleted_at IS NULL ORDER BY name"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Target>(sql)
        .bind(system)
        .fetch_all(p)
        .await)?)
}

pub async fn target(tx: &mut Tx, id: i64) -> Result<Target> {
    let sql = concat!(
        "SELECT ",
        target_cols!(),
        " FROM database_targets WHERE id = $1"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Target>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// A target that is not deleted, read in the caller's transaction.
pub async fn live_target(tx: &mut Tx, id: i64) -> Result<Option<Target>> {
    let sql = concat!(
        "SELECT ",
        target_cols!(),
        " FROM database_targets WHERE id = $1 AND deleted_at IS NULL"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Target>(sql)
        .bind(id)
        .fetch_optional(c)
        .await)?)
}

pub async fn delete_target(
    tx: &mut Tx,
    system: &str,
    id: i64,
    now: DateTime<Utc>,
) -> Result<Target> {
    let sql = concat!(
        "UPDATE database_targets SET deleted_at = $3, updated_at = $3 \
         WHERE id = $1 AND system_key = $2 AND deleted_at IS NULL RETURNING ",
        target_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Target>(sql)
        .bind(id)
        .bind(system)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

/// A temporary account made for a change's window.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Account {
    pub id: i64,
    pub target_id: i64,
    pub change_id: i64,
    pub user_id: i64,
    pub username: String,
    /// live | revoked (a live account with `attempts` > 0 is overdue: its revocation failed)
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Failed revocations so far (retried every minute).
    pub attempts: i32,
    pub last_error: Option<String>,
}

macro_rules! account_cols {
    () => {
        "id, target_id, change_id, user_id, username, status, created_at, expires_at, revoked_at, \
         attempts, last_error"
    };
}

pub async fn insert_account(
    tx: &mut Tx,
    target_id: i64,
    change_id: i64,
    user_id: i64,
    username: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Account> {
    let sql = concat!(
        "INSERT INTO database_accounts (target_id, change_id, user_id, username, status, \
         created_at, expires_at) VALUES ($1, $2, $3, $4, 'live', $5, $6) RETURNING ",
        account_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Account>(sql)
        .bind(target_id)
        .bind(change_id)
        .bind(user_id)
        .bind(username)
        .bind(now)
        .bind(expires_at)
        .fetch_one(c)
        .await)?)
}

/// Live accounts whose change is no longer in progress or whose window has ended (of one
/// change, or of all).
pub async fn due(db: &Db, change: Option<i64>, now: DateTime<Utc>) -> Result<Vec<Account>> {
    let sql = "SELECT a.id, a.target_id, a.change_id, a.user_id, a.username, a.status, \
               a.created_at, a.expires_at, a.revoked_at, a.attempts, a.last_error \
               FROM database_accounts a JOIN change_requests c ON c.id = a.change_id \
               WHERE a.status = 'live' AND (a.expires_at <= $1 OR c.status <> 'in_progress') \
               AND ($2 IS NULL OR a.change_id = $2) ORDER BY a.id";
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Account>(sql)
        .bind(now)
        .bind(change)
        .fetch_all(p)
        .await)?)
}

/// Marks a live account revoked; false if another run did it first.
pub async fn mark_revoked(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "UPDATE database_accounts SET status = 'revoked', revoked_at = $2, last_error = NULL \
         WHERE id = $1 AND status = 'live'"
    )
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// A failed revocation: counted and kept live, to be retried. Returns the failures so far
/// (`None` if the account is no longer live: another run revoked it meanwhile).
pub async fn mark_failed(db: &Db, id: i64, error: &str) -> Result<Option<i32>> {
    let _turn = db.write_turn().await?;
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i32>(
        "UPDATE database_accounts SET attempts = attempts + 1, last_error = $2 \
         WHERE id = $1 AND status = 'live' RETURNING attempts"
    )
    .bind(id)
    .bind(error)
    .fetch_optional(p)
    .await)?)
}

pub async fn list(db: &Db, status: Option<&str>) -> Result<Vec<Account>> {
    let sql = concat!(
        "SELECT ",
        account_cols!(),
        " FROM database_accounts WHERE ($1 IS NULL OR status = $1 \
         OR ($1 = 'overdue' AND status = 'live' AND attempts > 0)) ORDER BY id DESC LIMIT 1000"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Account>(sql)
        .bind(status)
        .fetch_all(p)
        .await)?)
}
