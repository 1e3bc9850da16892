//! The admission gate: where a pipeline, a deployment tool or a database script asks before it
//! acts on a production system. It admits only while an approved change of that system is in
//! progress inside its planned window (and no freeze forbids it), and then hands out a signed
//! admission ([`admission`]) that the place of the change verifies offline. Every check,
//! admitted or refused, is one audit entry.

pub mod admission;
pub mod events;
pub mod rules;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::audit::{Entry, Outcome};
use crate::calendar::DayInfo;
use crate::changes::rules::{Status, notice_date};
use crate::db::CorruptValue;
use crate::db::changes::{self as change_db, ChangeRow};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::policy::FreezeWindow;
use crate::rbac::Principal;
use crate::text::{self, Lines};
use rules::{Ask, Candidate, Refusal};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GateCheck {
    /// The system's key in the register (e.g. `core-banking`).
    pub system: String,
    /// Only a change of this category admits (e.g. `upgrade`).
    pub category: Option<String>,
    /// Only a change of this action admits (e.g. `software`).
    pub action: Option<String>,
    /// Only this change admits.
    pub change_id: Option<i64>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Assignee {
    pub username: String,
    pub display_name: String,
}

/// The gate is open: the change that admits, and the signed admission.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Admitted {
    pub allowed: bool,
    pub change_id: i64,
    pub title: String,
    pub window: Window,
    pub assignee: Assignee,
    /// Compact JWS (EdDSA) for `changeguard gate verify`; expires at the window's end or after
    /// 15 minutes, whichever comes first.
    pub admission: String,
    pub expires_at: DateTime<Utc>,
}

/// How long an admission lives at most.
pub const ADMISSION_TTL: TimeDelta = TimeDelta::minutes(15);

fn candidate(r: &ChangeRow) -> Result<Candidate> {
    let status = Status::parse(&r.status).ok_or_else(|| {
        Error::Internal(anyhow::Error::new(CorruptValue::new(
            "change_requests.status",
            r.status.clone(),
        )))
    })?;
    Ok(Candidate {
        id: r.id,
        status,
        category: r.category.clone(),
        action: r.action.clone(),
        start: r.planned_start,
        end: r.planned_end,
        emergency: r.emergency,
    })
}

