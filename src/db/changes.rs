//! Systems register, change requests, their events, calendar feeds.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, Tx};
use crate::{on_pool, on_tx};

// ---------------------------------------------------------------- systems

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct System {
    pub key: String,
    pub name: String,
    pub owner_department: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub async fn insert_system(
    tx: &mut Tx,
    key: &str,
    name: &str,
    dept: &str,
    now: DateTime<Utc>,
) -> Result<System> {
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, System>(
        "INSERT INTO systems (key, name, owner_department, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $4) RETURNING key, name, owner_department, created_at, updated_at"
    )
    .bind(key)
    .bind(name)
    .bind(dept)
    .bind(now)
    .fetch_one(c)
    .await)?)
}

pub async fn update_system(
    tx: &mut Tx,
    key: &str,
    name: Option<&str>,
    dept: Option<&str>,
    now: DateTime<Utc>,
) -> Result<System> {
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, System>(
        "UPDATE systems SET name = COALESCE($2, name), \
         owner_department = COALESCE($3, owner_department), updated_at = $4 WHERE key = $1 \
         RETURNING key, name, owner_department, created_at, updated_at"
    )
    .bind(key)
    .bind(name)
    .bind(dept)
    .bind(now)
    .fetch_one(c)
    .await)?)
}

pub async fn list_systems(db: &Db) -> Result<Vec<System>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, System>(
        "SELECT key, name, owner_department, created_at, updated_at FROM systems ORDER BY key"
    )
    .fetch_all(p)
    .await)?)
}

/// The keys among `keys` that exist.
pub async fn existing_systems(tx: &mut Tx, keys: &[String]) -> Result<Vec<String>> {
    let mut found = Vec::new();
    for k in keys {
        let hit = on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
            "SELECT key FROM systems WHERE key = $1"
        )
        .bind(k)
        .fetch_optional(c)
        .await)?;
        found.extend(hit);
    }
    Ok(found)
}

// ---------------------------------------------------------------- change requests

/// A stored change request, with the names of its people.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChangeRow {
    pub id: i64,
    pub title: String,
    pub category: String,
    pub action: Option<String>,
    pub systems: String,
    pub description: String,
    pub impact: Option<String>,
    pub risk: String,
    pub rollback_plan: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub requester_id: i64,
    pub requester_username: String,
    pub requester_name: String,
    pub assignee_id: i64,
    pub assignee_username: String,
    pub assignee_name: String,
    pub emergency: bool,
    pub justification: Option<String>,
    pub status: String,
    pub notified_at: DateTime<Utc>,
    pub notified_on: String,
    pub earliest_start: Option<String>,
    pub approved_by: Option<i64>,
    pub approved_at: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub completion_notes: Option<String>,
    pub review_notes: Option<String>,
    pub reviewed_by: Option<i64>,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Rescheduling or amending starts a new round; only its decisions count.
    pub approval_round: i64,
    /// JSON: the stages of this round (`policy::Stage`); `None` for a change filed before
    /// graded approval (its stages come from the policy in force).
    pub approval_plan: Option<String>,
    /// When the current stage began waiting.
    pub stage_since: Option<DateTime<Utc>>,
    /// The standard-change template that approved it at filing.
    pub standard_change: Option<String>,
}

macro_rules! change_select {
    () => {
        "SELECT c.id, c.title, c.category, c.action, c.systems, c.description, c.impact, c.risk, \
         c.rollback_plan, c.planned_start, c.planned_end, c.requester_id, \
         ru.username AS requester_username, ru.display_name AS requester_name, c.assignee_id, \
         au.username AS assignee_username, au.display_name AS assignee_name, c.emergency, \
         c.justification, c.status, c.notified_at, c.notified_on, c.earliest_start, c.approved_by, \
         c.approved_at, c.started_at, c.completed_at, c.outcome, c.completion_notes, \
         c.review_notes, c.reviewed_by, c.reviewed_at, c.created_at, c.updated_at, \
         c.approval_round, c.approval_plan, c.stage_since, c.standard_change \
         FROM change_requests c JOIN users ru ON ru.id = c.requester_id \
         JOIN users au ON au.id = c.assignee_id"
    };
}

