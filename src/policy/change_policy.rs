//! `policies/change-policy.toml`: the bank's time zone, the notice rule (Art. 20), the change
//! categories and their rules, and freeze windows.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, FixedOffset};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::approval::{ApprovalFile, ApprovalPolicy, StageRule, check_risk_stages, check_stages};
use super::{PolicyFileError, parse_toml, read};
use crate::calendar::NoticeRule;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    timezone: String,
    #[serde(default = "default_max_window")]
    max_window_days: u32,
    #[serde(default)]
    notice: NoticeRule,
    categories: BTreeMap<String, Category>,
    #[serde(default)]
    freeze_windows: Vec<FreezeWindow>,
    approval: ApprovalFile,
}

fn default_max_window() -> u32 {
    14
}

/// One change category (software_upgrade, hardware, database, debugging).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Category {
    pub title_zh: String,
    pub title_en: String,
    /// Allowed values of `action`; empty: no action is asked for.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Working days of notice; default: `[notice] working_days`.
    pub lead_working_days: Option<u32>,
    /// The permission that approves a normal change of this category.
    #[serde(default = "default_approve")]
    pub approve_permission: String,
    /// Roles whose holders are notified of the change.
    #[serde(default)]
    pub notify_roles: Vec<String>,
    /// Extra mailboxes notified (e.g. the department's shared address).
    #[serde(default)]
    pub notify_mailboxes: Vec<String>,
    /// This category's approval stages instead of `[approval] stages`.
    pub stages: Option<Vec<StageRule>>,
    /// This category's stages per risk, before every other list.
    #[serde(default)]
    pub risk_stages: BTreeMap<String, Vec<StageRule>>,
}

fn default_approve() -> String {
    "change.approve".into()
}

/// A period in which normal changes are refused (e.g. year-end closing).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FreezeWindow {
    pub name: String,
    /// RFC 3339 with offset, as a TOML date-time or a string.
    #[schema(value_type = String)]
    #[serde(deserialize_with = "date_time")]
    pub start: DateTime<FixedOffset>,
    #[schema(value_type = String)]
    #[serde(deserialize_with = "date_time")]
    pub end: DateTime<FixedOffset>,
    /// Categories frozen; empty: all.
    #[serde(default)]
    pub categories: Vec<String>,
}