fn local(t: DateTime<Utc>, tz: Tz) -> String {
    t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

/// What the refusal says, in words, with what would make the gate open.
fn explain(r: &Refusal, system: &str, tz: Tz, earliest: Option<NaiveDate>) -> String {
    match r {
        Refusal::NoOpenChange => {
            let (zh, en) = match earliest {
                Some(d) => (
                    format!("；现在提交的变更最早可于 {d} 开始"),
                    format!("; a change filed now may start on {d} at the earliest"),
                ),
                None => (String::new(), String::new()),
            };
            format!(
                "系统 {system} 没有已批准且正在实施的变更，须先提交变更并经批准{zh} / System {system} has no approved change in progress: file one and have it approved first{en}"
            )
        }
        Refusal::NotApproved { id } => format!(
            "变更 #{id} 尚未批准，须经电子银行部批准 / Change #{id} is not approved yet; the management department must approve it"
        ),
        Refusal::NotStarted { id, start } => format!(
            "变更 #{id} 已批准但尚未开始实施：执行人须在计划窗口内（{} 起）开始实施 / Change #{id} is approved but not started: its assignee must start it inside its window (from {})",
            local(*start, tz),
            local(*start, tz)
        ),
        Refusal::OutsideWindow { id, start, end } => format!(
            "当前不在变更 #{id} 的计划窗口（{} 至 {}）内 / Now is outside the planned window of change #{id} ({} to {})",
            local(*start, tz),
            local(*end, tz),
            local(*start, tz),
            local(*end, tz)
        ),
        Refusal::Frozen { window, until, .. } => format!(
            "封网期「{window}」至 {} 结束，期间只有已批准的紧急变更可以实施 / The freeze window {window} lasts until {}; only an approved emergency change may run in it",
            local(*until, tz),
            local(*until, tz)
        ),
        Refusal::WrongAction { id, action } => {
            let a = action.as_deref().unwrap_or("-");
            format!(
                "进行中的变更 #{id} 的操作是 {a}，不是所申请的操作 / The open change #{id} is for action {a}, not the one asked for"
            )
        }
        Refusal::WrongCategory { id, category } => format!(
            "进行中的变更 #{id} 属于类别 {category}，不是所申请的类别 / The open change #{id} is of category {category}, not the one asked for"
        ),
    }
}

/// Asks the gate. 200 with an admission, or a 403 whose code says why (audited either way).
pub async fn check(app: &App, who: &Principal, req: GateCheck) -> Result<Admitted> {
    text::required("system", &req.system, 64, Lines::One)?;
    text::optional("category", req.category.as_deref(), 64, Lines::One)?;
    text::optional("action", req.action.as_deref(), 64, Lines::One)?;
    let now = app.now();
    let policy = &app.policies.change;
    let system = req.system.trim();
    // What a change filed now could do (for a refusal's detail), read before the write lock.
    let earliest = app
        .calendar()
        .await
        .ok()
        .and_then(|cal| {
            cal.earliest_start(notice_date(now, policy.timezone), &policy.notice)
                .ok()
        })
        .map(|e| e.earliest_start);
    // The facts are read in the deed that audits the decision.
    let mut tx = Deed::open(app).await?;
    let rows = change_db::open_on_system(&mut tx, system).await?;
    let candidates = rows.iter().map(candidate).collect::<Result<Vec<_>>>()?;
    let ask = Ask {
        category: req.category.as_deref(),
        action: req.action.as_deref(),
        change_id: req.change_id,
    };
    let mut entry = Entry::by(who, "gate.check", format!("system:{system}")).with_details(json!({
        "system": system, "category": req.category, "action": req.action,
        "change_id": req.change_id,
    }));
    let decided = rules::decide(&candidates, &ask, &policy.freeze_windows, now);
    let chosen = match decided {
        Ok(c) => c,
        Err(refusal) => {
            let message = explain(&refusal, system, policy.timezone, earliest);
            entry.outcome = Outcome::Refused;
            entry.code = Some(refusal.code().to_string());
            entry.reason = Some(message.clone());
            entry.details["refused_for_change"] = json!(refusal.change_id());
            tx.commit(&entry, now).await?;
            return Err(Error::Forbidden {
                code: refusal.code(),
                message,
                policy_ids: Vec::new(),
            }
            .audited());
        }
    };
    let row = rows.iter().find(|r| r.id == chosen.id).ok_or_else(|| {
        Error::Internal(anyhow::anyhow!("the chosen change is not among the rows"))
    })?;
    let systems: Vec<String> = serde_json::from_str(&row.systems).map_err(|_| {
        Error::Internal(anyhow::Error::new(CorruptValue::new(
            "change_requests.systems",
            row.systems.clone(),
        )))
    })?;
    let jti = uuid::Uuid::new_v4().to_string();
    // Short-lived: a completed or cancelled change stops admitting within minutes even where
    // the admission is checked offline; a tool asks again for each step.
    let expires_at = row.planned_end.min(now + ADMISSION_TTL);
    let claims = admission::Claims {
        iss: app.settings.public_url(),
        aud: admission::AUDIENCE.into(),
        sub: row.id.to_string(),
        systems,
        category: row.category.clone(),
        action: row.action.clone(),
        assignee: row.assignee_username.clone(),
        iat: now.timestamp(),
        nbf: row.planned_start.timestamp(),
        exp: expires_at.timestamp(),
        jti: jti.clone(),
    };
    let token = app.admission.sign(&claims)?;
    entry.details["admitted_by_change"] = json!(row.id);
    entry.details["jti"] = json!(jti);
    tx.commit(&entry, now).await?;
    Ok(Admitted {
        allowed: true,
        change_id: row.id,
        title: row.title.clone(),
        window: Window {
            start: row.planned_start,
            end: row.planned_end,
        },
        assignee: Assignee {
            username: row.assignee_username.clone(),
            display_name: row.assignee_name.clone(),
        },
        admission: token,
        expires_at,
    })
}

/// A change window as a scheduler sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeWindow {
    pub change_id: i64,
    pub title: String,
    /// approved | in_progress
    pub status: String,
    pub category: String,
    pub action: Option<String>,
    pub emergency: bool,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// What a CD tool's sync windows and deploy freezes can follow.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Windows {
    pub system: String,
    pub changes: Vec<ChangeWindow>,
    pub freeze_windows: Vec<FreezeWindow>,
    /// Each day of the range: working day, weekend, holiday or make-up working day.
    #[schema(value_type = Vec<Object>)]
    pub days: Vec<DayInfo>,
}

/// The longest range `GET /gate/windows` answers.
pub const MAX_WINDOW_RANGE_DAYS: i64 = 366;

pub async fn windows(app: &App, system: &str, from: NaiveDate, to: NaiveDate) -> Result<Windows> {
    text::required("system", system, 64, Lines::One)?;
    if to < from || (to - from).num_days() >= MAX_WINDOW_RANGE_DAYS {
        return Err(Error::BadRequest {
            code: "invalid_range",
            message: format!(
                "to 须不早于 from，且范围不超过 {MAX_WINDOW_RANGE_DAYS} 天 / to must not be before from, and the range may not exceed {MAX_WINDOW_RANGE_DAYS} days"
            ),
        });
    }
    let tz = app.policies.change.timezone;
    let start = crate::changes::rules::start_of_day(from, tz)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no midnight on {from}")))?;
    let end = crate::changes::rules::start_of_day(to + TimeDelta::days(1), tz)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("no midnight after {to}")))?;
    let changes = change_db::windows_on_system(&app.db, system, start, end)
        .await?
        .into_iter()
        .map(|r| ChangeWindow {
            change_id: r.id,
            title: r.title,
            status: r.status,
            category: r.category,
            action: r.action,
            emergency: r.emergency,
            start: r.planned_start,
            end: r.planned_end,
        })
        .collect();
    let freeze_windows = app
        .policies
        .change
        .freeze_windows
        .iter()
        .filter(|w| w.start.with_timezone(&Utc) < end && w.end.with_timezone(&Utc) > start)
        .cloned()
        .collect();
    let days = crate::workdays::days(app, from, to).await?;
    Ok(Windows {
        system: system.to_string(),
        changes,
        freeze_windows,
        days,
    })
}
