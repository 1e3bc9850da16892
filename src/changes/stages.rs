//! Deciding the current stage of a change's approval, inside the deed that records it: whose
//! authority decides (the caller's own, or a delegation's), and what follows.

use super::approval::{self, Authority, Parties, Refusal, StageDecision, StandardRef};
use super::*;
use crate::db::CorruptValue;
use crate::db::approvals::{self as adb, DecisionRow, NewDecision};
use crate::policy::Stage;

/// The stages of a new approval round for a change of `category` and `risk`.
pub(super) fn plan_for(app: &App, category: &str, risk: &str, emergency: bool) -> Vec<Stage> {
    let policy = &app.policies.change;
    if emergency {
        return policy.approval.emergency_plan(
            app.policies
                .authorizer
                .roles_with("change.approve_emergency"),
        );
    }
    match policy.categories.get(category) {
        Some(c) => policy.stages_for(c, risk),
        None => policy
            .approval
            .plan(None, &Default::default(), risk, "change.approve"),
    }
}

pub(super) fn plan_json(plan: &[Stage]) -> String {
    serde_json::to_string(plan).unwrap_or_else(|_| "[]".into())
}

/// The stages a change carries: its round's plan, or (filed before graded approval) the
/// policy's.
pub(super) fn plan_of(app: &App, row: &ChangeRow) -> Result<Vec<Stage>> {
    match &row.approval_plan {
        Some(json) => serde_json::from_str(json).map_err(|_| {
            Error::Internal(anyhow::Error::new(CorruptValue::new("approval_plan", json)))
        }),
        None => Ok(plan_for(app, &row.category, &row.risk, row.emergency)),
    }
}

pub(super) fn decision_of(r: DecisionRow) -> StageDecision {
    StageDecision {
        stage: usize::try_from(r.stage).unwrap_or(usize::MAX),
        approve: r.approve,
        by: UserRef {
            id: r.user_id,
            username: r.username,
            display_name: r.display_name,
        },
        on_behalf_of: r.on_behalf_of.map(|id| UserRef {
            id,
            username: r.behalf_username.unwrap_or_default(),
            display_name: r.behalf_name.unwrap_or_default(),
        }),
        comment: r.comment,
        at: r.decided_at,
    }
}

/// The approval view of a change from its row and the decisions of its round.
pub(super) fn approval_view(
    app: &App,
    row: &ChangeRow,
    decisions: &[StageDecision],
) -> Result<approval::ApprovalView> {
    let plan = plan_of(app, row)?;
    let standard = row.standard_change.as_ref().map(|key| {
        let t = app.policies.standard.templates.get(key);
        StandardRef {
            key: key.clone(),
            title: t.map_or_else(
                || key.clone(),
                |t| format!("{} / {}", t.title_zh, t.title_en),
            ),
            approved_by: t.map(|t| t.approved_by.clone()).unwrap_or_default(),
        }
    });
    Ok(approval::view(
        &plan,
        decisions,
        row.status == Status::Submitted.as_str(),
        standard,
    ))
}

/// Whose authority decides `stage` for `who`, and the policies that allowed it.
struct Chosen {
    /// The delegator (id, username) when a delegate decides.
    behalf: Option<(i64, String)>,
    role: String,
    policy_ids: Vec<String>,
}

