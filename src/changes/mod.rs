//! Change requests (the upgrade notices of Art. 20 and the permissions of Art. 19): filing with
//! the notice rule, the life cycle, emergencies, freeze windows, conflicts.
//!
//! Every command runs in one transaction: the state change, its event and its audit entry
//! commit together. A refusal changes nothing (the HTTP gate records it in the audit trail).

pub mod agenda;
pub mod report;
pub mod rules;
pub mod systems;
pub mod views;

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

/// The 422 of the notice rule, with the earliest permitted start in Chinese and English.
fn notice_error(r: NoticeRefusal, tz: &str) -> Error {
    match r {
        NoticeRefusal::TooLate {
            notified_on,
            earliest_start,
            working_days,
        } => {
            let mut extra = Map::new();
            extra.insert("notified_on".into(), json!(notified_on));
            extra.insert("earliest_start".into(), json!(earliest_start));
            extra.insert("working_days".into(), json!(working_days));
            Error::Unprocessable {
                code: "insufficient_notice",
                message: format!(
                    "通知时间不足：{notified_on} 通知，须至少提前 {working_days} 个工作日，最早可于 {earliest_start} 00:00（{tz}）开始。 / \
                     Insufficient notice: notified on {notified_on}, at least {working_days} working days are required; \
                     the change may start from {earliest_start} 00:00 ({tz})."
                ),
                extra,
            }
        }
        NoticeRefusal::Calendar(e) => calendar_error(e),
    }
}

pub fn calendar_error(e: CalendarError) -> Error {
    match e {
        CalendarError::YearMissing { year } => {
            let mut extra = Map::new();
            extra.insert("year".into(), json!(year));
            Error::Unprocessable {
                code: "calendar_year_missing",
                message: format!(
                    "{year} 年工作日历尚未加载，无法计算工作日；请管理员加载国务院办公厅的放假安排。 / \
                     The working-day calendar for {year} is not loaded; an admin must load the official notice first."
                ),
                extra,
            }
        }
        CalendarError::Invalid { reason } => invalid("calendar_invalid", reason),
    }
}

/// The assignee by username (default: the requester), who must be active and hold change.execute.
async fn resolve_assignee(
    app: &App,
    who: &Principal,
    username: Option<&str>,
) -> Result<(i64, String)> {
    let Some(username) = username.filter(|u| *u != who.username) else {
        if !app
            .policies
            .authorizer
            .permissions(who)
            .iter()
            .any(|p| p == "change.execute")
        {
            return Err(invalid(
                "invalid_assignee",
                "执行人须持有 change.execute 权限 / The assignee must hold change.execute",
            ));
        }
        return Ok((who.user_id, who.username.clone()));
    };
    let username = crate::auth::normalize_username(username);
    let Some((user, _)) = crate::db::users::credentials(&app.db, &username).await? else {
        return Err(invalid(
            "invalid_assignee",
            format!("没有用户 {username} / No such user: {username}"),
        ));
    };
    let active = user.active;
    let probe = crate::accounts::principal_for(app, user, app.now()).await?;
    let can_execute = app
        .policies
        .authorizer
        .permissions(&probe)
        .iter()
        .any(|p| p == "change.execute");
    if !active || !can_execute {
        return Err(invalid(
            "invalid_assignee",
            "执行人须为在职用户并持有 change.execute 权限 / The assignee must be active and hold change.execute",
        ));
    }
    Ok((probe.user_id, probe.username))
}