pub struct NewChange<'a> {
    pub title: &'a str,
    pub category: &'a str,
    pub action: Option<&'a str>,
    pub systems: &'a [String],
    pub description: &'a str,
    pub impact: Option<&'a str>,
    pub risk: &'a str,
    pub rollback_plan: &'a str,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
    pub requester_id: i64,
    pub assignee_id: i64,
    pub emergency: bool,
    pub justification: Option<&'a str>,
    pub notified_at: DateTime<Utc>,
    pub notified_on: &'a str,
    pub earliest_start: Option<&'a str>,
    /// JSON: the stages of the first approval round.
    pub approval_plan: &'a str,
    pub standard_change: Option<&'a str>,
}

pub async fn insert_change(tx: &mut Tx, n: &NewChange<'_>) -> Result<i64> {
    let systems = serde_json::to_string(n.systems).unwrap_or_else(|_| "[]".into());
    let id = on_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO change_requests (title, category, action, systems, description, impact, risk, \
         rollback_plan, planned_start, planned_end, requester_id, assignee_id, emergency, \
         justification, status, notified_at, notified_on, earliest_start, created_at, updated_at, \
         approval_plan, stage_since, standard_change) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'submitted', $15, \
         $16, $17, $15, $15, $18, $15, $19) RETURNING id"
    )
    .bind(n.title)
    .bind(n.category)
    .bind(n.action)
    .bind(&systems)
    .bind(n.description)
    .bind(n.impact)
    .bind(n.risk)
    .bind(n.rollback_plan)
    .bind(n.planned_start)
    .bind(n.planned_end)
    .bind(n.requester_id)
    .bind(n.assignee_id)
    .bind(n.emergency)
    .bind(n.justification)
    .bind(n.notified_at)
    .bind(n.notified_on)
    .bind(n.earliest_start)
    .bind(n.approval_plan)
    .bind(n.standard_change)
    .fetch_one(c)
    .await
    })?;
    for key in n.systems {
        on_tx!(tx, |c| sqlx::query(
            "INSERT INTO change_systems (change_id, system_key) VALUES ($1, $2)"
        )
        .bind(id)
        .bind(key)
        .execute(c)
        .await
        .map(|_| ()))?;
    }
    Ok(id)
}

pub async fn get_change(db: &Db, id: i64) -> Result<ChangeRow> {
    let sql = concat!(change_select!(), " WHERE c.id = $1");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

/// The open changes (submitted, approved, in progress) touching `system`, oldest start first:
/// what the admission gate weighs, read in the transaction that audits its decision.
pub async fn open_on_system(tx: &mut Tx, system: &str) -> Result<Vec<ChangeRow>> {
    let sql = concat!(
        change_select!(),
        " JOIN change_systems cs ON cs.change_id = c.id WHERE cs.system_key = $1 \
         AND c.status IN ('submitted', 'approved', 'in_progress') \
         ORDER BY CASE c.status WHEN 'in_progress' THEN 0 WHEN 'approved' THEN 1 ELSE 2 END, \
         c.planned_start, c.id LIMIT 200"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(system)
        .fetch_all(c)
        .await)?)
}

/// Approved or running changes touching `system` whose windows overlap `[from, to)`.
pub async fn windows_on_system(
    db: &Db,
    system: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<ChangeRow>> {
    let sql = concat!(
        change_select!(),
        " JOIN change_systems cs ON cs.change_id = c.id WHERE cs.system_key = $1 \
         AND c.status IN ('approved', 'in_progress') AND c.planned_start < $3 \
         AND c.planned_end > $2 ORDER BY c.planned_start, c.id LIMIT 1000"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(system)
        .bind(from)
        .bind(to)
        .fetch_all(p)
        .await)?)
}

/// The change of `system` whose window holds `at` and that was approved or running then
/// (a completed change counts for the window it ran in): where a reported event belongs.
pub async fn change_at(tx: &mut Tx, system: &str, at: DateTime<Utc>) -> Result<Option<ChangeRow>> {
    let sql = concat!(
        change_select!(),
        " JOIN change_systems cs ON cs.change_id = c.id WHERE cs.system_key = $1 \
         AND c.status IN ('in_progress', 'completed') AND c.planned_start <= $2 \
         AND c.planned_end > $2 AND c.started_at IS NOT NULL AND c.started_at <= $2 \
         AND (c.completed_at IS NULL OR c.completed_at >= $2) ORDER BY c.id LIMIT 1"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(system)
        .bind(at)
        .fetch_optional(c)
        .await)?)
}

