//! Amending or rescheduling a filed change (the original notice still counts).

use super::filing::{check_action, check_schedule, resolve_assignee};
use super::lifecycle::{facts, invalid_transition, require};
use super::*;

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
    let risk = req
        .risk
        .map_or_else(|| row.risk.clone(), |r| r.as_str().to_string());
    let plan_json = stages::plan_json(&stages::plan_for(app, &row.category, &risk, row.emergency));
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
        new_plan: Some(&plan_json),
        ..Default::default()
    };
    db::update_change(&mut tx, id, &update, now).await?;
    // A new approval round: every stage again, from the first.
    stages::ask_first_stage(app, &mut tx, id, now).await?;
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