/// Files a change request; refuses a late notice (422 `insufficient_notice`).
pub async fn file(app: &App, who: &Principal, req: FileChange) -> Result<ChangeView> {
    let policy = &app.policies.change;
    let tz = policy.timezone;
    text::required("title", &req.title, 200, Lines::One)?;
    text::required("description", &req.description, 10_000, Lines::Many)?;
    text::required("rollback_plan", &req.rollback_plan, 10_000, Lines::Many)?;
    text::optional("impact", req.impact.as_deref(), 10_000, Lines::Many)?;
    let Some(category) = policy.categories.get(&req.category) else {
        return Err(invalid(
            "unknown_category",
            format!(
                "没有变更类别 {} / No such category; one of: {}",
                req.category,
                policy
                    .categories
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    };
    check_action(category, req.action.as_deref())?;
    let mut systems = req.systems.clone();
    systems.sort();
    systems.dedup();
    if systems.is_empty() || systems.len() != req.systems.len() {
        return Err(invalid(
            "invalid_systems",
            "须列出至少一个系统且不重复 / List at least one system, each once",
        ));
    }
    let start = req.planned_start.with_timezone(&Utc);
    let end = req.planned_end.with_timezone(&Utc);
    let justification = req
        .justification
        .as_deref()
        .map(str::trim)
        .filter(|j| !j.is_empty());
    if req.emergency && justification.is_none() {
        return Err(invalid(
            "justification_required",
            "紧急变更须说明理由 / An emergency change needs a justification",
        ));
    }
    text::optional("justification", justification, 10_000, Lines::Many)?;
    let (assignee_id, _) = resolve_assignee(app, who, req.assignee.as_deref()).await?;

    // The notice: now, by the server's clock, in the bank's time zone.
    let now = app.now();
    let notified_on = rules::notice_date(now, tz);
    let calendar = app.calendar().await?;
    let earliest = check_schedule(
        policy,
        &calendar,
        &req.category,
        req.emergency,
        notified_on,
        (start, end),
    )?;

    let mut tx = Deed::open(app).await?;
    let found = db::existing_systems(&mut tx, &systems).await?;
    if found.len() != systems.len() {
        let missing: Vec<_> = systems
            .iter()
            .filter(|s| !found.contains(s))
            .cloned()
            .collect();
        return Err(invalid(
            "unknown_system",
            format!(
                "系统未登记 / Not in the systems register: {}",
                missing.join(", ")
            ),
        ));
    }
    let notified_on_s = notified_on.to_string();
    let earliest_s = earliest.map(|d| d.to_string());
    let id = db::insert_change(
        &mut tx,
        &NewChange {
            title: req.title.trim(),
            category: &req.category,
            action: req.action.as_deref(),
            systems: &systems,
            description: &req.description,
            impact: req.impact.as_deref(),
            risk: req.risk.as_str(),
            rollback_plan: &req.rollback_plan,
            planned_start: start,
            planned_end: end,
            requester_id: who.user_id,
            assignee_id,
            emergency: req.emergency,
            justification,
            notified_at: now,
            notified_on: &notified_on_s,
            earliest_start: earliest_s.as_deref(),
        },
    )
    .await?;
    let entry = Entry::by(
        who, "change.create", format!("change:{id}")).with_details(json!({
        "category": req.category, "systems": systems, "emergency": req.emergency,
        "planned_start": start, "planned_end": end, "notified_on": notified_on, "earliest_start": earliest,
    }));
    record(
        app,
        tx,
        Line {
            id,
            from: None,
            to: Status::Submitted.as_str(),
            actor: Some(who.user_id),
            comment: justification,
            notice: Some("filed"),
        },
        &entry,
        now,
    )
    .await?;
    get(app, id).await
}

fn check_action(category: &crate::policy::Category, action: Option<&str>) -> Result<()> {
    match action {
        None if !category.actions.is_empty() => Err(invalid(
            "invalid_action",
            format!(
                "该类别须指定 action / This category needs an action: {}",
                category.actions.join(", ")
            ),
        )),
        Some(a) if !category.actions.iter().any(|x| x == a) => Err(invalid(
            "invalid_action",
            if category.actions.is_empty() {
                "该类别没有 action / This category takes no action".to_string()
            } else {
                format!(
                    "action 须为 / action must be one of: {}",
                    category.actions.join(", ")
                )
            },
        )),
        _ => Ok(()),
    }
}

fn freeze_error(w: &crate::policy::FreezeWindow) -> Error {
    let mut extra = Map::new();
    extra.insert(
        "freeze_window".into(),
        json!({"name": w.name, "start": w.start, "end": w.end}),
    );
    Error::Unprocessable {
        code: "freeze_window",
        message: format!(
            "计划窗口落在封网期“{}”（{} 至 {}）内，普通变更不予受理。 / The window falls inside the freeze window \"{}\" ({} to {}); normal changes are refused.",
            w.name, w.start, w.end, w.name, w.start, w.end
        ),
        extra,
    }
}

/// The checks of a planned window, shared by filing and rescheduling: its length, then (for a
/// normal change) freeze windows and the notice rule against `notified_on`. Returns the earliest
/// permitted start (for an emergency, for information only, when computable).
fn check_schedule(
    policy: &crate::policy::ChangePolicy,
    calendar: &crate::calendar::WorkingCalendar,
    category_key: &str,
    emergency: bool,
    notified_on: NaiveDate,
    (start, end): (DateTime<Utc>, DateTime<Utc>),
) -> Result<Option<NaiveDate>> {
    if let Some(problem) = rules::window_problem(start, end, policy.max_window_days) {
        return Err(invalid("invalid_window", problem));
    }
    let category = policy.categories.get(category_key).ok_or_else(|| {
        Error::Internal(anyhow::anyhow!(
            "category {category_key} is not in the policy"
        ))
    })?;
    let rule = policy.rule_for(category);
    if emergency {
        return Ok(calendar
            .earliest_start(notified_on, &rule)
            .ok()
            .map(|e| e.earliest_start));
    }
    if let Some(w) = rules::frozen_by(&policy.freeze_windows, category_key, start, end) {
        return Err(freeze_error(w));
    }
    rules::check_notice(calendar, &rule, policy.timezone, notified_on, start)
        .map(Some)
        .map_err(|r| notice_error(r, policy.timezone.name()))
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
    Ok(ChangeView::from_row(row, conflicts, app.now()))
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
    let now = app.now();
    Ok(rows
        .into_iter()
        .map(|r| {
            let c = conflicts.remove(&r.id).unwrap_or_default();
            ChangeView::from_row(r, c, now)
        })
        .collect())
}

/// Facts about a change for the policies.
fn facts(row: &ChangeRow) -> ChangeFacts {
    ChangeFacts {
        id: row.id,
        requester: row.requester_id,
        assignee: row.assignee_id,
        emergency: row.emergency,
    }
}

/// Refuses with the code of the separation-of-duty rule that decided.
fn require(d: crate::rbac::Decision) -> Result<crate::rbac::Decision> {
    if d.allowed {
        return Ok(d);
    }
    let (code, message) = match d.policy_ids.first().map(String::as_str) {
        Some("sod.independent_review") => (
            "self_review",
            "申请人或执行人不能复核自己的紧急变更 / The requester or assignee cannot review their own emergency change",
        ),
        Some("sod.no_self_approval") => (
            "self_approval",
            "申请人不能审批自己的变更 / The requester cannot approve their own change",
        ),
        Some("sod.assignee_executes") => (
            "not_assignee",
            "只有执行人可以实施该变更 / Only the assignee carries out this change",
        ),
        Some("sod.requester_amends") => (
            "not_requester",
            "只有申请人可以修改或撤销该变更 / Only the requester may amend or cancel this change",
        ),
        _ => return Err(Error::forbidden(d.policy_ids)),
    };
    Err(Error::Forbidden {
        code,
        message: message.into(),
        policy_ids: d.policy_ids,
    })
}

fn invalid_transition(from: &str, step: Step) -> Error {
    Error::conflict(
        "invalid_transition",
        format!(
            "状态为 {from} 的变更不能执行 {0} / A change in status {from} cannot {0}",
            step.as_str()
        ),
    )
}

/// Request bodies of the transitions.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Comment {
    pub comment: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub reason: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Completion {
    pub outcome: Outcome,
    pub notes: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Review {
    pub notes: String,
}

/// A life-cycle step by a person.
pub enum Command {
    Approve(Comment),
    Reject(Reason),
    Start,
    Complete(Completion),
    Cancel(Reason),
}

impl Command {
    fn step(&self) -> Step {
        match self {
            Command::Approve(_) => Step::Approve,
            Command::Reject(_) => Step::Reject,
            Command::Start => Step::Start,
            Command::Complete(_) => Step::Complete,
            Command::Cancel(_) => Step::Cancel,
        }
    }

    /// The permission whose rules (Cedar) decide this step on the change itself.
    fn permission(&self) -> &'static str {
        match self {
            Command::Approve(_) | Command::Reject(_) => "change.approve",
            Command::Start | Command::Complete(_) => "change.execute",
            Command::Cancel(_) => "change.create",
        }
    }
}

/// Runs a life-cycle step: checks, state change, event and audit entry in one transaction.
/// The steps `who` may take on the change now, by the same rules as [`transition`] and
/// [`review`] (life cycle, Cedar on the change, the approve permission): what a console offers.
pub fn steps_allowed(app: &App, who: &Principal, c: &ChangeView) -> Vec<&'static str> {
    let Some(status) = Status::parse(&c.status) else {
        return Vec::new();
    };
    let facts = ChangeFacts {
        id: c.id,
        requester: c.requester.id,
        assignee: c.assignee.id,
        emergency: c.emergency,
    };
    let allows = |permission: &str, resource: &Resource| {
        app.policies
            .authorizer
            .decide(who, permission, resource, &Facts::default())
            .allowed
    };
    let approve_permission = if c.emergency {
        "change.approve_emergency"
    } else {
        app.policies
            .change
            .categories
            .get(&c.category)
            .map_or("change.approve", |k| k.approve_permission.as_str())
    };
    let mut steps = Vec::new();
    for (step, permission) in [
        (Step::Approve, "change.approve"),
        (Step::Reject, "change.approve"),
        (Step::Start, "change.execute"),
        (Step::Complete, "change.execute"),
        (Step::Cancel, "change.create"),
        (Step::Reschedule, "change.create"),
    ] {
        let approval = matches!(step, Step::Approve | Step::Reject);
        if rules::next(status, step).is_some()
            && allows(permission, &Resource::Change(facts))
            && (!approval || allows(approve_permission, &Resource::Api))
        {
            steps.push(step.as_str());
        }
    }
    if c.review_pending && allows("change.approve_emergency", &Resource::Change(facts)) {
        steps.push("review");
    }
    steps
}

pub async fn transition(app: &App, who: &Principal, id: i64, cmd: Command) -> Result<ChangeView> {
    let comment: Option<String> = match &cmd {
        Command::Approve(c) => c.comment.clone().filter(|c| !c.trim().is_empty()),
        Command::Reject(r) | Command::Cancel(r) => {
            text::required("reason", &r.reason, 2000, Lines::Many)?;
            Some(r.reason.clone())
        }
        Command::Complete(c) => {
            text::required("notes", &c.notes, 10_000, Lines::Many)?;
            Some(c.notes.clone())
        }
        Command::Start => None,
    };
    if let Some(c) = &comment {
        text::optional("comment", Some(c), 10_000, Lines::Many)?;
    }
    let step = cmd.step();
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let row = db::get_change_for_update(&mut tx, id)
        .await
        .map_err(not_found)?;
    let from = Status::parse(&row.status)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad status {}", row.status)))?;
    let to = rules::next(from, step).ok_or_else(|| invalid_transition(&row.status, step))?;
    let decision = require(app.policies.authorizer.decide(
        who,
        cmd.permission(),
        &Resource::Change(facts(&row)),
        &Facts::default(),
    ))?;
    let mut policy_ids = decision.policy_ids;
    let mut update = ChangeUpdate {
        status: Some(to.as_str()),
        ..Default::default()
    };
    let completion;
    match &cmd {
        // Whoever may approve a change may also reject it.
        Command::Approve(_) | Command::Reject(_) => {
            let needed = if row.emergency {
                "change.approve_emergency"
            } else {
                app.policies
                    .change
                    .categories
                    .get(&row.category)
                    .map_or("change.approve", |c| c.approve_permission.as_str())
            };
            let d = app
                .policies
                .authorizer
                .decide(who, needed, &Resource::Api, &Facts::default());
            if !d.allowed {
                return Err(Error::Forbidden {
                    code: if row.emergency {
                        "emergency_approval_required"
                    } else {
                        "forbidden"
                    },
                    message: format!("审批需要 {needed} 权限 / Approving needs {needed}"),
                    policy_ids: d.policy_ids,
                });
            }
            policy_ids.extend(d.policy_ids);
            if matches!(cmd, Command::Approve(_)) {
                update.approved = Some((who.user_id, now));
            }
        }
        Command::Start => {
            if now < row.planned_start || now >= row.planned_end {
                return Err(Error::conflict(
                    "outside_window",
                    format!(
                        "只能在计划窗口内开始（{} 至 {}） / A change starts only inside its planned window ({} to {})",
                        row.planned_start, row.planned_end, row.planned_start, row.planned_end
                    ),
                ));
            }
            update.started_at = Some(now);
        }
        Command::Complete(c) => {
            completion = c.outcome.as_str();
            update.completed = Some((now, completion, c.notes.as_str()));
        }
        Command::Cancel(_) => {}
    }
    db::update_change(&mut tx, id, &update, now).await?;
    policy_ids.sort();
    policy_ids.dedup();
    let entry = Entry::by(
        who, &format!("change.{}", step.as_str()), format!("change:{id}"))
        .with_policies(&policy_ids)
        .with_details(json!({"from": row.status, "to": to.as_str(), "comment": comment, "emergency": row.emergency}));
    record(
        app,
        tx,
        Line {
            id,
            from: Some(&row.status),
            to: to.as_str(),
            actor: Some(who.user_id),
            comment: comment.as_deref(),
            notice: Some(match step {
                Step::Approve => "approved",
                Step::Reject => "rejected",
                Step::Start => "started",
                Step::Complete => "completed",
                Step::Cancel => "cancelled",
                Step::Expire => "expired",
                Step::Reschedule => "rescheduled",
            }),
        },
        &entry,
        now,
    )
    .await?;
    if matches!(step, Step::Complete | Step::Cancel) {
        // Its just-in-time database accounts go now (the minute job retries what fails).
        if let Err(e) = crate::dbaccess::revoke_change(app, id, now).await {
            tracing::warn!(change = id, error = %e, "revoking database accounts after the change ended failed; the job retries");
        }
    }
    get(app, id).await
}

/// A manager's post-implementation review of a completed emergency change.
pub async fn review(app: &App, who: &Principal, id: i64, req: Review) -> Result<ChangeView> {
    text::required("notes", &req.notes, 10_000, Lines::Many)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let row = db::get_change_for_update(&mut tx, id)
        .await
        .map_err(not_found)?;
    if !row.emergency || row.status != Status::Completed.as_str() || row.reviewed_at.is_some() {
        return Err(Error::conflict(
            "invalid_transition",
            "只有已完成且未复核的紧急变更需要事后复核 / Only a completed, not yet reviewed emergency change takes a review",
        ));
    }
    let decision = require(app.policies.authorizer.decide(
        who,
        "change.approve_emergency",
        &Resource::Change(facts(&row)),
        &Facts::default(),
    ))?;
    let update = ChangeUpdate {
        reviewed: Some((who.user_id, now, req.notes.as_str())),
        ..Default::default()
    };
    db::update_change(&mut tx, id, &update, now).await?;
    let entry = Entry::by(who, "change.review", format!("change:{id}"))
        .with_policies(&decision.policy_ids)
        .with_details(json!({"emergency": true}));
    record(
        app,
        tx,
        Line {
            id,
            from: Some(&row.status),
            to: &row.status,
            actor: Some(who.user_id),
            comment: Some(&req.notes),
            notice: Some("reviewed"),
        },
        &entry,
        now,
    )
    .await?;
    get(app, id).await
}

/// Reschedules or amends: the new start is checked against the ORIGINAL notice date; an approved
/// change goes back to `submitted`.
pub async fn amend(app: &App, who: &Principal, id: i64, req: AmendChange) -> Result<ChangeView> {
    if req.category.is_some() || req.systems.is_some() {
        return Err(invalid(
            "immutable_field",
            "类别和系统不能修改，请重新提交变更申请 / Category and systems cannot change: file a new request",
        ));
    }
    if let Some(t) = &req.title {
        text::required("title", t, 200, Lines::One)?;
    }
    if let Some(d) = &req.description {
        text::required("description", d, 10_000, Lines::Many)?;
    }
    if let Some(r) = &req.rollback_plan {
        text::required("rollback_plan", r, 10_000, Lines::Many)?;
    }
    text::optional("impact", req.impact.as_deref(), 10_000, Lines::Many)?;
    let policy = &app.policies.change;
    let now = app.now();
    let assignee = match &req.assignee {
        Some(u) => Some(resolve_assignee(app, who, Some(u)).await?.0),
        None => None,
    };
    let calendar = app.calendar().await?;
    let mut tx = Deed::open(app).await?;
    let row = db::get_change_for_update(&mut tx, id)
        .await
        .map_err(not_found)?;
    let from =
        Status::parse(&row.status).ok_or_else(|| Error::Internal(anyhow::anyhow!("bad status")))?;
    let to = rules::next(from, Step::Reschedule)
        .ok_or_else(|| invalid_transition(&row.status, Step::Reschedule))?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "change.create",
        &Resource::Change(facts(&row)),
        &Facts::default(),
    ))?;
    let category = policy.categories.get(&row.category).ok_or_else(|| {
        Error::Internal(anyhow::anyhow!("category {} left the policy", row.category))
    })?;
    if let Some(a) = &req.action {
        check_action(category, Some(a))?;
    }
    let start = req
        .planned_start
        .map_or(row.planned_start, |t| t.with_timezone(&Utc));
    let end = req
        .planned_end
        .map_or(row.planned_end, |t| t.with_timezone(&Utc));
    let justification = req
        .justification
        .as_deref()
        .map(str::trim)
        .filter(|j| !j.is_empty());
    let notified_on: NaiveDate = row
        .notified_on
        .parse()
        .map_err(|_| Error::Internal(anyhow::anyhow!("bad notified_on {}", row.notified_on)))?;
    let earliest = check_schedule(
        policy,
        &calendar,
        &row.category,
        row.emergency,
        notified_on,
        (start, end),
    )?
    .map(|d| d.to_string());
    let update = ChangeUpdate {
        status: Some(to.as_str()),
        title: req.title.as_deref().map(str::trim),
        action: req.action.as_deref(),
        description: req.description.as_deref(),
        impact: req.impact.as_deref(),
        risk: req.risk.map(Risk::as_str),
        rollback_plan: req.rollback_plan.as_deref(),
        planned_start: Some(start),
        planned_end: Some(end),
        assignee_id: assignee,
        justification,
        earliest_start: earliest.as_deref(),
        clear_approval: true,
        ..Default::default()
    };
    db::update_change(&mut tx, id, &update, now).await?;
    let rescheduled = start != row.planned_start || end != row.planned_end;
    let comment = if rescheduled {
        Some(format!("rescheduled to {start} – {end}"))
    } else {
        Some("amended".to_string())
    };
    let entry = Entry::by(
        who,
        "change.reschedule",
        format!("change:{id}"),
    )
    .with_policies(&decision.policy_ids)
    .with_details(
        json!({"from": row.status, "to": to.as_str(), "planned_start": start, "planned_end": end,
                             "previous_start": row.planned_start, "previous_end": row.planned_end}),
    );
    record(
        app,
        tx,
        Line {
            id,
            from: Some(&row.status),
            to: to.as_str(),
            actor: Some(who.user_id),
            comment: comment.as_deref(),
            notice: Some("rescheduled"),
        },
        &entry,
        now,
    )
    .await?;
    get(app, id).await
}

