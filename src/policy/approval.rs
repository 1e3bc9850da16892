//! The approval stages of `policies/change-policy.toml` (分级审批; the supervisory guideline's
//! joint approval by the technology and the business department): `[approval]` holds the
//! default for every category and its override per risk; a category may override both.

use std::collections::BTreeMap;

use chrono::NaiveTime;
use serde::{Deserialize, Serialize};

/// One stage as written in the policy.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StageRule {
    /// A short key (`tech_lead`), unique in its list.
    pub name: String,
    pub title_zh: String,
    pub title_en: String,
    /// The role whose holders approve the stage, or several in `roles` (any of them).
    pub role: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Only holders from this department (the user's `department`).
    pub department: Option<String>,
    /// How many distinct people must approve.
    #[serde(default = "one")]
    pub needed: u32,
    /// Working hours the stage may wait before its approvers are reminded; default `[approval]`.
    pub remind_after_hours: Option<u32>,
    /// Working hours before it is escalated to `escalate_to`; default `[approval]`.
    pub escalate_after_hours: Option<u32>,
    /// The role told when the stage waits too long; default `[approval] escalate_to`.
    pub escalate_to: Option<String>,
}

fn one() -> u32 {
    1
}

/// `[approval]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApprovalFile {
    #[serde(default = "default_work_starts")]
    pub work_starts: String,
    #[serde(default = "default_work_ends")]
    pub work_ends: String,
    #[serde(default = "default_remind")]
    pub remind_after_hours: u32,
    #[serde(default = "default_escalate")]
    pub escalate_after_hours: u32,
    pub escalate_to: Option<String>,
    pub stages: Vec<StageRule>,
    #[serde(default)]
    pub risk_stages: BTreeMap<String, Vec<StageRule>>,
}

fn default_work_starts() -> String {
    "08:30".into()
}

fn default_work_ends() -> String {
    "17:30".into()
}

fn default_remind() -> u32 {
    4
}

fn default_escalate() -> u32 {
    8
}

/// A stage as a change carries it: resolved from the policy when its approval round begins
/// (filing, amending), so a later policy edit does not move a change's stages under it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub name: String,
    pub title_zh: String,
    pub title_en: String,
    /// Holders of any of these roles approve (never empty).
    pub roles: Vec<String>,
    pub department: Option<String>,
    pub needed: u32,
    /// The permission an approver must hold (the category's `approve_permission`, or
    /// `change.approve_emergency` for an emergency).
    pub permission: String,
    pub remind_after_hours: u32,
    pub escalate_after_hours: u32,
    pub escalate_to: Option<String>,
}

/// The approval rules, validated.
#[derive(Debug, Clone)]
pub struct ApprovalPolicy {
    /// The working day's hours in the bank's time zone, for `remind_after_hours`.
    pub work_starts: NaiveTime,
    pub work_ends: NaiveTime,
    pub remind_after_hours: u32,
    pub escalate_after_hours: u32,
    pub escalate_to: Option<String>,
    pub stages: Vec<StageRule>,
    pub risk_stages: BTreeMap<String, Vec<StageRule>>,
}

/// The risks a `risk_stages` table may name.
pub const RISKS: [&str; 3] = ["low", "medium", "high"];

impl ApprovalPolicy {
    /// Validates `[approval]`; `Err` is the reason (the caller adds file and line).
    pub(super) fn from_file(
        f: ApprovalFile,
        is_role: &impl Fn(&str) -> bool,
    ) -> Result<ApprovalPolicy, String> {
        let time = |s: &str, what: &str| {
            NaiveTime::parse_from_str(s, "%H:%M")
                .map_err(|_| format!("approval.{what} `{s}` is not a time like 08:30"))
        };
        let work_starts = time(&f.work_starts, "work_starts")?;
        let work_ends = time(&f.work_ends, "work_ends")?;
        if work_ends <= work_starts {
            return Err("approval.work_ends must be after work_starts".into());
        }
        check_hours(f.remind_after_hours, f.escalate_after_hours, "approval")?;
        if let Some(r) = f.escalate_to.as_deref().filter(|r| !is_role(r)) {
            return Err(format!("approval.escalate_to names unknown role `{r}`"));
        }
        let hours = (f.remind_after_hours, f.escalate_after_hours);
        check_stages(&f.stages, "approval.stages", is_role, hours)?;
        check_risk_stages(&f.risk_stages, "approval.risk_stages", is_role, hours)?;
        Ok(ApprovalPolicy {
            work_starts,
            work_ends,
            remind_after_hours: f.remind_after_hours,
            escalate_after_hours: f.escalate_after_hours,
            escalate_to: f.escalate_to,
            stages: f.stages,
            risk_stages: f.risk_stages,
        })
    }