/// The caller's own authority, else the delegation named (`on_behalf_of`) or the first in
/// force that may decide the stage; the refusal that says most otherwise.
#[allow(clippy::too_many_arguments)]
async fn choose(
    app: &App,
    tx: &mut crate::db::Tx,
    who: &Principal,
    row: &ChangeRow,
    stage: &Stage,
    decisions: &[StageDecision],
    on_behalf_of: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Chosen> {
    let facts = lifecycle::facts(row);
    let parties = Parties {
        requester: row.requester_id,
        assignee: row.assignee_id,
    };
    let authz = &app.policies.authorizer;
    let roles = &app.policies.roles;
    // Whether `p`'s own authority covers the stage's permission on this change (Cedar: the
    // permission itself, and separation of duties on the change).
    let permitted = |p: &Principal| -> (bool, Vec<String>) {
        let api = authz.decide(p, &stage.permission, &Resource::Api, &Facts::default());
        let on_change = authz.decide(
            p,
            "change.approve",
            &Resource::Change(facts),
            &Facts::default(),
        );
        let mut ids = api.policy_ids;
        ids.extend(on_change.policy_ids);
        (api.allowed && on_change.allowed, ids)
    };
    // The requester and the assignee never decide, by any authority.
    if who.user_id == row.requester_id || who.user_id == row.assignee_id {
        lifecycle::require(authz.decide(
            who,
            "change.approve",
            &Resource::Change(facts),
            &Facts::default(),
        ))?;
    }
    let own = |p: &Principal, delegate: Option<&[String]>| {
        let (ok, ids) = permitted(p);
        let authority = Authority {
            user_id: p.user_id,
            roles: &p.roles,
            department: &p.department,
            permitted: ok,
        };
        approval::may_decide(
            stage,
            decisions,
            who.user_id,
            &authority,
            delegate,
            parties,
            |a, b| roles.incompatible(a, b),
        )
        .map(|role| (role.to_string(), ids))
    };

    let delegations = adb::in_force_to(tx, who.user_id, now).await?;
    let mut chosen: Option<Chosen> = None;
    let mut refusal = None;
    if let Some(name) = on_behalf_of {
        let name = crate::auth::normalize_username(name);
        let Some(d) = delegations.iter().find(|d| d.delegator_username == name) else {
            return Err(Error::Forbidden {
                code: "no_delegation",
                message: format!(
                    "{name} 没有委托您代为审批（或委托不在有效期内） / {name} has no delegation to you in force"
                ),
                policy_ids: Vec::new(),
            });
        };
        match crate::accounts::principal_in(tx, d.delegator_id, now).await? {
            Some(p) => match own(&p, Some(&who.roles)) {
                Ok((role, ids)) => {
                    chosen = Some(Chosen {
                        behalf: Some((p.user_id, p.username)),
                        role,
                        policy_ids: ids,
                    })
                }
                Err(r) => refusal = Some(r),
            },
            None => refusal = Some(Refusal::NotAnApprover),
        }
    } else {
        match own(who, None) {
            Ok((role, ids)) => {
                chosen = Some(Chosen {
                    behalf: None,
                    role,
                    policy_ids: ids,
                })
            }
            Err(r) => {
                refusal = Some(r);
                for d in &delegations {
                    let Some(p) = crate::accounts::principal_in(tx, d.delegator_id, now).await?
                    else {
                        continue;
                    };
                    match own(&p, Some(&who.roles)) {
                        Ok((role, ids)) => {
                            chosen = Some(Chosen {
                                behalf: Some((p.user_id, p.username)),
                                role,
                                policy_ids: ids,
                            });
                            break;
                        }
                        // A delegation that fails for a reason of its own says more than
                        // "not an approver" of the caller's own roles.
                        Err(r) if r != Refusal::NotAnApprover => refusal = Some(r),
                        Err(_) => {}
                    }
                }
            }
        }
    }
    chosen.ok_or_else(|| {
        let r = refusal.unwrap_or(Refusal::NotAnApprover);
        refusal_error(stage, &r, row.emergency, roles)
    })
}

/// Whether `who` may decide the waiting stage of change `id` now (by the same rules as deciding
/// it): what a console offers.
pub async fn may_decide_now(app: &App, who: &Principal, id: i64) -> Result<bool> {
    let now = app.now();
    let row = db::get_change(&app.db, id).await.map_err(not_found)?;
    if row.status != Status::Submitted.as_str() {
        return Ok(false);
    }
    let plan = plan_of(app, &row)?;
    // A transaction that only reads, dropped (rolled back) at the end.
    let mut tx = app.db.begin_read().await?;
    let decisions: Vec<StageDecision> = adb::decisions(&mut tx, id)
        .await?
        .into_iter()
        .map(decision_of)
        .collect();
    let Some(index) = approval::current_stage(&plan, &decisions) else {
        return Ok(false);
    };
    Ok(
        choose(app, &mut tx, who, &row, &plan[index], &decisions, None, now)
            .await
            .is_ok(),
    )
}

/// A stage decided.
pub(super) struct Decided {
    pub stage: usize,
    pub title: String,
    /// Every stage is complete: the change is approved.
    pub approved: bool,
    /// The stage is complete (the next one waits from now).
    pub stage_complete: bool,
    pub on_behalf_of: Option<String>,
    pub role: String,
    pub policy_ids: Vec<String>,
}

/// What the caller asks: approve or reject the current stage, optionally for a delegator.
pub(super) struct Ask<'a> {
    pub approve: bool,
    pub on_behalf_of: Option<&'a str>,
    pub comment: Option<&'a str>,
}

fn not_an_approver(stage: &Stage, zh: &str, en: &str) -> Error {
    Error::Forbidden {
        code: "not_an_approver_of_this_stage",
        message: format!(
            "当前审批阶段为“{}”：{zh} / The current stage is \"{}\": {en}",
            stage.title_zh, stage.title_en
        ),
        policy_ids: Vec::new(),
    }
}

