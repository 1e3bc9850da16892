//! Graded approval: the stage decisions of each change's round, the reminders and escalations
//! sent once per stage, and delegations.

use chrono::{DateTime, Utc};

use super::{Db, Result, Tx};
use crate::{on_pool, on_tx};

/// One stage decision with the names of its people.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DecisionRow {
    pub change_id: i64,
    pub stage: i64,
    pub approve: bool,
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub on_behalf_of: Option<i64>,
    pub behalf_username: Option<String>,
    pub behalf_name: Option<String>,
    pub comment: Option<String>,
    pub decided_at: DateTime<Utc>,
}

macro_rules! decision_select {
    () => {
        "SELECT a.change_id, a.stage, a.approve, a.user_id, u.username, u.display_name, \
         a.on_behalf_of, b.username AS behalf_username, b.display_name AS behalf_name, a.comment, \
         a.decided_at FROM change_approvals a JOIN users u ON u.id = a.user_id \
         LEFT JOIN users b ON b.id = a.on_behalf_of \
         JOIN change_requests c ON c.id = a.change_id AND a.round = c.approval_round"
    };
}

/// The decisions of a change's current round, in order (inside the deciding transaction).
pub async fn decisions(tx: &mut Tx, change_id: i64) -> Result<Vec<DecisionRow>> {
    let sql = concat!(decision_select!(), " WHERE a.change_id = $1 ORDER BY a.id");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, DecisionRow>(sql)
        .bind(change_id)
        .fetch_all(c)
        .await)?)
}

/// The decisions of the current rounds of several changes, one query.
pub async fn decisions_of(db: &Db, ids: &[i64]) -> Result<Vec<DecisionRow>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Only numbered placeholders are generated; the values are bound.
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "{} WHERE a.change_id IN ({}) ORDER BY a.id",
        decision_select!(),
        placeholders.join(", ")
    );
    Ok(on_pool!(db, |p| {
        let mut q = sqlx::query_as::<_, DecisionRow>(sqlx::AssertSqlSafe(sql.clone()));
        for id in ids {
            q = q.bind(*id);
        }
        q.fetch_all(p).await
    })?)
}

pub struct NewDecision<'a> {
    pub change_id: i64,
    pub round: i64,
    pub stage: i64,
    pub approve: bool,
    pub user_id: i64,
    pub on_behalf_of: Option<i64>,
    pub comment: Option<&'a str>,
}

pub async fn insert_decision(tx: &mut Tx, d: &NewDecision<'_>, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO change_approvals (change_id, round, stage, approve, user_id, on_behalf_of, \
         comment, decided_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    )
    .bind(d.change_id)
    .bind(d.round)
    .bind(d.stage)
    .bind(d.approve)
    .bind(d.user_id)
    .bind(d.on_behalf_of)
    .bind(d.comment)
    .bind(now)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Records that the `kind` (reminder, escalation) of a stage was sent; `false` when somebody
/// (another instance, an earlier run) already did: each is sent once.
pub async fn claim_nudge(
    tx: &mut Tx,
    change_id: i64,
    round: i64,
    stage: i64,
    kind: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "INSERT INTO approval_nudges (change_id, round, stage, kind, sent_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"
    )
    .bind(change_id)
    .bind(round)
    .bind(stage)
    .bind(kind)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Changes waiting for approval (status `submitted`), oldest first.
pub async fn waiting(db: &Db) -> Result<Vec<i64>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT id FROM change_requests WHERE status = 'submitted' ORDER BY id"
    )
    .fetch_all(p)
    .await)?)
}

/// Active people holding `role` now: (id, department, roles are checked by the caller).
pub async fn holders(tx: &mut Tx, role: &str, now: DateTime<Utc>) -> Result<Vec<(i64, String)>> {
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, (i64, String)>(
        "SELECT DISTINCT u.id, u.department FROM users u JOIN role_grants g ON g.user_id = u.id \
         WHERE g.role = $1 AND u.active AND u.kind IN ('person', 'directory') \
         AND (g.expires_at IS NULL OR g.expires_at > $2) ORDER BY u.id"
    )
    .bind(role)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

// ---------------------------------------------------------------- delegations

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DelegationRow {
    pub id: i64,
    pub delegator_id: i64,
    pub delegator_username: String,
    pub delegator_name: String,
    pub delegate_id: i64,
    pub delegate_username: String,
    pub delegate_name: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

macro_rules! delegation_select {
    () => {
        "SELECT d.id, d.delegator_id, f.username AS delegator_username, \
         f.display_name AS delegator_name, d.delegate_id, t.username AS delegate_username, \
         t.display_name AS delegate_name, d.starts_at, d.ends_at, d.reason, d.created_at, \
         d.revoked_at FROM delegations d JOIN users f ON f.id = d.delegator_id \
         JOIN users t ON t.id = d.delegate_id"
    };
}

pub struct NewDelegation<'a> {
    pub delegator_id: i64,
    pub delegate_id: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub reason: &'a str,
}

pub async fn insert_delegation(
    tx: &mut Tx,
    d: &NewDelegation<'_>,
    now: DateTime<Utc>,
) -> Result<i64> {
    Ok(on_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO delegations (delegator_id, delegate_id, starts_at, ends_at, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"
    )
    .bind(d.delegator_id)
    .bind(d.delegate_id)
    .bind(d.starts_at)
    .bind(d.ends_at)
    .bind(d.reason)
    .bind(now)
    .fetch_one(c)
    .await
    })?)
}

