//! The bank's rules as files under `policies/`, loaded and validated once at start-up (and by
//! `changeguard policies check`). Every problem names the file, the line and the reason.
//!
//! ```text
//! policies/roles.toml                 role catalogue: titles, which roles a holder may grant
//! policies/rbac/schema.cedarschema    Cedar schema: entity types and actions (permissions)
//! policies/rbac/*.cedar               Cedar policies: what each role may do, separation of duties
//! policies/security.toml           second factor: roles that need TOTP at login
//! policies/directory.toml             directory sign-in: where people are, groups → roles
//! policies/change-policy.toml         time zone, notice rule, categories, approval stages, freezes
//! policies/standard-changes.toml      pre-approved change templates (标准变更)
//! policies/notifications.toml         who gets which email notice, retries, schedules
//! policies/calendars/cn/YYYY.toml     China's official working-day calendar, one year a file
//! ```

mod approval;
mod change_policy;
mod notifications;
mod roles;
mod security;
mod standard_changes;

use std::fmt;
use std::path::{Path, PathBuf};

pub use approval::{ApprovalPolicy, Stage, StageRule};
pub use change_policy::{Category, ChangePolicy, FreezeWindow};
pub use notifications::{
    EVENTS as NOTIFY_EVENTS, NotifyPolicy, Recipient, Schedules, parties_of, valid_address,
};
pub use roles::{Role, RoleCatalog};
pub use security::SecurityPolicy;
pub use standard_changes::{StandardChanges, Template};

use crate::calendar::YearCalendar;
use crate::rbac::Authorizer;

/// A problem in one policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFileError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub reason: String,
}

impl PolicyFileError {
    pub fn at(file: impl Into<PathBuf>, line: Option<usize>, reason: impl Into<String>) -> Self {
        PolicyFileError {
            file: file.into(),
            line,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for PolicyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file.display(), line, self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

impl std::error::Error for PolicyFileError {}

/// 1-based line of a byte offset in `src`.
pub fn line_of(src: &str, offset: usize) -> usize {
    src.get(..offset.min(src.len()))
        .map_or(1, |head| head.bytes().filter(|b| *b == b'\n').count() + 1)
}

/// Reads a policy file to a string, with the file name in the error.
pub fn read(path: &Path) -> Result<String, PolicyFileError> {
    std::fs::read_to_string(path).map_err(|e| PolicyFileError::at(path, None, e.to_string()))
}

/// Parses a TOML policy file into `T`, turning errors into file:line: reason.
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    path: &Path,
    src: &str,
) -> Result<T, PolicyFileError> {
    toml::from_str(src).map_err(|e| {
        let line = e.span().map(|s| line_of(src, s.start));
        PolicyFileError::at(path, line, e.message().to_string())
    })
}

/// Everything loaded from `policies/`.
#[derive(Clone)]
pub struct Policies {
    pub dir: PathBuf,
    pub roles: RoleCatalog,
    pub authorizer: Authorizer,
    pub change: ChangePolicy,
    pub notifications: NotifyPolicy,
    pub security: SecurityPolicy,
    pub directory: crate::directory::DirectoryPolicy,
    pub standard: StandardChanges,
    /// The calendar years shipped as files (the database may add or replace years).
    pub calendar_years: Vec<YearCalendar>,
}

impl Policies {
    pub fn load(dir: &Path) -> Result<Policies, PolicyFileError> {
        if !dir.is_dir() {
            return Err(PolicyFileError::at(
                dir,
                None,
                "policies directory not found (set CHANGEGUARD_POLICIES_DIR)",
            ));
        }
        let roles = RoleCatalog::load(&dir.join("roles.toml"))?;
        let authorizer = Authorizer::load(&dir.join("rbac"), &roles)?;
        let change = ChangePolicy::load(
            &dir.join("change-policy.toml"),
            |a| authorizer.is_action(a),
            |r| roles.get(r).is_some(),
        )?;
        let standard = StandardChanges::load(&dir.join("standard-changes.toml"), &change, |r| {
            roles.get(r).is_some()
        })?;
        let notifications =
            NotifyPolicy::load(&dir.join("notifications.toml"), |r| roles.get(r).is_some())?;
        let security =
            SecurityPolicy::load(&dir.join("security.toml"), |r| roles.get(r).is_some())?;
        let directory =
            crate::directory::DirectoryPolicy::load(&dir.join("directory.toml"), &roles)?;
        let calendar_dir = dir.join("calendars").join("cn");
        let calendar_years = crate::calendar::load_dir(&calendar_dir)?;
        crate::calendar::WorkingCalendar::new(calendar_years.clone())
            .map_err(|e| PolicyFileError::at(&calendar_dir, None, e.to_string()))?;
        Ok(Policies {
            dir: dir.to_path_buf(),
            roles,
            authorizer,
            change,
            notifications,
            security,
            directory,
            standard,
            calendar_years,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_one_based() {
        let src = "a\nb\nc";
        assert_eq!(line_of(src, 0), 1);
        assert_eq!(line_of(src, 2), 2);
        assert_eq!(line_of(src, 4), 3);
        assert_eq!(line_of(src, 99), 3);
    }

    #[test]
    fn shipped_policies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let p = Policies::load(&dir).unwrap();
        assert!(p.roles.get("admin").is_some());
    }
}
