//! The vault's change windows.

use super::*;

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

macro_rules! windows_for_sql {
    () => {
        "SELECT c.id, c.requester_id, c.assignee_id, c.emergency, c.status, \
     c.planned_end, TRUE AS touches \
     FROM change_requests c JOIN change_systems s ON s.change_id = c.id \
     WHERE s.system_key = $1 AND c.status = 'in_progress' \
     ORDER BY CASE WHEN c.assignee_id = $2 THEN 0 ELSE 1 END, c.id"
    };
}

macro_rules! window_sql {
    () => {
        "SELECT c.id, c.requester_id, c.assignee_id, c.emergency, c.status, \
     c.planned_end, \
     EXISTS (SELECT 1 FROM change_systems s WHERE s.change_id = c.id AND s.system_key = $2) \
     AS touches FROM change_requests c WHERE c.id = $1"
    };
}

/// Changes `in_progress` that touch `system`, the caller's own first.
pub async fn windows_for(db: &Db, system: &str, user_id: i64) -> Result<Vec<WindowRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, WindowRow>(
        windows_for_sql!()
    )
    .bind(system)
    .bind(user_id)
    .fetch_all(p)
    .await)?)
}

/// [`windows_for`] inside the transaction that decides on them. On PostgreSQL the change rows
/// are held (a completion or a cancellation racing the decision waits for it, or wins and is
/// seen); SQLite's write transaction already excludes every other writer.
pub async fn windows_for_held(tx: &mut Tx, system: &str, user_id: i64) -> Result<Vec<WindowRow>> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(windows_for_sql!(), " FOR SHARE OF c"),
        Backend::Sqlite => windows_for_sql!(),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, WindowRow>(sql)
        .bind(system)
        .bind(user_id)
        .fetch_all(c)
        .await)?)
}

/// One change and whether it touches `system`.
pub async fn window(db: &Db, change_id: i64, system: &str) -> Result<Option<WindowRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, WindowRow>(
        window_sql!()
    )
    .bind(change_id)
    .bind(system)
    .fetch_optional(p)
    .await)?)
}

/// [`window`] inside the transaction that decides on it (held as in [`windows_for_held`]).
pub async fn window_held(tx: &mut Tx, change_id: i64, system: &str) -> Result<Option<WindowRow>> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(window_sql!(), " FOR SHARE OF c"),
        Backend::Sqlite => window_sql!(),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, WindowRow>(sql)
        .bind(change_id)
        .bind(system)
        .fetch_optional(c)
        .await)?)
}