pub async fn get_delegation(tx: &mut Tx, id: i64) -> Result<DelegationRow> {
    let sql = concat!(delegation_select!(), " WHERE d.id = $1");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, DelegationRow>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// Whether `delegator` already has a delegation, not revoked, overlapping `[from, to)`.
pub async fn overlapping(
    tx: &mut Tx,
    delegator: i64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM delegations WHERE delegator_id = $1 AND revoked_at IS NULL \
         AND starts_at < $3 AND ends_at > $2"
    )
    .bind(delegator)
    .bind(from)
    .bind(to)
    .fetch_one(c)
    .await)?;
    Ok(n > 0)
}

/// Delegations given or received by `user` that have not ended before `since`, newest first.
pub async fn delegations_of(
    db: &Db,
    user: i64,
    since: DateTime<Utc>,
) -> Result<Vec<DelegationRow>> {
    let sql = concat!(
        delegation_select!(),
        " WHERE (d.delegator_id = $1 OR d.delegate_id = $1) AND d.ends_at > $2 ORDER BY d.id DESC"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, DelegationRow>(sql)
        .bind(user)
        .bind(since)
        .fetch_all(p)
        .await)?)
}

/// The delegations in force now to `delegate` (read by the deciding transaction).
pub async fn in_force_to(
    tx: &mut Tx,
    delegate: i64,
    now: DateTime<Utc>,
) -> Result<Vec<DelegationRow>> {
    let sql = concat!(
        delegation_select!(),
        " WHERE d.delegate_id = $1 AND d.revoked_at IS NULL AND d.starts_at <= $2 \
          AND d.ends_at > $2 ORDER BY d.id"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, DelegationRow>(sql)
        .bind(delegate)
        .bind(now)
        .fetch_all(c)
        .await)?)
}

/// The roles a delegate may come to exercise: those held now by the people who delegated to
/// `delegate` for a period not over yet (running or to come, not revoked). A delegate decides
/// in those roles, so they count for the second factor at login and for dual control of a
/// password reset as the delegate's own do.
pub async fn delegated_roles(
    tx: &mut Tx,
    delegate: i64,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
        DELEGATED_ROLES
    )
    .bind(delegate)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// The people `delegator` delegated to for a period not over yet (running or to come).
pub async fn delegates_not_over(
    tx: &mut Tx,
    delegator: i64,
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "SELECT DISTINCT delegate_id FROM delegations WHERE delegator_id = $1 \
         AND revoked_at IS NULL AND ends_at > $2"
    )
    .bind(delegator)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// [`delegated_roles`] outside a transaction (at login).
pub async fn delegated_roles_now(
    db: &Db,
    delegate: i64,
    now: DateTime<Utc>,
) -> Result<Vec<String>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, String>(
        DELEGATED_ROLES
    )
    .bind(delegate)
    .bind(now)
    .fetch_all(p)
    .await)?)
}

const DELEGATED_ROLES: &str = "SELECT DISTINCT g.role FROM delegations d \
     JOIN role_grants g ON g.user_id = d.delegator_id \
     WHERE d.delegate_id = $1 AND d.revoked_at IS NULL AND d.ends_at > $2 \
     AND (g.expires_at IS NULL OR g.expires_at > $2) ORDER BY g.role";

/// The delegates in force now of several people (for reminders): (delegator, delegate).
pub async fn delegates_of(tx: &mut Tx, delegators: &[i64], now: DateTime<Utc>) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for id in delegators {
        let ids = on_tx!(tx, |c| {
            sqlx::query_scalar::<_, i64>(
                "SELECT d.delegate_id FROM delegations d JOIN users u ON u.id = d.delegate_id \
             WHERE d.delegator_id = $1 AND d.revoked_at IS NULL AND d.starts_at <= $2 \
             AND d.ends_at > $2 AND u.active AND u.kind IN ('person', 'directory')",
            )
            .bind(*id)
            .bind(now)
            .fetch_all(c)
            .await
        })?;
        out.extend(ids);
    }
    Ok(out)
}

pub async fn revoke_delegation(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE delegations SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
    )
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}