/// Reads a change inside a write transaction, locking its row on PostgreSQL.
pub async fn get_change_for_update(tx: &mut Tx, id: i64) -> Result<ChangeRow> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(change_select!(), " WHERE c.id = $1 FOR UPDATE OF c"),
        Backend::Sqlite => concat!(change_select!(), " WHERE c.id = $1"),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

#[derive(Debug, Default)]
pub struct ChangeFilter<'a> {
    pub status: Option<&'a str>,
    pub category: Option<&'a str>,
    pub system: Option<&'a str>,
    /// The requester's username.
    pub requester: Option<&'a str>,
    /// The assignee's username.
    pub assignee: Option<&'a str>,
    pub risk: Option<&'a str>,
    pub emergency: Option<bool>,
    /// Words in the title or the description (case-insensitive, taken literally).
    pub text: Option<&'a str>,
    /// Windows ending after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Windows starting before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Windows starting at or after this instant (index bound for calendar ranges).
    pub start_after: Option<DateTime<Utc>>,
    pub sort: ChangeOrder,
    pub limit: i64,
    pub offset: i64,
}

/// The orders a change list can be read in (a closed set: each is a fixed SQL clause).
#[derive(
    Debug,
    Default,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ChangeOrder {
    /// Planned start, earliest first.
    #[default]
    Start,
    /// Planned start, latest first.
    StartDesc,
    /// Filing time, newest first.
    Filed,
    /// Last change of any field, newest first.
    Updated,
}

/// `%words%` for LIKE with `\` as the escape, the words lower-cased and taken literally.
fn contains_pattern(words: &str) -> String {
    let mut p = String::with_capacity(words.len() + 2);
    p.push('%');
    for ch in words.trim().to_lowercase().chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

/// The list query in one order (each a literal statement: the order is a closed set).
macro_rules! list_sql {
    ($order:literal) => {
        concat!(
            change_select!(),
            " WHERE ($1 IS NULL OR c.status = $1) AND ($2 IS NULL OR c.category = $2) \
             AND ($3 IS NULL OR EXISTS (SELECT 1 FROM change_systems s WHERE s.change_id = c.id \
             AND s.system_key = $3)) AND ($4 IS NULL OR c.planned_end > $4) \
             AND ($5 IS NULL OR c.planned_start < $5) AND ($6 IS NULL OR c.planned_start >= $6) \
             AND ($9 IS NULL OR ru.username = $9) AND ($10 IS NULL OR au.username = $10) \
             AND ($11 IS NULL OR c.risk = $11) AND ($12 IS NULL OR c.emergency = $12) \
             AND ($13 IS NULL OR LOWER(c.title) LIKE $13 ESCAPE '\\' \
                  OR LOWER(c.description) LIKE $13 ESCAPE '\\') ORDER BY ",
            $order,
            " LIMIT $7 OFFSET $8"
        )
    };
}

pub async fn list_changes(db: &Db, f: &ChangeFilter<'_>) -> Result<Vec<ChangeRow>> {
    let sql = match f.sort {
        ChangeOrder::Start => list_sql!("c.planned_start, c.id"),
        ChangeOrder::StartDesc => list_sql!("c.planned_start DESC, c.id DESC"),
        ChangeOrder::Filed => list_sql!("c.created_at DESC, c.id DESC"),
        ChangeOrder::Updated => list_sql!("c.updated_at DESC, c.id DESC"),
    };
    let text = f
        .text
        .filter(|t| !t.trim().is_empty())
        .map(contains_pattern);
    Ok(on_pool!(db, |p| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(f.status)
        .bind(f.category)
        .bind(f.system)
        .bind(f.from)
        .bind(f.to)
        .bind(f.start_after)
        .bind(f.limit)
        .bind(f.offset)
        .bind(f.requester)
        .bind(f.assignee)
        .bind(f.risk)
        .bind(f.emergency)
        .bind(text.as_deref())
        .fetch_all(p)
        .await)?)
}

/// Changes whose windows overlap `[from, to)` and start at or after `start_after` (the
/// calendar's range widened by the longest window), in start order. Plain range conditions,
/// so the `planned_start` index bounds the scan on both backends whatever the plan (the
/// `$n IS NULL OR …` filters of [`list_changes`] cannot use it in a generic plan).
pub async fn list_window(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    start_after: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ChangeRow>> {
    let sql = concat!(
        change_select!(),
        " WHERE c.planned_start >= $1 AND c.planned_start < $2 AND c.planned_end > $3 \
         ORDER BY c.planned_start, c.id LIMIT $4"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, ChangeRow>(sql)
        .bind(start_after)
        .bind(to)
        .bind(from)
        .bind(limit)
        .fetch_all(p)
        .await)?)
}

/// A change as the calendar shows it: only the columns it needs, no joins.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CalendarRow {
    pub id: i64,
    pub title: String,
    pub category: String,
    pub status: String,
    pub emergency: bool,
    /// JSON array of system keys.
    pub systems: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
}