fn refusal_error(
    stage: &Stage,
    r: &Refusal,
    emergency: bool,
    catalog: &crate::policy::RoleCatalog,
) -> Error {
    match r {
        Refusal::NotAnApprover if emergency => Error::Forbidden {
            code: "emergency_approval_required",
            message: "紧急变更须由持有 change.approve_emergency 权限者审批 / An emergency change is approved by a holder of change.approve_emergency".into(),
            policy_ids: Vec::new(),
        },
        Refusal::NotAnApprover => {
            let title = |r: &String, zh: bool| {
                catalog.get(r).map_or(r.clone(), |x| {
                    if zh { x.title_zh.clone() } else { x.title_en.clone() }
                })
            };
            let names = |zh: bool| {
                stage
                    .roles
                    .iter()
                    .map(|r| title(r, zh))
                    .collect::<Vec<_>>()
            };
            let department = stage.department.as_deref();
            not_an_approver(
                stage,
                &format!(
                    "须由{}{}审批",
                    department.map(|d| format!("{d}的")).unwrap_or_default(),
                    names(true).join("或")
                ),
                &format!(
                    "it is decided by a {}{}",
                    names(false).join(" or "),
                    department.map(|d| format!(" of {d}")).unwrap_or_default()
                ),
            )
        }
        Refusal::AlreadyCounted => not_an_approver(
            stage,
            "同一人在各审批阶段只计一次，您（或您代表的人）已参与本轮审批",
            "one person counts once across all stages, and you (or whom you act for) already did",
        ),
        Refusal::DelegateIsParty => Error::Forbidden {
            code: "self_approval",
            message: "受托人不能审批自己申请或执行的变更 / A delegate cannot decide a change they requested or carry out".into(),
            policy_ids: Vec::new(),
        },
        Refusal::IncompatibleDuty { role, own } => Error::Forbidden {
            code: "incompatible_duties",
            message: format!(
                "您的角色 {own} 与 {role} 的职责不相容，不能代为审批 / Your role {own} is incompatible with {role}: you cannot decide in its place"
            ),
            policy_ids: Vec::new(),
        },
    }
}

/// Decides the current stage of `row` (locked by the caller) and records the decision.
pub(super) async fn decide(
    app: &App,
    tx: &mut Deed<'_>,
    who: &Principal,
    row: &ChangeRow,
    ask: Ask<'_>,
    now: DateTime<Utc>,
) -> Result<Decided> {
    let plan = plan_of(app, row)?;
    let decisions: Vec<StageDecision> = adb::decisions(tx, row.id)
        .await?
        .into_iter()
        .map(decision_of)
        .collect();
    let Some(index) = approval::current_stage(&plan, &decisions) else {
        return Err(Error::conflict(
            "invalid_transition",
            "该变更的审批阶段均已完成 / Every approval stage of this change is complete",
        ));
    };
    let stage = &plan[index];
    let Chosen {
        behalf,
        role,
        policy_ids,
    } = choose(app, tx, who, row, stage, &decisions, ask.on_behalf_of, now).await?;
    adb::insert_decision(
        tx,
        &NewDecision {
            change_id: row.id,
            round: row.approval_round,
            stage: index as i64,
            approve: ask.approve,
            user_id: who.user_id,
            on_behalf_of: behalf.as_ref().map(|b| b.0),
            comment: ask.comment,
        },
        now,
    )
    .await?;
    let approvals = decisions
        .iter()
        .filter(|d| d.stage == index && d.approve)
        .count()
        + 1;
    let stage_complete = ask.approve && approvals >= stage.needed as usize;
    Ok(Decided {
        stage: index,
        title: format!("{} / {}", stage.title_zh, stage.title_en),
        approved: stage_complete && index + 1 == plan.len(),
        stage_complete,
        on_behalf_of: behalf.map(|b| b.1),
        role,
        policy_ids,
    })
}