/// Marks approved changes whose window has passed unstarted as `expired` (a scheduled job).
/// Returns how many expired. Safe with several instances: each row is locked and re-checked.
pub async fn expire_overdue(app: &App) -> Result<usize> {
    expire_overdue_at(app, app.now()).await
}

/// [`expire_overdue`] as of `now` (the scheduler's slot time).
pub async fn expire_overdue_at(app: &App, now: DateTime<Utc>) -> Result<usize> {
    let mut n = 0;
    for id in db::overdue_approved(&app.db, now).await? {
        let mut tx = Deed::open(app).await?;
        let row = db::get_change_for_update(&mut tx, id).await?;
        if row.status != Status::Approved.as_str() || row.planned_end > now {
            continue;
        }
        db::update_change(
            &mut tx,
            id,
            &ChangeUpdate {
                status: Some(Status::Expired.as_str()),
                ..Default::default()
            },
            now,
        )
        .await?;
        let entry = Entry::ok(None, "change.expire", format!("change:{id}"))
            .with_reason("approved but never started by its planned end");
        record(
            app,
            tx,
            Line {
                id,
                from: Some(&row.status),
                to: Status::Expired.as_str(),
                actor: None,
                comment: Some("never started in its window"),
                notice: Some("expired"),
            },
            &entry,
            now,
        )
        .await?;
        n += 1;
    }
    Ok(n)
}
