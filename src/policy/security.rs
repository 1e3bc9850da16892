//! `policies/security.toml`: second-factor rules.

use std::path::Path;

use serde::Deserialize;

use super::{PolicyFileError, parse_toml, read};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityPolicy {
    /// Roles whose holders must also give a TOTP code at login.
    #[serde(default)]
    pub totp_required_roles: Vec<String>,
    /// Wrong TOTP codes in a row before the second factor is blocked for a while.
    #[serde(default = "default_totp_max_failures")]
    pub totp_max_failures: i64,
    /// How long the second factor stays blocked after too many wrong codes, in seconds.
    #[serde(default = "default_totp_block_secs")]
    pub totp_block_secs: i64,
    /// Minutes after a change's planned end during which its assignee may still reveal its
    /// credentials; afterwards the change is overdue and reveals nothing. Default 0.
    #[serde(default)]
    pub reveal_grace_minutes: i64,
}

fn default_totp_max_failures() -> i64 {
    5
}

fn default_totp_block_secs() -> i64 {
    300
}

impl Default for SecurityPolicy {
    fn default() -> Self {
        SecurityPolicy {
            totp_required_roles: Vec::new(),
            totp_max_failures: default_totp_max_failures(),
            totp_block_secs: default_totp_block_secs(),
            reveal_grace_minutes: 0,
        }
    }
}

impl SecurityPolicy {
    /// Loads the file if present (absent: nothing required beyond the defaults).
    pub fn load(path: &Path, is_role: impl Fn(&str) -> bool) -> Result<Self, PolicyFileError> {
        if !path.exists() {
            return Ok(SecurityPolicy::default());
        }
        let src = read(path)?;
        let p: SecurityPolicy = parse_toml(path, &src)?;
        for r in &p.totp_required_roles {
            if !is_role(r) {
                return Err(PolicyFileError::at(
                    path,
                    None,
                    format!("totp_required_roles: unknown role `{r}`"),
                ));
            }
        }
        if p.totp_max_failures < 1 || !(1..=86_400).contains(&p.totp_block_secs) {
            return Err(PolicyFileError::at(
                path,
                None,
                "totp_max_failures must be at least 1 and totp_block_secs 1..=86400",
            ));
        }
        Ok(p)
    }
}