/// [`list_window`] for the calendar: the same rows (same index-bounded conditions), slim.
pub async fn calendar_window(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    start_after: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<CalendarRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, CalendarRow>(
        "SELECT c.id, c.title, c.category, c.status, c.emergency, c.systems, c.planned_start, \
         c.planned_end FROM change_requests c \
         WHERE c.planned_start >= $1 AND c.planned_start < $2 AND c.planned_end > $3 \
         ORDER BY c.planned_start, c.id LIMIT $4"
    )
    .bind(start_after)
    .bind(to)
    .bind(from)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

/// A change whose window overlaps another's on a shared system.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub id: i64,
    pub title: String,
    pub status: String,
    pub planned_start: DateTime<Utc>,
    pub planned_end: DateTime<Utc>,
}

/// Open changes on a system of change `id` whose windows overlap `[start, end)`.
pub async fn conflicts(
    db: &Db,
    id: i64,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<Vec<Conflict>> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, Conflict>(
        "SELECT c.id, c.title, c.status, c.planned_start, c.planned_end FROM change_requests c \
         WHERE c.id <> $1 AND c.status IN ('submitted', 'approved', 'in_progress') \
         AND c.planned_start < $3 AND c.planned_end > $2 AND EXISTS (SELECT 1 FROM change_systems s \
         JOIN change_systems mine ON mine.system_key = s.system_key AND mine.change_id = $1 \
         WHERE s.change_id = c.id) ORDER BY c.planned_start, c.id"
    )
    .bind(id)
    .bind(start)
    .bind(end)
    .fetch_all(p)
    .await
    })?)
}

/// Conflicts of several changes at once: (change id, conflicting change), one query.
pub async fn conflicts_of(db: &Db, ids: &[i64]) -> Result<Vec<(i64, Conflict)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        of_id: i64,
        #[sqlx(flatten)]
        conflict: Conflict,
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Only numbered placeholders are generated; the values are bound.
    let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT DISTINCT me.id AS of_id, c.id, c.title, c.status, c.planned_start, c.planned_end \
         FROM change_requests me JOIN change_systems ms ON ms.change_id = me.id \
         JOIN change_systems os ON os.system_key = ms.system_key AND os.change_id <> me.id \
         JOIN change_requests c ON c.id = os.change_id \
         WHERE me.id IN ({}) AND c.status IN ('submitted', 'approved', 'in_progress') \
         AND c.planned_start < me.planned_end AND c.planned_end > me.planned_start \
         ORDER BY me.id, c.planned_start, c.id",
        placeholders.join(", ")
    );
    let rows = on_pool!(db, |p| {
        let mut q = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql.clone()));
        for id in ids {
            q = q.bind(*id);
        }
        q.fetch_all(p).await
    })?;
    Ok(rows.into_iter().map(|r| (r.of_id, r.conflict)).collect())
}

