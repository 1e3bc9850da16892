//! The pure rules of graded approval (分级审批): which stage waits, who may decide it, and how a
//! change's approval is shown. No clock, no database: the stages, the decisions of the round and
//! the people are arguments.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::views::UserRef;
use crate::policy::Stage;

/// One decision recorded on a stage of the current round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDecision {
    pub stage: usize,
    pub approve: bool,
    pub by: UserRef,
    pub on_behalf_of: Option<UserRef>,
    pub comment: Option<String>,
    pub at: DateTime<Utc>,
}

impl StageDecision {
    /// The people this decision counts for: who decided and for whom.
    fn people(&self) -> impl Iterator<Item = i64> + '_ {
        std::iter::once(self.by.id).chain(self.on_behalf_of.as_ref().map(|u| u.id))
    }
}

/// The first stage with fewer approvals than it needs; `None` when every stage is complete.
pub fn current_stage(plan: &[Stage], decisions: &[StageDecision]) -> Option<usize> {
    plan.iter().enumerate().find_map(|(i, s)| {
        let approvals = decisions
            .iter()
            .filter(|d| d.stage == i && d.approve)
            .count();
        (approvals < s.needed as usize).then_some(i)
    })
}

/// Whoever's authority decides a stage: the caller, or the person a delegate acts for.
#[derive(Debug, Clone, Copy)]
pub struct Authority<'a> {
    pub user_id: i64,
    pub roles: &'a [String],
    pub department: &'a str,
    /// The stage's permission is theirs (decided by Cedar on the change, by the caller).
    pub permitted: bool,
}

/// Why somebody may not decide the current stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The authority holds none of the stage's roles (or is of another department), or lacks
    /// its permission.
    NotAnApprover,
    /// The caller or the authority already counted in this round (one person counts once).
    AlreadyCounted,
    /// A delegate would decide a change they requested or carry out.
    DelegateIsParty,
    /// A delegate would exercise a role incompatible with one of their own.
    IncompatibleDuty { role: String, own: String },
}

/// The people of a change who never approve it.
#[derive(Debug, Clone, Copy)]
pub struct Parties {
    pub requester: i64,
    pub assignee: i64,
}

/// May `actor` decide `stage` with `authority` (their own, or through a delegation when
/// `delegate_roles` are the actor's own roles)? Returns the role exercised.
pub fn may_decide<'a>(
    stage: &Stage,
    decisions: &[StageDecision],
    actor: i64,
    authority: &Authority<'a>,
    delegate_roles: Option<&[String]>,
    parties: Parties,
    incompatible: impl Fn(&str, &str) -> bool,
) -> Result<&'a str, Refusal> {
    let Some(role) = authority.roles.iter().find(|r| stage.roles.contains(r)) else {
        return Err(Refusal::NotAnApprover);
    };
    if stage
        .department
        .as_deref()
        .is_some_and(|d| d != authority.department)
        || !authority.permitted
    {
        return Err(Refusal::NotAnApprover);
    }
    if let Some(own) = delegate_roles {
        if actor == parties.requester || actor == parties.assignee {
            return Err(Refusal::DelegateIsParty);
        }
        // Every role of the delegator's that this stage names is exercised.
        for exercised in authority.roles.iter().filter(|r| stage.roles.contains(r)) {
            if let Some(own) = own.iter().find(|o| incompatible(o, exercised)) {
                return Err(Refusal::IncompatibleDuty {
                    role: exercised.clone(),
                    own: own.clone(),
                });
            }
        }
    }
    let counted = |p: i64| decisions.iter().any(|d| d.people().any(|x| x == p));
    if counted(actor) || counted(authority.user_id) {
        return Err(Refusal::AlreadyCounted);
    }
    Ok(role)
}

