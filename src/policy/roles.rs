//! `policies/roles.toml`: the role catalogue.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{PolicyFileError, parse_toml, read};

/// One role of the catalogue. What it may do is decided by the Cedar policies, not here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub title_zh: String,
    pub title_en: String,
    #[serde(default)]
    pub description: String,
    /// Roles that a holder of this role may grant to others.
    #[serde(default)]
    pub grantable: Vec<String>,
    /// A role for machines (service accounts). A service account holds only such roles, so
    /// a token can never carry a person's privileges (approving, granting, revealing).
    #[serde(default)]
    pub machine: bool,
    /// A grant of this role takes effect only when a second person approves it (dual control).
    /// `admin`, `manager` and `compliance` are privileged whatever this says.
    #[serde(default)]
    pub privileged: bool,
}

/// Roles whose grant always needs a second person, whatever `roles.toml` says: they administer
/// the service, approve changes, or watch both.
pub const ALWAYS_PRIVILEGED: &[&str] = &["admin", "manager", "compliance"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, Role>,
    #[serde(default)]
    incompatible: Vec<Incompatible>,
}

/// Two roles nobody exercises together (不相容职责).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Incompatible {
    roles: [String; 2],
}

#[derive(Debug, Clone, Default)]
pub struct RoleCatalog {
    roles: BTreeMap<String, Role>,
    incompatible: Vec<[String; 2]>,
}

impl RoleCatalog {
    pub fn load(path: &Path) -> Result<RoleCatalog, PolicyFileError> {
        let src = read(path)?;
        Self::parse(path, &src)
    }

    pub fn parse(path: &Path, src: &str) -> Result<RoleCatalog, PolicyFileError> {
        let file: RolesFile = parse_toml(path, src)?;
        let line_of_role = |name: &str| {
            src.lines()
                .position(|l| l.trim_start().starts_with(&format!("[roles.{name}]")))
                .map(|i| i + 1)
        };
        if file.roles.is_empty() {
            return Err(PolicyFileError::at(path, None, "no roles defined"));
        }
        if !file.roles.contains_key("admin") {
            return Err(PolicyFileError::at(
                path,
                None,
                "the role `admin` is required",
            ));
        }
        for (name, role) in &file.roles {
            if !valid_name(name) {
                return Err(PolicyFileError::at(
                    path,
                    line_of_role(name),
                    format!("role name `{name}` must be lowercase letters, digits and _"),
                ));
            }
            if role.title_zh.trim().is_empty() || role.title_en.trim().is_empty() {
                return Err(PolicyFileError::at(
                    path,
                    line_of_role(name),
                    format!("role `{name}` needs title_zh and title_en"),
                ));
            }
            if role.machine && (role.privileged || ALWAYS_PRIVILEGED.contains(&name.as_str())) {
                return Err(PolicyFileError::at(
                    path,
                    line_of_role(name),
                    format!("role `{name}` is for machines: it may not be privileged"),
                ));
            }
            if role.machine && (name == "admin" || !role.grantable.is_empty()) {
                return Err(PolicyFileError::at(
                    path,
                    line_of_role(name),
                    format!("role `{name}` is for machines: it may not be admin nor grant roles"),
                ));
            }
            for g in &role.grantable {
                if !file.roles.contains_key(g) {
                    return Err(PolicyFileError::at(
                        path,
                        line_of_role(name),
                        format!("role `{name}` may grant `{g}`, which is not a role"),
                    ));
                }
            }
        }
        for pair in &file.incompatible {
            let line = src
                .lines()
                .position(|l| l.contains(&format!("\"{}\"", pair.roles[1])) && l.contains("roles"))
                .map(|i| i + 1);
            if let Some(r) = pair.roles.iter().find(|r| !file.roles.contains_key(*r)) {
                return Err(PolicyFileError::at(
                    path,
                    line,
                    format!("incompatible names `{r}`, which is not a role"),
                ));
            }
            if pair.roles[0] == pair.roles[1] {
                return Err(PolicyFileError::at(
                    path,
                    line,
                    "an incompatible pair needs two different roles",
                ));
            }
        }
        Ok(RoleCatalog {
            roles: file.roles,
            incompatible: file.incompatible.into_iter().map(|p| p.roles).collect(),
        })
    }

