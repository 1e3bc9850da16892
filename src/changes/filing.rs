//! Filing a change: the notice rule (Art. 20), the category's actions, freeze windows and the assignee.

use super::*;

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
pub(super) async fn resolve_assignee(
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
    file_as(app, who, req, None).await
}

/// Filing from a standard-change template (`policies/standard-changes.toml`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileStandardChange {
    /// Default: the template's title.
    pub title: Option<String>,
    /// Some of the template's systems; default: all of them.
    pub systems: Option<Vec<String>>,
    pub impact: Option<String>,
    /// RFC 3339 with offset.
    pub planned_start: DateTime<chrono::FixedOffset>,
    pub planned_end: DateTime<chrono::FixedOffset>,
    /// Username of the operator who carries it out; default: the requester.
    pub assignee: Option<String>,
}

/// Files a standard change: approved at once by its template, but still refused for a late
/// notice or a freeze window (Art. 20 applies to every upgrade).
pub async fn file_standard(
    app: &App,
    who: &Principal,
    key: &str,
    req: FileStandardChange,
) -> Result<ChangeView> {
    let Some(t) = app.policies.standard.templates.get(key) else {
        return Err(Error::NotFound {
            what: "standard change",
        });
    };
    if !who.roles.iter().any(|r| t.roles.contains(r)) {
        return Err(Error::Forbidden {
            code: "template_not_allowed",
            message: format!(
                "该标准变更仅限 {} 角色使用 / This standard change may be filed by holders of {} only",
                t.roles.join("、"),
                t.roles.join(", ")
            ),
            policy_ids: Vec::new(),
        });
    }
    let systems = req.systems.unwrap_or_else(|| t.systems.clone());
    if let Some(s) = systems.iter().find(|s| !t.systems.contains(s)) {
        return Err(invalid(
            "invalid_systems",
            format!(
                "标准变更“{}”不涵盖系统 {s}；可选：{} / The standard change does not cover {s}; it covers: {}",
                t.title_zh,
                t.systems.join("、"),
                t.systems.join(", ")
            ),
        ));
    }
    let risk = match t.risk.as_str() {
        "high" => Risk::High,
        "medium" => Risk::Medium,
        _ => Risk::Low,
    };
    let change = FileChange {
        title: req.title.unwrap_or_else(|| t.title_zh.clone()),
        category: t.category.clone(),
        action: t.action.clone(),
        systems,
        description: t.description.clone(),
        impact: req.impact,
        risk,
        rollback_plan: t.rollback_plan.clone(),
        planned_start: req.planned_start,
        planned_end: req.planned_end,
        assignee: req.assignee,
        emergency: false,
        justification: None,
    };
    file_as(app, who, change, Some(key)).await
}

async fn file_as(
    app: &App,
    who: &Principal,
    req: FileChange,
    standard: Option<&str>,
) -> Result<ChangeView> {
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
    let plan = stages::plan_for(app, &req.category, req.risk.as_str(), req.emergency);
    let plan_json = stages::plan_json(if standard.is_some() { &[] } else { &plan });
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
            approval_plan: &plan_json,
            standard_change: standard,
        },
    )
    .await?;
    let entry = Entry::by(
        who, "change.create", format!("change:{id}")).with_details(json!({
        "category": req.category, "systems": systems, "emergency": req.emergency,
        "planned_start": start, "planned_end": end, "notified_on": notified_on, "earliest_start": earliest,
        "standard_change": standard,
    }));
    let pre_approved = standard
        .and_then(|k| app.policies.standard.templates.get(k).map(|t| (k, t)))
        .map(|(k, t)| {
            format!(
                "标准变更“{}”（{k}），{}预先批准 / Standard change \"{}\" ({k}), pre-approved: {}",
                t.title_zh, t.approved_by, t.title_en, t.approved_by
            )
        })
        .unwrap_or_default();
    let line = if standard.is_some() {
        // Filed, and approved by its template in the same deed: the management department is
        // still notified (Art. 20), then everybody hears it is approved.
        db::insert_event(
            &mut tx,
            id,
            None,
            Status::Submitted.as_str(),
            Some(who.user_id),
            None,
            now,
        )
        .await?;
        crate::notify::enqueue_change(app, &mut tx, id, "filed", None, now).await?;
        db::update_change(
            &mut tx,
            id,
            &ChangeUpdate {
                status: Some(Status::Approved.as_str()),
                approved: Some((None, now)),
                ..Default::default()
            },
            now,
        )
        .await?;
        Line {
            id,
            from: Some(Status::Submitted.as_str()),
            to: Status::Approved.as_str(),
            actor: None,
            comment: Some(pre_approved.as_str()),
            notice: Some("approved"),
        }
    } else {
        // The first stage's approvers are asked.
        stages::ask_first_stage(app, &mut tx, id, now).await?;
        Line {
            id,
            from: None,
            to: Status::Submitted.as_str(),
            actor: Some(who.user_id),
            comment: justification,
            notice: Some("filed"),
        }
    };
    record(app, tx, line, &entry, now).await?;
    get(app, id).await
}

pub(super) fn check_action(category: &crate::policy::Category, action: Option<&str>) -> Result<()> {
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
pub(super) fn check_schedule(
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