/// A TOML offset date-time (`2026-12-31T00:00:00+08:00`) or the same as a string.
fn date_time<'de, D: serde::Deserializer<'de>>(d: D) -> Result<DateTime<FixedOffset>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Toml(toml::value::Datetime),
        Text(String),
    }
    let text = match Either::deserialize(d)? {
        Either::Toml(t) => t.to_string(),
        Either::Text(s) => s,
    };
    DateTime::parse_from_rfc3339(&text).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{text}` is not a date and time with offset, e.g. 2026-12-31T00:00:00+08:00"
        ))
    })
}

#[derive(Debug, Clone)]
pub struct ChangePolicy {
    pub timezone: Tz,
    pub max_window_days: u32,
    pub notice: NoticeRule,
    pub categories: BTreeMap<String, Category>,
    pub freeze_windows: Vec<FreezeWindow>,
    pub approval: ApprovalPolicy,
}

impl ChangePolicy {
    /// `is_action` tells which permissions exist (from the Cedar schema); `is_role` which roles.
    pub fn load(
        path: &Path,
        is_action: impl Fn(&str) -> bool,
        is_role: impl Fn(&str) -> bool,
    ) -> Result<ChangePolicy, PolicyFileError> {
        let src = read(path)?;
        Self::parse(path, &src, is_action, is_role)
    }

    pub fn parse(
        path: &Path,
        src: &str,
        is_action: impl Fn(&str) -> bool,
        is_role: impl Fn(&str) -> bool,
    ) -> Result<ChangePolicy, PolicyFileError> {
        let f: File = parse_toml(path, src)?;
        let line_of = |needle: &str| src.lines().position(|l| l.contains(needle)).map(|i| i + 1);
        let timezone: Tz = f.timezone.parse().map_err(|_| {
            PolicyFileError::at(
                path,
                line_of("timezone"),
                format!("unknown time zone `{}` (e.g. Asia/Shanghai)", f.timezone),
            )
        })?;
        f.notice
            .validate()
            .map_err(|e| PolicyFileError::at(path, line_of("working_days"), e.to_string()))?;
        if !(1..=366).contains(&f.max_window_days) {
            return Err(PolicyFileError::at(
                path,
                line_of("max_window_days"),
                "max_window_days must be 1 to 366",
            ));
        }
        let approval = ApprovalPolicy::from_file(f.approval.clone(), &is_role)
            .map_err(|e| PolicyFileError::at(path, line_of("[approval"), e))?;
        let hours = (approval.remind_after_hours, approval.escalate_after_hours);
        if f.categories.is_empty() {
            return Err(PolicyFileError::at(path, None, "no categories defined"));
        }
        for (name, c) in &f.categories {
            let at = line_of(&format!("[categories.{name}]"));
            let bad = |reason: String| PolicyFileError::at(path, at, reason);
            if let Some(n) = c.lead_working_days {
                NoticeRule {
                    working_days: n,
                    ..f.notice
                }
                .validate()
                .map_err(|e| bad(format!("category `{name}`: {e}")))?;
            }
            if !is_action(&c.approve_permission) {
                return Err(bad(format!(
                    "category `{name}`: approve_permission `{}` is not a permission of the Cedar schema",
                    c.approve_permission
                )));
            }
            if let Some(r) = c.notify_roles.iter().find(|r| !is_role(r)) {
                return Err(bad(format!(
                    "category `{name}`: notify_roles names unknown role `{r}`"
                )));
            }
            if let Some(stages) = &c.stages {
                check_stages(
                    stages,
                    &format!("categories.{name}.stages"),
                    &is_role,
                    hours,
                )
                .map_err(|e| {
                    PolicyFileError::at(path, line_of(&format!("[[categories.{name}.stages")), e)
                })?;
            }
            check_risk_stages(
                &c.risk_stages,
                &format!("categories.{name}.risk_stages"),
                &is_role,
                hours,
            )
            .map_err(|e| {
                PolicyFileError::at(
                    path,
                    line_of(&format!("[[categories.{name}.risk_stages")),
                    e,
                )
            })?;
            if let Some(m) = c.notify_mailboxes.iter().find(|m| !m.contains('@')) {
                return Err(bad(format!(
                    "category `{name}`: `{m}` is not an e-mail address"
                )));
            }
        }
        for w in &f.freeze_windows {
            let at = line_of(&w.name);
            if w.end <= w.start {
                return Err(PolicyFileError::at(
                    path,
                    at,
                    format!("freeze window `{}` ends before it starts", w.name),
                ));
            }
            if let Some(c) = w.categories.iter().find(|c| !f.categories.contains_key(*c)) {
                return Err(PolicyFileError::at(
                    path,
                    at,
                    format!("freeze window `{}` names unknown category `{c}`", w.name),
                ));
            }
        }
        Ok(ChangePolicy {
            timezone,
            max_window_days: f.max_window_days,
            notice: f.notice,
            categories: f.categories,
            freeze_windows: f.freeze_windows,
            approval,
        })
    }

    /// The approval stages a normal change of `category` with `risk` goes through.
    pub fn stages_for(&self, category: &Category, risk: &str) -> Vec<super::Stage> {
        self.approval.plan(
            category.stages.as_deref(),
            &category.risk_stages,
            risk,
            &category.approve_permission,
        )
    }

    /// The notice rule of a category.
    pub fn rule_for(&self, category: &Category) -> NoticeRule {
        NoticeRule {
            working_days: category
                .lead_working_days
                .unwrap_or(self.notice.working_days),
            ..self.notice
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `src` with a minimal `[approval]` appended when it has none.
    fn parse(src: &str) -> Result<ChangePolicy, PolicyFileError> {
        let src = if src.contains("[approval") {
            src.to_string()
        } else {
            format!("{src}{STAGES}")
        };
        ChangePolicy::parse(
            Path::new("change-policy.toml"),
            &src,
            |a| a.starts_with("change."),
            |r| r == "manager",
        )
    }

    const OK: &str = "timezone = \"Asia/Shanghai\"\n[categories.debugging]\ntitle_zh = \"调试\"\ntitle_en = \"Debugging\"\n";
    const STAGES: &str = "[approval]\n[[approval.stages]]\nname = \"mgmt\"\ntitle_zh = \"管理\"\ntitle_en = \"Management\"\nrole = \"manager\"\n";

    #[test]
    fn defaults() {
        let p = parse(OK).unwrap();
        assert_eq!(p.notice, NoticeRule::default());
        assert_eq!(p.rule_for(&p.categories["debugging"]).working_days, 3);
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse(&OK.replace("Asia/Shanghai", "Mars/Olympus")).unwrap_err();
        assert_eq!(e.line, Some(1));
        let e = parse(&format!("{OK}approve_permission = \"user.manage\"\n")).unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
        let e = parse(&format!("{OK}colour = \"red\"\n")).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        let e = parse(&format!("{OK}[notice]\nworking_days = 0\n")).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
    }

    #[test]
    fn approval_stages_resolve_by_category_and_risk() {
        let p = parse(&format!(
            "{OK}[[categories.debugging.risk_stages.high]]\nname = \"board\"\ntitle_zh = \"会签\"\ntitle_en = \"Board\"\nroles = [\"manager\"]\nneeded = 2\nescalate_to = \"manager\"\n{STAGES}"
        ))
        .unwrap();
        let c = &p.categories["debugging"];
        let low = p.stages_for(c, "low");
        assert_eq!(low.len(), 1);
        assert_eq!(low[0].name, "mgmt");
        assert_eq!(
            (low[0].remind_after_hours, low[0].escalate_after_hours),
            (4, 8)
        );
        let high = p.stages_for(c, "high");
        assert_eq!((high[0].name.as_str(), high[0].needed), ("board", 2));
        assert_eq!(high[0].permission, "change.approve");
        assert_eq!(high[0].escalate_to.as_deref(), Some("manager"));
    }

    #[test]
    fn bad_stages_name_the_line_and_reason() {
        for (stage, reason) in [
            ("role = \"ghost\"\n", "unknown role `ghost`"),
            ("role = \"manager\"\nneeded = 0\n", "needed must be 1 to 10"),
            ("\n", "name the approving"),
            (
                "role = \"manager\"\nremind_after_hours = 9\n",
                "escalate_after_hours after it",
            ),
        ] {
            let src = format!(
                "{OK}[approval]\n[[approval.stages]]\nname = \"x\"\ntitle_zh = \"甲\"\ntitle_en = \"X\"\n{stage}"
            );
            let e = parse(&src).unwrap_err();
            assert_eq!(e.line, Some(5), "{e}");
            assert!(e.reason.contains(reason), "{e}");
        }
        let e = parse(&format!("{OK}{STAGES}[[approval.risk_stages.severe]]\nname = \"x\"\ntitle_zh = \"甲\"\ntitle_en = \"X\"\nrole = \"manager\"\n")).unwrap_err();
        assert!(e.reason.contains("unknown risk"), "{e}");
    }

    #[test]
    fn freeze_windows_take_toml_or_text_dates() {
        for (s, e) in [
            ("2026-12-31T00:00:00+08:00", "2027-01-02T00:00:00+08:00"),
            (
                "\"2026-12-31T00:00:00+08:00\"",
                "\"2027-01-02T00:00:00+08:00\"",
            ),
        ] {
            let p = parse(&format!(
                "{OK}[[freeze_windows]]\nname = \"年终\"\nstart = {s}\nend = {e}\n"
            ))
            .unwrap();
            assert_eq!(
                p.freeze_windows[0].start.to_rfc3339(),
                "2026-12-31T00:00:00+08:00"
            );
        }
        let err = parse(&format!(
            "{OK}[[freeze_windows]]\nname = \"年终\"\nstart = 2026-12-31\nend = 2027-01-02\n"
        ))
        .unwrap_err();
        assert!(err.reason.contains("offset"), "{err}");
        let err = parse(&format!("{OK}[[freeze_windows]]\nname = \"年终\"\nstart = 2027-01-02T00:00:00+08:00\nend = 2026-12-31T00:00:00+08:00\n")).unwrap_err();
        assert!(err.reason.contains("ends before"), "{err}");
    }

    #[test]
    fn shipped_policy_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let p = ChangePolicy::load(
            &dir.join("change-policy.toml"),
            |a| a.starts_with("change."),
            |_| true,
        )
        .unwrap();
        assert_eq!(p.timezone, chrono_tz::Asia::Shanghai);
        assert_eq!(
            p.categories.keys().collect::<Vec<_>>(),
            vec!["database", "debugging", "hardware", "software_upgrade"]
        );
        assert_eq!(
            p.categories["hardware"].actions,
            vec!["connect", "remove", "install", "replace"]
        );
    }
}