    /// Whether `a` and `b` are an incompatible pair (either order).
    pub fn incompatible(&self, a: &str, b: &str) -> bool {
        self.incompatible
            .iter()
            .any(|[x, y]| (x == a && y == b) || (x == b && y == a))
    }

    /// The roles incompatible with `role`.
    pub fn incompatible_with<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.incompatible.iter().filter_map(move |[x, y]| {
            if x == role {
                Some(y.as_str())
            } else if y == role {
                Some(x.as_str())
            } else {
                None
            }
        })
    }

    /// The first role of `held` that is incompatible with `role`, if any.
    pub fn conflict<'a>(&self, held: &'a [String], role: &str) -> Option<&'a str> {
        held.iter()
            .map(String::as_str)
            .find(|h| self.incompatible(h, role))
    }

    /// Whether a grant of `role` needs a second person.
    pub fn is_privileged(&self, role: &str) -> bool {
        ALWAYS_PRIVILEGED.contains(&role) || self.roles.get(role).is_some_and(|r| r.privileged)
    }

    /// Whether granting `role` (or resetting the password of its holder) needs a second person:
    /// it is privileged, or it grants roles.
    pub fn needs_dual_control(&self, role: &str) -> bool {
        self.is_privileged(role) || self.get(role).is_some_and(|r| !r.grantable.is_empty())
    }

    pub fn get(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Role)> {
        self.roles.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    /// Roles that holders of `held` may grant, together.
    pub fn grantable_by<'a>(&'a self, held: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
        let mut out: Vec<&str> = held
            .iter()
            .filter_map(|r| self.roles.get(r))
            .flat_map(|r| r.grantable.iter().map(String::as_str))
            .collect();
        out.sort_unstable();
        out.dedup();
        out.into_iter()
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_grantable_role_names_its_line() {
        let src =
            "[roles.admin]\ntitle_zh = \"管理员\"\ntitle_en = \"Admin\"\ngrantable = [\"ghost\"]\n";
        let e = RoleCatalog::parse(Path::new("roles.toml"), src).unwrap_err();
        assert_eq!(e.line, Some(1));
        assert!(e.reason.contains("ghost"), "{e}");
    }

    #[test]
    fn privilege_and_incompatibility_come_from_the_catalogue() {
        let src = "[roles.admin]\ntitle_zh = \"管理员\"\ntitle_en = \"Admin\"\n\
                   [roles.lead]\ntitle_zh = \"负责人\"\ntitle_en = \"Lead\"\nprivileged = true\n\
                   [roles.op]\ntitle_zh = \"操作员\"\ntitle_en = \"Op\"\n\
                   [[incompatible]]\nroles = [\"admin\", \"op\"]\n";
        let c = RoleCatalog::parse(Path::new("roles.toml"), src).unwrap();
        assert!(c.is_privileged("admin") && c.is_privileged("lead") && !c.is_privileged("op"));
        assert_eq!(c.incompatible_with("op").collect::<Vec<_>>(), ["admin"]);
        let held = vec!["lead".to_string(), "admin".to_string()];
        assert_eq!(c.conflict(&held, "op"), Some("admin"));
        assert_eq!(c.conflict(&held, "lead"), None);
    }

    #[test]
    fn a_machine_role_cannot_be_privileged() {
        let src = "[roles.admin]\ntitle_zh = \"管理员\"\ntitle_en = \"Admin\"\n\
                   [roles.bot]\ntitle_zh = \"机器\"\ntitle_en = \"Bot\"\nmachine = true\nprivileged = true\n";
        let e = RoleCatalog::parse(Path::new("roles.toml"), src).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }

    #[test]
    fn unknown_field_is_refused_with_line() {
        let src = "[roles.admin]\ntitle_zh = \"管理员\"\ntitle_en = \"Admin\"\npermissions = []\n";
        let e = RoleCatalog::parse(Path::new("roles.toml"), src).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }
}
