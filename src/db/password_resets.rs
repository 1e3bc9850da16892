//! Password resets of privileged accounts: chosen by one admin, approved by another. The chosen
//! password's hash is kept only while the request is pending and never leaves this module
//! except to the approval that applies it.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::role_requests::{RequestStatus, effective};
use super::{Backend, Db, Result, Tx};
use crate::{on_pool, on_tx};

/// A reset with the names of its people (never the password's hash).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct PasswordReset {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub requested_by: i64,
    pub requested_by_username: String,
    pub requested_at: DateTime<Utc>,
    /// Undecided by then, the request lapses.
    pub lapses_at: DateTime<Utc>,
    #[sqlx(try_from = "String")]
    pub status: RequestStatus,
    pub decided_by: Option<i64>,
    pub decided_by_username: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Why it was refused.
    pub reason: Option<String>,
}

macro_rules! reset_select {
    () => {
        "SELECT r.id, r.user_id, u.username, r.requested_by, \
         b.username AS requested_by_username, r.requested_at, r.lapses_at, r.status, \
         r.decided_by, d.username AS decided_by_username, r.decided_at, r.reason \
         FROM password_resets r JOIN users u ON u.id = r.user_id \
         JOIN users b ON b.id = r.requested_by LEFT JOIN users d ON d.id = r.decided_by"
    };
}

/// Marks the pending requests past their time (of one user, or of all) expired and drops their
/// hashes.
const LAPSE: &str = "UPDATE password_resets SET status = 'expired', password_hash = NULL \
     WHERE ($1 IS NULL OR user_id = $1) AND status = 'pending' AND lapses_at <= $2";

/// The minute job: no password hash of a lapsed request is kept (nobody files again for
/// everybody). Returns how many lapsed.
pub async fn lapse_due(db: &Db, now: DateTime<Utc>) -> Result<u64> {
    Ok(on_pool!(db, |p| sqlx::query(LAPSE)
        .bind(None::<i64>)
        .bind(now)
        .execute(p)
        .await
        .map(|x| x.rows_affected()))?)
}

/// Files a reset; `StoreError::Unique` when one is already pending for this user. A pending
/// request past its time is marked expired first (and its hash dropped), so it blocks nothing.
pub async fn insert(
    tx: &mut Tx,
    user_id: i64,
    password_hash: &str,
    requested_by: i64,
    lapses_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<PasswordReset> {
    on_tx!(tx, |c| sqlx::query(LAPSE)
        .bind(Some(user_id))
        .bind(now)
        .execute(c)
        .await
        .map(|x| x.rows_affected()))?;
    let id = on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "INSERT INTO password_resets (user_id, password_hash, requested_by, requested_at, \
         lapses_at, status) VALUES ($1, $2, $3, $4, $5, 'pending') RETURNING id"
    )
    .bind(user_id)
    .bind(password_hash)
    .bind(requested_by)
    .bind(now)
    .bind(lapses_at)
    .fetch_one(c)
    .await)?;
    get_tx(tx, id).await
}

/// A reset inside the deciding transaction, its row locked on PostgreSQL, with the pending
/// password's hash.
pub async fn get_for_update(tx: &mut Tx, id: i64) -> Result<(PasswordReset, Option<String>)> {
    let sql = match tx.backend() {
        Backend::Postgres => "SELECT password_hash FROM password_resets WHERE id = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT password_hash FROM password_resets WHERE id = $1",
    };
    let hash = on_tx!(tx, |c| sqlx::query_scalar::<_, Option<String>>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?;
    Ok((get_tx(tx, id).await?, hash))
}

async fn get_tx(tx: &mut Tx, id: i64) -> Result<PasswordReset> {
    let sql = concat!(reset_select!(), " WHERE r.id = $1");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, PasswordReset>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// Records the decision of a pending reset and drops the password's hash.
pub async fn decide(
    tx: &mut Tx,
    id: i64,
    status: RequestStatus,
    by: i64,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<PasswordReset> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE password_resets SET status = $2, decided_by = $3, decided_at = $4, reason = $5, \
         password_hash = NULL WHERE id = $1 AND status = 'pending'"
    )
    .bind(id)
    .bind(status.as_str())
    .bind(by)
    .bind(now)
    .bind(reason)
    .execute(c)
    .await
    .map(|x| x.rows_affected()))?;
    get_tx(tx, id).await
}

/// Resets, newest first; with `status`, only those (a pending one past its time reads as
/// expired).
pub async fn list(
    db: &Db,
    status: Option<RequestStatus>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<PasswordReset>> {
    let sql = concat!(
        reset_select!(),
        " WHERE ($1 IS NULL OR (CASE WHEN r.status = 'pending' AND r.lapses_at <= $2 \
         THEN 'expired' ELSE r.status END) = $1) ORDER BY r.id DESC LIMIT $3"
    );
    let mut rows = on_pool!(db, |p| sqlx::query_as::<_, PasswordReset>(sql)
        .bind(status.map(RequestStatus::as_str))
        .bind(now)
        .bind(limit)
        .fetch_all(p)
        .await)?;
    for r in &mut rows {
        r.status = effective(r.status, r.lapses_at, now);
    }
    Ok(rows)
}
