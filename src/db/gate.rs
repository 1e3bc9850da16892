//! What tools report about changes on the systems (`gate_events`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, Result, Tx};
use crate::{on_pool, on_tx};

/// A reported event; `change_id` null: an unauthorized change (违规变更).
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct GateEvent {
    pub id: i64,
    pub system_key: String,
    pub kind: String,
    pub summary: String,
    pub source: String,
    pub occurred_at: DateTime<Utc>,
    pub change_id: Option<i64>,
    pub reported_by: i64,
    pub created_at: DateTime<Utc>,
}

macro_rules! event_cols {
    () => {
        "id, system_key, kind, summary, source, occurred_at, change_id, reported_by, created_at"
    };
}

pub struct NewGateEvent<'a> {
    pub system_key: &'a str,
    pub kind: &'a str,
    pub summary: &'a str,
    pub source: &'a str,
    pub occurred_at: DateTime<Utc>,
    pub change_id: Option<i64>,
    pub reported_by: i64,
}

pub async fn insert(tx: &mut Tx, e: &NewGateEvent<'_>, now: DateTime<Utc>) -> Result<GateEvent> {
    let sql = concat!(
        "INSERT INTO gate_events (system_key, kind, summary, source, occurred_at, change_id, \
         reported_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ",
        event_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, GateEvent>(sql)
        .bind(e.system_key)
        .bind(e.kind)
        .bind(e.summary)
        .bind(e.source)
        .bind(e.occurred_at)
        .bind(e.change_id)
        .bind(e.reported_by)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

/// Events that occurred in `[from, to)`, oldest first; `unauthorized_only` keeps those with
/// no change.
pub async fn between(
    db: &Db,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    unauthorized_only: bool,
) -> Result<Vec<GateEvent>> {
    let sql = concat!(
        "SELECT ",
        event_cols!(),
        " FROM gate_events WHERE occurred_at >= $1 AND occurred_at < $2 \
         AND (change_id IS NULL OR NOT $3) ORDER BY occurred_at, id LIMIT 5000"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, GateEvent>(sql)
        .bind(from)
        .bind(to)
        .bind(unauthorized_only)
        .fetch_all(p)
        .await)?)
}