    /// The stages of a normal change: the category's list for its risk, else the category's
    /// list, else `[approval]`'s list for the risk, else `[approval] stages`.
    pub fn plan(
        &self,
        category_stages: Option<&[StageRule]>,
        category_risk_stages: &BTreeMap<String, Vec<StageRule>>,
        risk: &str,
        permission: &str,
    ) -> Vec<Stage> {
        let rules = category_risk_stages
            .get(risk)
            .map(Vec::as_slice)
            .or(category_stages)
            .or_else(|| self.risk_stages.get(risk).map(Vec::as_slice))
            .unwrap_or(&self.stages);
        rules.iter().map(|r| self.resolve(r, permission)).collect()
    }

    fn resolve(&self, r: &StageRule, permission: &str) -> Stage {
        Stage {
            name: r.name.clone(),
            title_zh: r.title_zh.clone(),
            title_en: r.title_en.clone(),
            roles: rule_roles(r),
            department: r.department.clone(),
            needed: r.needed,
            permission: permission.to_string(),
            remind_after_hours: r.remind_after_hours.unwrap_or(self.remind_after_hours),
            escalate_after_hours: r.escalate_after_hours.unwrap_or(self.escalate_after_hours),
            escalate_to: r.escalate_to.clone().or_else(|| self.escalate_to.clone()),
        }
    }

    /// The one stage of an emergency change: a holder of `change.approve_emergency`
    /// (`roles`: the roles that carry it).
    pub fn emergency_plan(&self, roles: Vec<String>) -> Vec<Stage> {
        vec![Stage {
            name: "emergency".into(),
            title_zh: "紧急变更审批".into(),
            title_en: "Emergency approval".into(),
            roles,
            department: None,
            needed: 1,
            permission: "change.approve_emergency".into(),
            remind_after_hours: self.remind_after_hours,
            escalate_after_hours: self.escalate_after_hours,
            escalate_to: self.escalate_to.clone(),
        }]
    }
}

fn rule_roles(r: &StageRule) -> Vec<String> {
    let mut roles: Vec<String> = r.role.iter().cloned().collect();
    roles.extend(r.roles.iter().cloned());
    roles
}

fn check_hours(remind: u32, escalate: u32, at: &str) -> Result<(), String> {
    if remind == 0 || escalate <= remind || escalate > 24 * 30 {
        return Err(format!(
            "{at}: remind_after_hours must be at least 1 and escalate_after_hours after it (at most 720)"
        ));
    }
    Ok(())
}

/// Checks a list of stages (`at` names it in the reason).
pub(super) fn check_stages(
    stages: &[StageRule],
    at: &str,
    is_role: &impl Fn(&str) -> bool,
    hours: (u32, u32),
) -> Result<(), String> {
    if stages.is_empty() {
        return Err(format!("{at}: at least one stage is needed"));
    }
    let mut names: Vec<&str> = Vec::new();
    for s in stages {
        let here = format!("{at} `{}`", s.name);
        if s.name.is_empty()
            || !s
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "{here}: name must be lowercase letters, digits and _"
            ));
        }
        if names.contains(&s.name.as_str()) {
            return Err(format!("{here}: the name is used twice"));
        }
        names.push(&s.name);
        if s.title_zh.trim().is_empty() || s.title_en.trim().is_empty() {
            return Err(format!("{here}: title_zh and title_en are needed"));
        }
        let roles = rule_roles(s);
        if roles.is_empty() {
            return Err(format!("{here}: name the approving `role` (or `roles`)"));
        }
        if let Some(r) = roles.iter().find(|r| !is_role(r)) {
            return Err(format!("{here}: unknown role `{r}`"));
        }
        if !(1..=10).contains(&s.needed) {
            return Err(format!("{here}: needed must be 1 to 10"));
        }
        if s.department.as_deref().is_some_and(|d| d.trim().is_empty()) {
            return Err(format!("{here}: department is empty"));
        }
        if let Some(r) = s.escalate_to.as_deref().filter(|r| !is_role(r)) {
            return Err(format!("{here}: escalate_to names unknown role `{r}`"));
        }
        check_hours(
            s.remind_after_hours.unwrap_or(hours.0),
            s.escalate_after_hours.unwrap_or(hours.1),
            &here,
        )?;
    }
    Ok(())
}

pub(super) fn check_risk_stages(
    m: &BTreeMap<String, Vec<StageRule>>,
    at: &str,
    is_role: &impl Fn(&str) -> bool,
    hours: (u32, u32),
) -> Result<(), String> {
    for (risk, stages) in m {
        if !RISKS.contains(&risk.as_str()) {
            return Err(format!(
                "{at}.{risk}: unknown risk (one of: {})",
                RISKS.join(", ")
            ));
        }
        check_stages(stages, &format!("{at}.{risk}"), is_role, hours)?;
    }
    Ok(())
}