/// Fields a transition or a reschedule writes; `None` keeps the value.
#[derive(Debug, Default)]
pub struct ChangeUpdate<'a> {
    pub status: Option<&'a str>,
    pub title: Option<&'a str>,
    pub action: Option<&'a str>,
    pub description: Option<&'a str>,
    pub impact: Option<&'a str>,
    pub risk: Option<&'a str>,
    pub rollback_plan: Option<&'a str>,
    pub planned_start: Option<DateTime<Utc>>,
    pub planned_end: Option<DateTime<Utc>>,
    pub assignee_id: Option<i64>,
    pub justification: Option<&'a str>,
    pub earliest_start: Option<&'a str>,
    /// (who approved the last stage, when); nobody for a standard change.
    pub approved: Option<(Option<i64>, DateTime<Utc>)>,
    /// Clears the approval (a rescheduled change goes back to `submitted`): a new approval
    /// round begins with `new_plan` (JSON stages) and its first stage waits from now.
    pub clear_approval: bool,
    pub new_plan: Option<&'a str>,
    /// The current stage waits from now (the previous one completed).
    pub stage_advanced: bool,
    pub started_at: Option<DateTime<Utc>>,
    pub completed: Option<(DateTime<Utc>, &'a str, &'a str)>,
    pub reviewed: Option<(i64, DateTime<Utc>, &'a str)>,
}

pub async fn update_change(
    tx: &mut Tx,
    id: i64,
    u: &ChangeUpdate<'_>,
    now: DateTime<Utc>,
) -> Result<()> {
    let (approved_by, approved_at) = u.approved.map_or((None, None), |(b, a)| (b, Some(a)));
    let (completed_at, outcome, notes) = u
        .completed
        .map_or((None, None, None), |(a, o, n)| (Some(a), Some(o), Some(n)));
    let (reviewed_by, reviewed_at, review_notes) = u
        .reviewed
        .map_or((None, None, None), |(b, a, n)| (Some(b), Some(a), Some(n)));
    on_tx!(tx, |c| {
        sqlx::query(
        "UPDATE change_requests SET status = COALESCE($2, status), title = COALESCE($3, title), \
         action = COALESCE($4, action), description = COALESCE($5, description), \
         impact = COALESCE($6, impact), risk = COALESCE($7, risk), \
         rollback_plan = COALESCE($8, rollback_plan), planned_start = COALESCE($9, planned_start), \
         planned_end = COALESCE($10, planned_end), assignee_id = COALESCE($11, assignee_id), \
         justification = COALESCE($12, justification), earliest_start = COALESCE($13, earliest_start), \
         approved_by = CASE WHEN $14 THEN NULL ELSE COALESCE($15, approved_by) END, \
         approved_at = CASE WHEN $14 THEN NULL ELSE COALESCE($16, approved_at) END, \
         started_at = COALESCE($17, started_at), completed_at = COALESCE($18, completed_at), \
         outcome = COALESCE($19, outcome), completion_notes = COALESCE($20, completion_notes), \
         reviewed_by = COALESCE($21, reviewed_by), reviewed_at = COALESCE($22, reviewed_at), \
         review_notes = COALESCE($23, review_notes), updated_at = $24, \
         approval_round = approval_round + CASE WHEN $14 THEN 1 ELSE 0 END, \
         approval_plan = COALESCE($25, approval_plan), \
         stage_since = CASE WHEN $14 OR $26 THEN $24 ELSE stage_since END WHERE id = $1"
    )
    .bind(id)
    .bind(u.status)
    .bind(u.title)
    .bind(u.action)
    .bind(u.description)
    .bind(u.impact)
    .bind(u.risk)
    .bind(u.rollback_plan)
    .bind(u.planned_start)
    .bind(u.planned_end)
    .bind(u.assignee_id)
    .bind(u.justification)
    .bind(u.earliest_start)
    .bind(u.clear_approval)
    .bind(approved_by)
    .bind(approved_at)
    .bind(u.started_at)
    .bind(completed_at)
    .bind(outcome)
    .bind(notes)
    .bind(reviewed_by)
    .bind(reviewed_at)
    .bind(review_notes)
    .bind(now)
    .bind(u.new_plan)
    .bind(u.stage_advanced)
    .execute(c)
    .await
    .map(|_| ())
    })?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Event {
    pub id: i64,
    pub from_status: Option<String>,
    pub to_status: String,
    pub actor_id: Option<i64>,
    pub actor: Option<String>,
    pub at: DateTime<Utc>,
    pub comment: Option<String>,
}

pub async fn insert_event(
    tx: &mut Tx,
    change_id: i64,
    from: Option<&str>,
    to: &str,
    actor_id: Option<i64>,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO change_events (change_id, from_status, to_status, actor_id, at, comment) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(change_id)
    .bind(from)
    .bind(to)
    .bind(actor_id)
    .bind(now)
    .bind(comment)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub async fn events(db: &Db, change_id: i64) -> Result<Vec<Event>> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, Event>(
        "SELECT e.id, e.from_status, e.to_status, e.actor_id, u.username AS actor, e.at, e.comment \
         FROM change_events e LEFT JOIN users u ON u.id = e.actor_id WHERE e.change_id = $1 ORDER BY e.id"
    )
    .bind(change_id)
    .fetch_all(p)
    .await
    })?)
}

