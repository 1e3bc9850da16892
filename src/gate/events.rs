//! What tools that detect or perform changes report (a deployment log, a database audit, a
//! configuration scanner): an event on a system is matched to the change running on it at that
//! time, and recorded on that change's timeline; with none, it is an **unauthorized change**
//! (违规变更): audited, e-mailed to management and compliance, shown on the calendar and counted
//! in the report.

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::audit::Entry;
use crate::db::changes as change_db;
use crate::db::gate::{self as db, GateEvent, NewGateEvent};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::notify::{self, Bulletin, Parties};
use crate::rbac::Principal;
use crate::text::{self, Lines};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportEvent {
    pub system: String,
    /// What happened, e.g. `deploy`, `db_write`, `config_change`.
    pub kind: String,
    pub summary: String,
    /// RFC 3339; not in the future.
    pub occurred_at: DateTime<Utc>,
    /// The tool that saw it, e.g. `gitlab:core-banking/deploy#812`.
    pub source: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Reported {
    #[serde(flatten)]
    pub event: GateEvent,
    /// True when no change was running on the system then.
    pub unauthorized: bool,
}

/// How far ahead of the server's clock a tool's clock may be.
const CLOCK_SKEW: TimeDelta = TimeDelta::minutes(5);

pub async fn report(app: &App, who: &Principal, req: ReportEvent) -> Result<Reported> {
    text::required("system", &req.system, 64, Lines::One)?;
    text::required("kind", &req.kind, 64, Lines::One)?;
    text::required("summary", &req.summary, 2000, Lines::Many)?;
    text::required("source", &req.source, 200, Lines::One)?;
    let now = app.now();
    if req.occurred_at > now + CLOCK_SKEW {
        return Err(Error::invalid(
            "occurred_in_future",
            "occurred_at 不能晚于现在 / occurred_at may not be in the future",
        ));
    }
    let system = req.system.trim();
    let mut tx = Deed::open(app).await?;
    if change_db::existing_systems(&mut tx, &[system.to_string()])
        .await?
        .is_empty()
    {
        return Err(Error::invalid(
            "unknown_system",
            format!("系统登记中没有 {system} / No system {system} in the register"),
        ));
    }
    let matched = change_db::change_at(&mut tx, system, req.occurred_at).await?;
    let event = db::insert(
        &mut tx,
        &NewGateEvent {
            system_key: system,
            kind: req.kind.trim(),
            summary: req.summary.trim(),
            source: req.source.trim(),
            occurred_at: req.occurred_at,
            change_id: matched.as_ref().map(|c| c.id),
            reported_by: who.user_id,
        },
        now,
    )
    .await?;
    let details = json!({
        "event_id": event.id, "system": system, "kind": event.kind, "source": event.source,
        "occurred_at": event.occurred_at,
    });
    let tz = app.policies.change.timezone;
    let when = event
        .occurred_at
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M");
    let entry = match &matched {
        Some(c) => {
            let line = format!(
                "工具报告 / reported by {}: {} — {}",
                event.source, event.kind, event.summary
            );
            change_db::insert_event(
                &mut tx,
                c.id,
                Some(&c.status),
                &c.status,
                Some(who.user_id),
                Some(&line),
                now,
            )
            .await?;
            Entry::by(who, "gate.event", format!("change:{}", c.id)).with_details(details)
        }
        None => {
            let notice = Bulletin::new(
                app,
                &format!("违规变更：系统 {system} 上发生了无已批准变更的操作"),
                &format!("Unauthorized change: {system} was changed with no approved change"),
            )
            .fact(app, "系统", "System", system)
            .fact(app, "操作", "What", &event.kind)
            .fact(app, "发生时间", "When", when)
            .fact(app, "来源", "Source", &event.source)
            .fact(app, "报告者", "Reported by", who.actor_name())
            .comment(Some(&event.summary))
            .link(app, "/api/v1/gate/events?unauthorized=true");
            notify::enqueue_bulletin(
                app,
                &mut tx,
                "unauthorized_change",
                Parties::default(),
                &notice,
                now,
            )
            .await?;
            let mut e = Entry::by(who, "gate.unauthorized_change", format!("system:{system}"))
                .with_details(details);
            e.code = Some("unauthorized_change".into());
            e
        }
    };
    tx.commit(&entry, now).await?;
    Ok(Reported {
        unauthorized: event.change_id.is_none(),
        event,
    })
}

/// Longest range `GET /gate/events` answers.
pub const MAX_RANGE_DAYS: i64 = 366;

/// Reported events of the bank days `from` to `to` (inclusive).
pub async fn list(
    app: &App,
    from: NaiveDate,
    to: NaiveDate,
    unauthorized_only: bool,
) -> Result<Vec<GateEvent>> {
    if to < from || (to - from).num_days() >= MAX_RANGE_DAYS {
        return Err(Error::BadRequest {
            code: "invalid_range",
            message: format!(
                "to 须不早于 from，且范围不超过 {MAX_RANGE_DAYS} 天 / to must not be before from, and the range may not exceed {MAX_RANGE_DAYS} days"
            ),
        });
    }
    let tz = app.policies.change.timezone;
    let start = crate::changes::rules::start_of_day(from, tz)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no midnight on {from}")))?;
    let end = crate::changes::rules::start_of_day(to + TimeDelta::days(1), tz)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no midnight after {to}")))?;
    Ok(db::between(&app.db, start, end, unauthorized_only).await?)
}
