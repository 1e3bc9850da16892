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
