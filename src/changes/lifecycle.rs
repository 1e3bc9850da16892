//! A change's life after filing: approval, start, completion, cancellation, review, expiry, and the steps a person may take.

use super::*;

/// Facts about a change for the policies.
pub(super) fn facts(row: &ChangeRow) -> ChangeFacts {
    ChangeFacts {
        id: row.id,
        requester: row.requester_id,
        assignee: row.assignee_id,
        emergency: row.emergency,
    }
}

/// Refuses with the code of the separation-of-duty rule that decided.
pub(super) fn require(d: crate::rbac::Decision) -> Result<crate::rbac::Decision> {
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

pub(super) fn invalid_transition(from: &str, step: Step) -> Error {
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
    /// The username of the person you decide for, under their delegation to you; default:
    /// your own authority, else the first delegation in force that may decide the stage.
    pub on_behalf_of: Option<String>,
}

/// Rejecting the current stage (and so the change).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    pub reason: String,
    /// As for approving.
    pub on_behalf_of: Option<String>,
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
    Reject(Rejection),
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

/// The steps `who` may take on the change now, by the same rules as [`transition`] and
/// [`review`] (life cycle, Cedar on the change; approving and rejecting by the stage rules, see
/// [`may_decide_now`]): what a console offers.
pub async fn steps_allowed(
    app: &App,
    who: &Principal,
    c: &ChangeView,
) -> Result<Vec<&'static str>> {
    let Some(status) = Status::parse(&c.status) else {
        return Ok(Vec::new());
    };
    let facts = ChangeFacts {
        id: c.id,
        requester: c.requester.id,
        assignee: c.assignee.id,
        emergency: c.emergency,
    };
    let allows = |permission: &str| {
        app.policies
            .authorizer
            .decide(who, permission, &Resource::Change(facts), &Facts::default())
            .allowed
    };
    let decides = status == Status::Submitted && stages::may_decide_now(app, who, c.id).await?;
    let mut steps = Vec::new();
    for (step, permission) in [
        (Step::Approve, None),
        (Step::Reject, None),
        (Step::Start, Some("change.execute")),
        (Step::Complete, Some("change.execute")),
        (Step::Cancel, Some("change.create")),
        (Step::Reschedule, Some("change.create")),
    ] {
        let may = match permission {
            Some(p) => allows(p),
            None => decides,
        };
        if rules::next(status, step).is_some() && may {
            steps.push(step.as_str());
        }
    }
    if c.review_pending && allows("change.approve_emergency") {
        steps.push("review");
    }
    Ok(steps)
}

/// Runs a life-cycle step: checks, state change, event and audit entry in one transaction.
pub async fn transition(app: &App, who: &Principal, id: i64, cmd: Command) -> Result<ChangeView> {
    let comment: Option<String> = match &cmd {
        Command::Approve(c) => {
            let comment = c.comment.clone().filter(|c| !c.trim().is_empty());
            return stages::decide_command(app, who, id, true, comment, c.on_behalf_of.as_deref())
                .await;
        }
        Command::Reject(r) => {
            text::required("reason", &r.reason, 2000, Lines::Many)?;
            return stages::decide_command(
                app,
                who,
                id,
                false,
                Some(r.reason.clone()),
                r.on_behalf_of.as_deref(),
            )
            .await;
        }
        Command::Cancel(r) => {
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
        // Approving and rejecting were decided above, by stage.
        Command::Cancel(_) | Command::Approve(_) | Command::Reject(_) => {}
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
        // The passwords revealed for it, where changeguard can set them itself.
        if let Err(e) = crate::vault::machine::rotate_due(app, Some(id), now).await {
            tracing::warn!(change = id, error = %e, "rotation after use failed; the job retries");
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

/// Tells the assignee and management of every change still in progress after its planned end
/// (a scheduled job), once per planned end: it reveals nothing until it is completed or
/// rescheduled. Safe with several instances: the mark is taken in the deed that tells.
pub async fn notify_overdue_at(app: &App, now: DateTime<Utc>) -> Result<usize> {
    let mut n = 0;
    // One change that cannot be told (a broken row, a template) holds up none of the others;
    // it is tried again next minute.
    for id in db::overdue_in_progress(&app.db, now).await? {
        match notify_overdue(app, id, now).await {
            Ok(true) => n += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::error!(change = id, error = %e, "an overdue change could not be told; the job retries")
            }
        }
    }
    Ok(n)
}

/// Tells of change `id` being overdue, once. Ok(false): it was told already.
async fn notify_overdue(app: &App, id: i64, now: DateTime<Utc>) -> Result<bool> {
    let mut tx = Deed::open(app).await?;
    if !db::mark_overdue_notified(&mut tx, id, now).await? {
        return Ok(false);
    }
    crate::notify::enqueue_change(app, &mut tx, id, "overdue", None, now).await?;
    let entry = Entry::ok(None, "change.overdue", format!("change:{id}"))
        .with_reason("still in progress after its planned end");
    tx.commit(&entry, now).await?;
    Ok(true)
}
