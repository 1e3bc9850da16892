//! Change requests (the upgrade notices of Art. 20 and the permissions of Art. 19): filing with
//! the notice rule, the life cycle, emergencies, freeze windows, conflicts.
//!
//! Every command runs in one transaction: the state change, its event and its audit entry
//! commit together. A refusal changes nothing (the HTTP gate records it in the audit trail).

pub mod agenda;
pub mod approval;
pub mod delegations;
pub mod report;
pub mod rules;
pub mod systems;
pub mod views;
pub mod words;

mod amend;
mod filing;
mod lifecycle;
mod nudges;
mod stages;

pub use amend::*;
pub use filing::*;
pub use lifecycle::*;
pub use nudges::nudge_waiting;
pub use stages::may_decide_now;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::App;
use crate::audit::Entry;
use crate::calendar::CalendarError;
use crate::db::StoreError;
use crate::db::changes::{self as db, ChangeRow, ChangeUpdate, NewChange};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::{ChangeFacts, Facts, Principal, Resource};
use crate::text::{self, Lines};
use rules::{NoticeRefusal, Status, Step};
pub use views::{ChangeView, UserRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
    RolledBack,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
        }
    }
}

/// A new change request. The notice time is the server's clock: a client cannot set it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileChange {
    pub title: String,
    /// `software_upgrade`, `hardware`, `database`, `debugging` (policies/change-policy.toml).
    pub category: String,
    /// Required for categories with actions (hardware: connect/remove/install/replace;
    /// database: insert/update/delete/schema).
    pub action: Option<String>,
    /// Keys of the systems register.
    pub systems: Vec<String>,
    pub description: String,
    pub impact: Option<String>,
    pub risk: Risk,
    pub rollback_plan: String,
    /// RFC 3339 with offset.
    pub planned_start: DateTime<chrono::FixedOffset>,
    pub planned_end: DateTime<chrono::FixedOffset>,
    /// Username of the operator who carries it out (must hold change.execute); default: the requester.
    pub assignee: Option<String>,
    #[serde(default)]
    pub emergency: bool,
    /// Required for emergencies.
    pub justification: Option<String>,
}

/// Rescheduling and amending. Category and systems cannot change: file a new request.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AmendChange {
    pub title: Option<String>,
    pub action: Option<String>,
    pub description: Option<String>,
    pub impact: Option<String>,
    pub risk: Option<Risk>,
    pub rollback_plan: Option<String>,
    pub planned_start: Option<DateTime<chrono::FixedOffset>>,
    pub planned_end: Option<DateTime<chrono::FixedOffset>>,
    pub assignee: Option<String>,
    pub justification: Option<String>,
    /// Refused: file a new request.
    #[schema(value_type = Option<String>)]
    pub category: Option<Value>,
    /// Refused: file a new request.
    #[schema(value_type = Option<Vec<String>>)]
    pub systems: Option<Value>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> Error {
    Error::invalid(code, message)
}

fn not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound { what: "change" },
        other => other.into(),
    }
}

/// A line of a change's timeline, and the email notices it causes.
struct Line<'a> {
    id: i64,
    from: Option<&'a str>,
    to: &'a str,
    actor: Option<i64>,
    comment: Option<&'a str>,
    /// The event of policies/notifications.toml whose notices go into the outbox.
    notice: Option<&'static str>,
}

/// The end of every command: the timeline line, the audit entry, the email notices (outbox
/// rows), and the commit; then the sender is woken.
async fn record(
    app: &App,
    mut tx: Deed<'_>,
    line: Line<'_>,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<()> {
    let Line {
        id,
        from,
        to,
        actor,
        comment,
        notice,
    } = line;
    db::insert_event(&mut tx, id, from, to, actor, comment, now).await?;
    if let Some(event) = notice {
        crate::notify::enqueue_change(app, &mut tx, id, event, comment, now).await?;
    }
    tx.commit(entry, now).await?;
    Ok(())
}

/// One change with its conflicts.
pub async fn get(app: &App, id: i64) -> Result<ChangeView> {
    let row = db::get_change(&app.db, id).await.map_err(not_found)?;
    let conflicts = db::conflicts(&app.db, row.id, row.planned_start, row.planned_end).await?;
    let decisions: Vec<_> = crate::db::approvals::decisions_of(&app.db, &[id])
        .await?
        .into_iter()
        .map(stages::decision_of)
        .collect();
    let approval = stages::approval_view(app, &row, &decisions)?;
    Ok(ChangeView::from_row(row, conflicts, approval, app.now()))
}

/// Changes matching `filter`, each with its conflicts (one query for all of them).
pub async fn list(app: &App, filter: &db::ChangeFilter<'_>) -> Result<Vec<ChangeView>> {
    let rows = db::list_changes(&app.db, filter).await?;
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let mut conflicts: std::collections::HashMap<i64, Vec<db::Conflict>> =
        std::collections::HashMap::new();
    for (of, c) in db::conflicts_of(&app.db, &ids).await? {
        conflicts.entry(of).or_default().push(c);
    }
    let mut decisions: std::collections::HashMap<i64, Vec<approval::StageDecision>> =
        std::collections::HashMap::new();
    for d in crate::db::approvals::decisions_of(&app.db, &ids).await? {
        decisions
            .entry(d.change_id)
            .or_default()
            .push(stages::decision_of(d));
    }
    let now = app.now();
    rows.into_iter()
        .map(|r| {
            let c = conflicts.remove(&r.id).unwrap_or_default();
            let d = decisions.remove(&r.id).unwrap_or_default();
            let approval = stages::approval_view(app, &r, &d)?;
            Ok(ChangeView::from_row(r, c, approval, now))
        })
        .collect()
}

/// Changes matching `filter`, taken out of the service as a file (`format`: `csv` or `xlsx`).
/// The register leaving the service is a deed: the audit trail says who took how many rows, in
/// which form, and by which filter ([`export_filter`]).
pub async fn export(
    app: &App,
    who: &Principal,
    filter: &db::ChangeFilter<'_>,
    format: &'static str,
) -> Result<Vec<ChangeView>> {
    let found = list(app, filter).await?;
    let now = app.now();
    let tx = Deed::open(app).await?;
    let entry = Entry::by(who, "change.export", None).with_details(json!({
        "format": format,
        "rows": found.len(),
        "filter": export_filter(filter),
    }));
    tx.commit(&entry, now).await?;
    Ok(found)
}

/// The filter an export applied, as the audit trail keeps it: the effective values (each at
/// most 200 characters), and of the free-text search only whether there was one (it may hold a
/// customer's name, which a permanent trail should not).
fn export_filter(f: &db::ChangeFilter<'_>) -> Value {
    let short = |v: Option<&str>| v.map(|v| v.chars().take(200).collect::<String>());
    let mut m = Map::new();
    for (name, value) in [
        ("status", short(f.status)),
        ("category", short(f.category)),
        ("system", short(f.system)),
        ("requester", short(f.requester)),
        ("assignee", short(f.assignee)),
        ("risk", short(f.risk)),
    ] {
        if let Some(v) = value {
            m.insert(name.into(), Value::from(v));
        }
    }
    if let Some(e) = f.emergency {
        m.insert("emergency".into(), Value::from(e));
    }
    if let Some(from) = f.from {
        m.insert("from".into(), Value::from(from.to_rfc3339()));
    }
    if let Some(to) = f.to {
        m.insert("to".into(), Value::from(to.to_rfc3339()));
    }
    m.insert("text_search".into(), Value::from(f.text.is_some()));
    m.insert("sort".into(), json!(f.sort));
    Value::Object(m)
}