/// A change's approval as shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApprovalView {
    pub stages: Vec<StageView>,
    /// The index of the first incomplete stage while the change waits for approval; null
    /// otherwise (approved, rejected, or past approval).
    pub current_stage: Option<usize>,
    /// The standard-change template that approved it at filing, if any.
    pub standard_change: Option<StandardRef>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StandardRef {
    pub key: String,
    pub title: String,
    /// The approval the template stands on.
    pub approved_by: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StageState {
    /// Enough distinct people approved.
    Approved,
    /// Waiting for its approvers now.
    Current,
    /// Comes after the current stage (or the change left approval before it).
    Waiting,
    /// A decision on this stage rejected the change.
    Rejected,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StageView {
    pub name: String,
    /// `中文 / English`.
    pub title: String,
    /// The role whose holders approve the stage (the first, when several may).
    pub role: String,
    /// Every role whose holders may approve it.
    pub roles: Vec<String>,
    pub department: Option<String>,
    /// Distinct people needed.
    pub needed: u32,
    pub approvals: Vec<DecisionView>,
    pub rejection: Option<DecisionView>,
    pub state: StageState,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionView {
    pub by: UserRef,
    pub at: DateTime<Utc>,
    pub comment: Option<String>,
    /// The person a delegate decided for.
    pub on_behalf_of: Option<UserRef>,
}

impl From<&StageDecision> for DecisionView {
    fn from(d: &StageDecision) -> Self {
        DecisionView {
            by: d.by.clone(),
            at: d.at,
            comment: d.comment.clone(),
            on_behalf_of: d.on_behalf_of.clone(),
        }
    }
}

/// The approval view of a change with `plan` and the decisions of its round; `waiting`: the
/// change is `submitted` (its current stage waits).
pub fn view(
    plan: &[Stage],
    decisions: &[StageDecision],
    waiting: bool,
    standard_change: Option<StandardRef>,
) -> ApprovalView {
    let current = if waiting {
        current_stage(plan, decisions)
    } else {
        None
    };
    let stages = plan
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let approvals: Vec<DecisionView> = decisions
                .iter()
                .filter(|d| d.stage == i && d.approve)
                .map(DecisionView::from)
                .collect();
            let rejection = decisions
                .iter()
                .find(|d| d.stage == i && !d.approve)
                .map(DecisionView::from);
            let state = if rejection.is_some() {
                StageState::Rejected
            } else if approvals.len() >= s.needed as usize {
                StageState::Approved
            } else if current == Some(i) {
                StageState::Current
            } else {
                StageState::Waiting
            };
            StageView {
                name: s.name.clone(),
                title: format!("{} / {}", s.title_zh, s.title_en),
                role: s.roles.first().cloned().unwrap_or_default(),
                roles: s.roles.clone(),
                department: s.department.clone(),
                needed: s.needed,
                approvals,
                rejection,
                state,
            }
        })
        .collect();
    ApprovalView {
        stages,
        current_stage: current,
        standard_change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(name: &str, roles: &[&str], needed: u32) -> Stage {
        Stage {
            name: name.into(),
            title_zh: name.into(),
            title_en: name.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            department: None,
            needed,
            permission: "change.approve".into(),
            remind_after_hours: 4,
            escalate_after_hours: 8,
            escalate_to: None,
        }
    }

    fn user(id: i64) -> UserRef {
        UserRef {
            id,
            username: format!("u{id}"),
            display_name: format!("U{id}"),
        }
    }

    fn approved(stage: usize, by: i64, for_: Option<i64>) -> StageDecision {
        StageDecision {
            stage,
            approve: true,
            by: user(by),
            on_behalf_of: for_.map(user),
            comment: None,
            at: DateTime::UNIX_EPOCH,
        }
    }

    fn roles(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    fn auth<'a>(roles: &'a [String], department: &'a str, permitted: bool) -> Authority<'a> {
        Authority {
            user_id: 10,
            roles,
            department,
            permitted,
        }
    }

    const PARTIES: Parties = Parties {
        requester: 1,
        assignee: 2,
    };

    fn never(_: &str, _: &str) -> bool {
        false
    }

    #[test]
    fn stages_complete_in_order_and_count_distinct_people() {
        let plan = [
            stage("lead", &["tech_lead"], 1),
            stage("board", &["manager", "compliance"], 2),
        ];
        assert_eq!(current_stage(&plan, &[]), Some(0));
        let d = vec![approved(0, 10, None)];
        assert_eq!(current_stage(&plan, &d), Some(1));
        let mut d2 = d.clone();
        d2.push(approved(1, 11, None));
        assert_eq!(current_stage(&plan, &d2), Some(1));
        d2.push(approved(1, 12, None));
        assert_eq!(current_stage(&plan, &d2), None);
    }

    #[test]
    fn one_person_counts_once_across_stages_and_delegations() {
        let plan = [
            stage("lead", &["manager"], 1),
            stage("mgmt", &["manager"], 1),
        ];
        let mgr = roles(&["manager"]);
        let me = Authority {
            user_id: 10,
            roles: &mgr,
            department: "电子银行部",
            permitted: true,
        };
        let d = vec![approved(0, 10, None)];
        assert_eq!(
            may_decide(&plan[1], &d, 10, &me, None, PARTIES, never),
            Err(Refusal::AlreadyCounted)
        );
        // A delegate who decided stage 0 for somebody counts too, and so does the person.
        let d = vec![approved(0, 20, Some(10))];
        assert_eq!(
            may_decide(&plan[1], &d, 10, &me, None, PARTIES, never),
            Err(Refusal::AlreadyCounted)
        );
        let other = Authority { user_id: 11, ..me };
        assert_eq!(
            may_decide(&plan[1], &d, 20, &other, Some(&[]), PARTIES, never),
            Err(Refusal::AlreadyCounted)
        );
        assert_eq!(
            may_decide(&plan[1], &d, 11, &other, None, PARTIES, never),
            Ok("manager")
        );
    }

    #[test]
    fn roles_department_and_permission_decide_who_approves() {
        let mut s = stage("lead", &["tech_lead"], 1);
        let op = roles(&["tech_operator"]);
        let lead = roles(&["tech_lead"]);
        assert_eq!(
            may_decide(
                &s,
                &[],
                10,
                &auth(&op, "科技部", true),
                None,
                PARTIES,
                never
            ),
            Err(Refusal::NotAnApprover)
        );
        assert_eq!(
            may_decide(
                &s,
                &[],
                10,
                &auth(&lead, "科技部", false),
                None,
                PARTIES,
                never
            ),
            Err(Refusal::NotAnApprover)
        );
        s.department = Some("科技部".into());
        assert_eq!(
            may_decide(
                &s,
                &[],
                10,
                &auth(&lead, "运营部", true),
                None,
                PARTIES,
                never
            ),
            Err(Refusal::NotAnApprover)
        );
        assert_eq!(
            may_decide(
                &s,
                &[],
                10,
                &auth(&lead, "科技部", true),
                None,
                PARTIES,
                never
            ),
            Ok("tech_lead")
        );
    }

    #[test]
    fn a_delegate_never_decides_their_own_change_nor_an_incompatible_duty() {
        let s = stage("mgmt", &["manager"], 1);
        let mgr = roles(&["manager"]);
        let boss = Authority {
            user_id: 10,
            roles: &mgr,
            department: "电子银行部",
            permitted: true,
        };
        for party in [PARTIES.requester, PARTIES.assignee] {
            assert_eq!(
                may_decide(&s, &[], party, &boss, Some(&[]), PARTIES, never),
                Err(Refusal::DelegateIsParty)
            );
        }
        let op = roles(&["tech_operator"]);
        let incompatible = |a: &str, b: &str| (a, b) == ("tech_operator", "manager");
        assert_eq!(
            may_decide(&s, &[], 30, &boss, Some(&op), PARTIES, incompatible),
            Err(Refusal::IncompatibleDuty {
                role: "manager".into(),
                own: "tech_operator".into()
            })
        );
        assert_eq!(
            may_decide(
                &s,
                &[],
                30,
                &boss,
                Some(&roles(&["viewer"])),
                PARTIES,
                incompatible
            ),
            Ok("manager")
        );
    }

    #[test]
    fn the_view_marks_each_stage() {
        let plan = [
            stage("lead", &["tech_lead"], 1),
            stage("mgmt", &["manager"], 1),
        ];
        let d = vec![approved(0, 10, None)];
        let v = view(&plan, &d, true, None);
        assert_eq!(v.current_stage, Some(1));
        assert_eq!(v.stages[0].state, StageState::Approved);
        assert_eq!(v.stages[1].state, StageState::Current);
        let mut r = d.clone();
        r.push(StageDecision {
            approve: false,
            ..approved(1, 11, None)
        });
        let v = view(&plan, &r, false, None);
        assert_eq!(v.current_stage, None);
        assert_eq!(v.stages[1].state, StageState::Rejected);
        assert_eq!(v.stages[1].rejection.as_ref().unwrap().by.id, 11);
    }
}
