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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, Role>,
}

#[derive(Debug, Clone, Default)]
pub struct RoleCatalog {
    roles: BTreeMap<String, Role>,
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
        Ok(RoleCatalog { roles: file.roles })
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
    fn unknown_field_is_refused_with_line() {
        let src = "[roles.admin]\ntitle_zh = \"管理员\"\ntitle_en = \"Admin\"\npermissions = []\n";
        let e = RoleCatalog::parse(Path::new("roles.toml"), src).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
    }
}