/// The people who may decide `stage` now (its roles' holders of its department, but the
/// requester, the assignee and whoever already counted), and their delegates in force: whom a
/// stage's notices go to.
pub(super) async fn approvers(
    tx: &mut Deed<'_>,
    row: &ChangeRow,
    stage: &Stage,
    decisions: &[StageDecision],
    now: DateTime<Utc>,
) -> Result<Vec<i64>> {
    let mut ids: Vec<i64> = Vec::new();
    for role in &stage.roles {
        for (id, department) in adb::holders(tx, role, now).await? {
            if stage.department.as_deref().is_some_and(|d| d != department)
                || id == row.requester_id
                || id == row.assignee_id
                || decisions
                    .iter()
                    .any(|d| d.by.id == id || d.on_behalf_of.as_ref().is_some_and(|b| b.id == id))
            {
                continue;
            }
            ids.push(id);
        }
    }
    let delegates = adb::delegates_of(tx, &ids, now).await?;
    ids.extend(
        delegates
            .into_iter()
            .filter(|d| *d != row.requester_id && *d != row.assignee_id),
    );
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Asks the approvers of the waiting stage of change `id` (a new round or a stage that opened).
pub(super) async fn ask_first_stage(
    app: &App,
    tx: &mut Deed<'_>,
    id: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    ask_waiting_stage(app, tx, id, None, now).await
}

async fn ask_waiting_stage(
    app: &App,
    tx: &mut Deed<'_>,
    id: i64,
    comment: Option<&str>,
    now: DateTime<Utc>,
) -> Result<()> {
    let row = db::get_change_for_update(tx, id).await?;
    let plan = plan_of(app, &row)?;
    let decisions: Vec<StageDecision> = adb::decisions(tx, id)
        .await?
        .into_iter()
        .map(decision_of)
        .collect();
    let Some(next) = approval::current_stage(&plan, &decisions) else {
        return Ok(());
    };
    let people = approvers(tx, &row, &plan[next], &decisions, now).await?;
    crate::notify::enqueue_change_to(
        app,
        tx,
        id,
        &crate::notify::ChangeNotice {
            event: "approval_requested",
            comment,
            approvers: &people,
            escalate_to: None,
        },
        now,
    )
    .await?;
    Ok(())
}

/// Approves or rejects the current stage of change `id` (`approve`), for the caller or, under
/// a delegation, for the person they act for. The last stage approved approves the change; a
/// rejection at any stage rejects it. One transaction: the decision, the timeline line, the
/// notices (the next stage's approvers, or the requester and the assignee) and the audit entry.
pub(super) async fn decide_command(
    app: &App,
    who: &Principal,
    id: i64,
    approve: bool,
    comment: Option<String>,
    on_behalf_of: Option<&str>,
) -> Result<ChangeView> {
    if let Some(c) = &comment {
        text::optional("comment", Some(c), 10_000, Lines::Many)?;
    }
    if let Some(name) = on_behalf_of {
        text::required("on_behalf_of", name, 64, Lines::One)?;
    }
    let step = if approve { Step::Approve } else { Step::Reject };
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let row = db::get_change_for_update(&mut tx, id)
        .await
        .map_err(not_found)?;
    let from = Status::parse(&row.status)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("bad status {}", row.status)))?;
    let to =
        rules::next(from, step).ok_or_else(|| lifecycle::invalid_transition(&row.status, step))?;
    let d = decide(
        app,
        &mut tx,
        who,
        &row,
        Ask {
            approve,
            on_behalf_of,
            comment: comment.as_deref(),
        },
        now,
    )
    .await?;
    let to = if !approve || d.approved {
        to
    } else {
        Status::Submitted
    };
    let update = ChangeUpdate {
        status: Some(to.as_str()),
        approved: d.approved.then_some((Some(who.user_id), now)),
        stage_advanced: d.stage_complete && !d.approved,
        ..Default::default()
    };
    db::update_change(&mut tx, id, &update, now).await?;
    let behalf = d
        .on_behalf_of
        .as_deref()
        .map(|u| format!("（代 {u} / on behalf of {u}）"))
        .unwrap_or_default();
    let line = format!(
        "{} {}{behalf}{}",
        d.title,
        match (approve, d.stage_complete) {
            (false, _) => "驳回 / rejected",
            (true, true) => "通过 / approved",
            (true, false) => "同意（尚需更多人） / approved, more approvers needed",
        },
        comment
            .as_deref()
            .map(|c| format!("：{c}"))
            .unwrap_or_default()
    );
    // The next stage opens: its approvers are asked.
    if d.stage_complete && !d.approved {
        ask_waiting_stage(app, &mut tx, id, Some(&line), now).await?;
    }
    let mut policy_ids = d.policy_ids;
    policy_ids.sort();
    policy_ids.dedup();
    let entry = Entry::by(
        who,
        &format!("change.{}", step.as_str()),
        format!("change:{id}"),
    )
    .with_policies(&policy_ids)
    .with_details(json!({
        "from": row.status, "to": to.as_str(), "stage": d.stage, "stage_title": d.title,
        "role": d.role, "on_behalf_of": d.on_behalf_of, "stage_complete": d.stage_complete,
        "comment": comment, "emergency": row.emergency,
    }));
    record(
        app,
        tx,
        Line {
            id,
            from: Some(&row.status),
            to: to.as_str(),
            actor: Some(who.user_id),
            comment: Some(&line),
            notice: match (approve, d.approved) {
                (false, _) => Some("rejected"),
                (true, true) => Some("approved"),
                (true, false) => None,
            },
        },
        &entry,
        now,
    )
    .await?;
    get(app, id).await
}
