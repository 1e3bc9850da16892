//! Requests for privileged roles: asked by one holder of `role.grant`, decided by another.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, Tx};
use crate::{on_pool, on_tx};

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    /// Waiting for a second person.
    Pending,
    /// Approved: the grant is in force (or was, until its own end).
    Active,
    Refused,
    /// Nobody decided in time.
    Expired,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Active => "active",
            RequestStatus::Refused => "refused",
            RequestStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<RequestStatus> {
        [
            RequestStatus::Pending,
            RequestStatus::Active,
            RequestStatus::Refused,
            RequestStatus::Expired,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

impl TryFrom<String> for RequestStatus {
    type Error = super::CorruptValue;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        RequestStatus::parse(&s).ok_or_else(|| super::CorruptValue::new("role_requests.status", s))
    }
}

/// A request with the names of its people.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct RoleRequest {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub role: String,
    /// The grant's own end, if it has one.
    pub expires_at: Option<DateTime<Utc>>,
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

macro_rules! request_select {
    () => {
        "SELECT r.id, r.user_id, u.username, r.role, r.expires_at, r.requested_by, \
         b.username AS requested_by_username, r.requested_at, r.lapses_at, r.status, \
         r.decided_by, d.username AS decided_by_username, r.decided_at, r.reason \
         FROM role_requests r JOIN users u ON u.id = r.user_id \
         JOIN users b ON b.id = r.requested_by LEFT JOIN users d ON d.id = r.decided_by"
    };
}

pub struct NewRequest<'a> {
    pub user_id: i64,
    pub role: &'a str,
    pub expires_at: Option<DateTime<Utc>>,
    pub requested_by: i64,
    pub lapses_at: DateTime<Utc>,
}

/// Files a request; `StoreError::Unique` when one is already pending for this user and role.
/// A pending request past its time is marked expired first, so it blocks nothing.
pub async fn insert(tx: &mut Tx, r: &NewRequest<'_>, now: DateTime<Utc>) -> Result<RoleRequest> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE role_requests SET status = 'expired' WHERE user_id = $1 AND role = $2 \
         AND status = 'pending' AND lapses_at <= $3"
    )
    .bind(r.user_id)
    .bind(r.role)
    .bind(now)
    .execute(c)
    .await
    .map(|x| x.rows_affected()))?;
    let id = on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "INSERT INTO role_requests (user_id, role, expires_at, requested_by, requested_at, \
         lapses_at, status) VALUES ($1, $2, $3, $4, $5, $6, 'pending') RETURNING id"
    )
    .bind(r.user_id)
    .bind(r.role)
    .bind(r.expires_at)
    .bind(r.requested_by)
    .bind(now)
    .bind(r.lapses_at)
    .fetch_one(c)
    .await)?;
    get_tx(tx, id).await
}

/// A request inside the deciding transaction, its row locked on PostgreSQL.
pub async fn get_for_update(tx: &mut Tx, id: i64) -> Result<RoleRequest> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(request_select!(), " WHERE r.id = $1 FOR UPDATE OF r"),
        Backend::Sqlite => concat!(request_select!(), " WHERE r.id = $1"),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, RoleRequest>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

async fn get_tx(tx: &mut Tx, id: i64) -> Result<RoleRequest> {
    let sql = concat!(request_select!(), " WHERE r.id = $1");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, RoleRequest>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// Records the decision of a pending request.
pub async fn decide(
    tx: &mut Tx,
    id: i64,
    status: RequestStatus,
    by: Option<i64>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<RoleRequest> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE role_requests SET status = $2, decided_by = $3, decided_at = $4, reason = $5 \
         WHERE id = $1 AND status = 'pending'"
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

/// Requests, newest first; with `status`, only those (a pending one past its time reads as
/// expired).
pub async fn list(
    db: &Db,
    status: Option<RequestStatus>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<RoleRequest>> {
    let sql = concat!(
        request_select!(),
        " WHERE ($1 IS NULL OR (CASE WHEN r.status = 'pending' AND r.lapses_at <= $2 \
         THEN 'expired' ELSE r.status END) = $1) ORDER BY r.id DESC LIMIT $3"
    );
    let mut rows = on_pool!(db, |p| sqlx::query_as::<_, RoleRequest>(sql)
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

/// A pending request past its time is expired, whatever the row says.
pub fn effective(
    status: RequestStatus,
    lapses_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> RequestStatus {
    if status == RequestStatus::Pending && lapses_at <= now {
        RequestStatus::Expired
    } else {
        status
    }
}

/// Whether a request for a role is pending (not lapsed) for `user_id`.
pub async fn has_pending(tx: &mut Tx, user_id: i64, now: DateTime<Utc>) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM role_requests WHERE user_id = $1 AND status = 'pending' \
         AND lapses_at > $2"
    )
    .bind(user_id)
    .bind(now)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}
