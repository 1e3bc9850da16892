//! Reminders and escalations of approval stages that wait too long (a scheduled job): after
//! the stage's `remind_after_hours` working hours its approvers are reminded, after
//! `escalate_after_hours` the role it escalates to is told. Each at most once per stage of a
//! round, across instances (`approval_nudges`).

use super::approval::{self, StageDecision};
use super::*;
use crate::db::approvals as adb;

/// A nudge of a waiting stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nudge {
    Reminder,
    Escalation,
}

impl Nudge {
    fn kind(self) -> &'static str {
        match self {
            Nudge::Reminder => "reminder",
            Nudge::Escalation => "escalation",
        }
    }
}

/// Reminds and escalates the stages due at `now`; returns how many notices were sent.
pub async fn nudge_waiting(app: &App, now: DateTime<Utc>) -> Result<usize> {
    let calendar = app.calendar().await?;
    let policy = &app.policies.change;
    let hours = (policy.approval.work_starts, policy.approval.work_ends);
    let mut sent = 0;
    for id in adb::waiting(&app.db).await? {
        // Read without locking first: most waiting stages are not due. One change that cannot
        // be read stops nobody else's reminders.
        let row = match db::get_change(&app.db, id).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(change = id, error = %e, "cannot read a change waiting for approval");
                continue;
            }
        };
        let plan = match stages::plan_of(app, &row) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(change = id, error = %e, "cannot read the approval stages of a change");
                continue;
            }
        };
        let decisions: Vec<StageDecision> = adb::decisions_of(&app.db, &[id])
            .await?
            .into_iter()
            .map(stages::decision_of)
            .collect();
        let Some(index) = approval::current_stage(&plan, &decisions) else {
            continue;
        };
        let stage = &plan[index];
        let since = row.stage_since.unwrap_or(row.notified_at);
        let waited = match calendar.working_minutes((since, now), policy.timezone, hours) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(change = id, error = %e, "cannot count the working hours an approval stage waited");
                continue;
            }
        };
        for nudge in [Nudge::Reminder, Nudge::Escalation] {
            let after = match nudge {
                Nudge::Reminder => stage.remind_after_hours,
                Nudge::Escalation => stage.escalate_after_hours,
            };
            if waited < i64::from(after) * 60
                || (nudge == Nudge::Escalation && stage.escalate_to.is_none())
            {
                continue;
            }
            if send(app, id, &row, index, nudge, waited, now).await? {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

/// One nudge in its own deed: claimed (once across instances), noticed, audited.
async fn send(
    app: &App,
    id: i64,
    seen: &ChangeRow,
    index: usize,
    nudge: Nudge,
    waited: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut tx = Deed::open(app).await?;
    let row = db::get_change_for_update(&mut tx, id).await?;
    // Decided or amended meanwhile: the stage seen is no longer the one waiting.
    if row.status != Status::Submitted.as_str()
        || row.approval_round != seen.approval_round
        || row.stage_since != seen.stage_since
    {
        return Ok(false);
    }
    if !adb::claim_nudge(
        &mut tx,
        id,
        row.approval_round,
        index as i64,
        nudge.kind(),
        now,
    )
    .await?
    {
        return Ok(false);
    }
    let plan = stages::plan_of(app, &row)?;
    let stage = &plan[index];
    let decisions: Vec<StageDecision> = adb::decisions(&mut tx, id)
        .await?
        .into_iter()
        .map(stages::decision_of)
        .collect();
    let hours = waited / 60;
    let comment = format!(
        "审批阶段“{}”已等待 {hours} 个工作小时 / The stage \"{}\" has waited {hours} working hours",
        stage.title_zh, stage.title_en
    );
    let people = match nudge {
        Nudge::Reminder => stages::approvers(&mut tx, &row, stage, &decisions, now).await?,
        Nudge::Escalation => Vec::new(),
    };
    crate::notify::enqueue_change_to(
        app,
        &mut tx,
        id,
        &crate::notify::ChangeNotice {
            event: match nudge {
                Nudge::Reminder => "approval_reminder",
                Nudge::Escalation => "approval_escalated",
            },
            comment: Some(&comment),
            approvers: &people,
            escalate_to: stage.escalate_to.as_deref(),
        },
        now,
    )
    .await?;
    let entry = Entry::ok(
        None,
        match nudge {
            Nudge::Reminder => "change.approval_reminder",
            Nudge::Escalation => "change.approval_escalate",
        },
        format!("change:{id}"),
    )
    .with_details(json!({
        "stage": index, "stage_name": stage.name, "working_minutes_waited": waited,
        "escalate_to": stage.escalate_to, "reminded": people.len(),
    }));
    tx.commit(&entry, now).await?;
    Ok(true)
}