/// Approved changes whose window ended before `now`.
pub async fn overdue_approved(db: &Db, now: DateTime<Utc>) -> Result<Vec<i64>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT id FROM change_requests WHERE status = 'approved' AND planned_end <= $1 ORDER BY id"
    )
    .bind(now)
    .fetch_all(p)
    .await)?)
}

/// Changes in progress past their planned end whose assignee and management were not told of
/// that planned end yet.
pub async fn overdue_in_progress(db: &Db, now: DateTime<Utc>) -> Result<Vec<i64>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT id FROM change_requests WHERE status = 'in_progress' AND planned_end <= $1 \
         AND (overdue_notified_for IS NULL OR overdue_notified_for <> planned_end) ORDER BY id"
    )
    .bind(now)
    .fetch_all(p)
    .await)?)
}

/// Records that the change's present planned end was told as overdue; false if it is not
/// overdue (any more) or another instance told it first.
pub async fn mark_overdue_notified(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "UPDATE change_requests SET overdue_notified_for = planned_end WHERE id = $1 \
         AND status = 'in_progress' AND planned_end <= $2 \
         AND (overdue_notified_for IS NULL OR overdue_notified_for <> planned_end)"
    )
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// (category, status, outcome, emergency, count) of changes planned to start in `[from, to)`.
pub async fn counts(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, String, Option<String>, bool, i64)>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<
        _,
        (String, String, Option<String>, bool, i64),
    >(
        "SELECT category, status, outcome, emergency, COUNT(*) FROM change_requests \
         WHERE planned_start >= $1 AND planned_start < $2 \
         GROUP BY category, status, outcome, emergency ORDER BY category, status"
    )
    .bind(from)
    .bind(to)
    .fetch_all(p)
    .await)?)
}

/// Each change planned to start in `[from, to)`: its start, category, emergency flag and
/// outcome (for the weekly figures of the reports page).
pub async fn starts(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, String, bool, Option<String>)>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<
        _,
        (DateTime<Utc>, String, bool, Option<String>),
    >(
        "SELECT planned_start, category, emergency, outcome FROM change_requests \
         WHERE planned_start >= $1 AND planned_start < $2 ORDER BY planned_start"
    )
    .bind(from)
    .bind(to)
    .fetch_all(p)
    .await)?)
}

/// When each refusal with `code` in `[from, to)` was recorded.
pub async fn refusal_times(
    db: &Db,
    code: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, DateTime<Utc>>(
        "SELECT at FROM audit_log WHERE code = $1 AND at >= $2 AND at < $3"
    )
    .bind(code)
    .bind(from)
    .bind(to)
    .fetch_all(p)
    .await)?)
}

/// Refusals with `code` recorded in the audit trail in `[from, to)`.
pub async fn refusals(db: &Db, code: &str, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<i64> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM audit_log WHERE code = $1 AND at >= $2 AND at < $3"
    )
    .bind(code)
    .bind(from)
    .bind(to)
    .fetch_one(p)
    .await)?)
}

// ---------------------------------------------------------------- calendar feeds

pub async fn set_feed(
    tx: &mut Tx,
    user_id: i64,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO calendar_feeds (user_id, token_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at"
    )
    .bind(user_id)
    .bind(token_hash)
    .bind(now)
    .execute(c)
    .await
    .map(|_| ())
    })?;
    Ok(())
}

pub async fn delete_feed(tx: &mut Tx, user_id: i64) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "DELETE FROM calendar_feeds WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// The user whose feed token hashes to `token_hash`.
pub async fn feed_user(db: &Db, token_hash: &str) -> Result<Option<i64>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT user_id FROM calendar_feeds WHERE token_hash = $1"
    )
    .bind(token_hash)
    .fetch_optional(p)
    .await)?)
}
