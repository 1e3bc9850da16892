//! `policies/standard-changes.toml`: pre-approved change templates (标准变更).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::approval::RISKS;
use super::{ChangePolicy, PolicyFileError, parse_toml, read};

/// One standard change, as the change advisory function approved it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub title_zh: String,
    pub title_en: String,
    pub category: String,
    pub action: Option<String>,
    /// Keys of the systems register a change from this template may touch.
    pub systems: Vec<String>,
    /// low, medium or high.
    pub risk: String,
    pub description: String,
    pub rollback_plan: String,
    /// Roles whose holders may file it.
    pub roles: Vec<String>,
    /// The approval it stands on (the board and its meeting).
    pub approved_by: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    templates: BTreeMap<String, Template>,
}

#[derive(Debug, Clone, Default)]
pub struct StandardChanges {
    pub templates: BTreeMap<String, Template>,
}

impl StandardChanges {
    pub fn load(
        path: &Path,
        change: &ChangePolicy,
        is_role: impl Fn(&str) -> bool,
    ) -> Result<StandardChanges, PolicyFileError> {
        let src = read(path)?;
        Self::parse(path, &src, change, is_role)
    }

    pub fn parse(
        path: &Path,
        src: &str,
        change: &ChangePolicy,
        is_role: impl Fn(&str) -> bool,
    ) -> Result<StandardChanges, PolicyFileError> {
        let f: File = parse_toml(path, src)?;
        for (key, t) in &f.templates {
            let line = src
                .lines()
                .position(|l| l.trim() == format!("[templates.{key}]"))
                .map(|i| i + 1);
            let bad = |reason: String| {
                PolicyFileError::at(path, line, format!("template `{key}`: {reason}"))
            };
            if !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            {
                return Err(bad("the key must be lowercase letters, digits and _".into()));
            }
            for (field, v) in [
                ("title_zh", &t.title_zh),
                ("title_en", &t.title_en),
                ("description", &t.description),
                ("rollback_plan", &t.rollback_plan),
                ("approved_by", &t.approved_by),
            ] {
                if v.trim().is_empty() {
                    return Err(bad(format!("{field} is empty")));
                }
            }
            let Some(category) = change.categories.get(&t.category) else {
                return Err(bad(format!("unknown category `{}`", t.category)));
            };
            match &t.action {
                None if !category.actions.is_empty() => {
                    return Err(bad(format!(
                        "category `{}` needs an action: {}",
                        t.category,
                        category.actions.join(", ")
                    )));
                }
                Some(a) if !category.actions.contains(a) => {
                    return Err(bad(format!("`{a}` is not an action of `{}`", t.category)));
                }
                _ => {}
            }
            if t.systems.is_empty() {
                return Err(bad("name at least one system".into()));
            }
            if !RISKS.contains(&t.risk.as_str()) {
                return Err(bad(format!("risk must be one of {}", RISKS.join(", "))));
            }
            if t.roles.is_empty() {
                return Err(bad("name the roles that may file it".into()));
            }
            if let Some(r) = t.roles.iter().find(|r| !is_role(r)) {
                return Err(bad(format!("unknown role `{r}`")));
            }
        }
        Ok(StandardChanges {
            templates: f.templates,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_templates_load_and_errors_name_the_template() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let change =
            ChangePolicy::load(&dir.join("change-policy.toml"), |_| true, |_| true).unwrap();
        let s =
            StandardChanges::load(&dir.join("standard-changes.toml"), &change, |_| true).unwrap();
        assert_eq!(s.templates["core_db_statistics"].category, "database");
        let src = "[templates.x]\ntitle_zh = \"甲\"\ntitle_en = \"X\"\ncategory = \"database\"\nsystems = [\"core-db\"]\nrisk = \"low\"\ndescription = \"d\"\nrollback_plan = \"r\"\nroles = [\"tech_operator\"]\napproved_by = \"cab\"\n";
        let e = StandardChanges::parse(Path::new("standard-changes.toml"), src, &change, |_| true)
            .unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
        assert!(e.reason.contains("needs an action"), "{e}");
    }
}
