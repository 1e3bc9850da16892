//! `policies/directory.toml` (where people and groups are in the directory, which groups give
//! which roles) and the `CHANGEGUARD_LDAP_*` settings, validated once at start-up.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::{ConfigError, Settings};
use crate::policy::{PolicyFileError, RoleCatalog, line_of, parse_toml, read};

/// How the directory says an account is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum DisabledBy {
    /// Active Directory: bit 2 (ACCOUNTDISABLE) of `userAccountControl`.
    #[default]
    UserAccountControl,
    /// The entry carries `disabled_attribute` (OpenLDAP: `pwdAccountLockedTime`).
    Attribute,
    /// Only an entry that is gone counts.
    Gone,
}

/// One group whose members get roles.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupMapping {
    /// The group's DN, or its name (the value of its first RDN, e.g. `cn=变更经理` → `变更经理`).
    pub group: String,
    pub roles: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryPolicy {
    /// Where people are searched, e.g. `OU=Staff,DC=bank,DC=local`.
    #[serde(default)]
    pub user_base: String,
    /// `{username}` is replaced by the typed username, escaped (RFC 4515).
    #[serde(default = "default_filter")]
    pub user_filter: String,
    /// The attribute holding the sign-in name: the entry found must carry the typed name there
    /// (AD `sAMAccountName`, OpenLDAP `uid`), whatever else the filter matches.
    #[serde(default = "default_username_attribute")]
    pub username_attribute: String,
    /// The attribute that stays the same for one person across renames and moves (AD
    /// `objectGUID`, OpenLDAP `entryUUID`): an account here belongs to that entry only.
    #[serde(default = "default_id_attribute")]
    pub id_attribute: String,
    /// Where groups given by name (not DN) must be: `cn=operators` counts only under this base,
    /// never a group of the same name elsewhere in the tree.
    #[serde(default)]
    pub group_base: String,
    #[serde(default = "default_display")]
    pub display_name_attribute: String,
    #[serde(default = "default_department")]
    pub department_attribute: String,
    #[serde(default = "default_email")]
    pub email_attribute: String,
    /// The attribute listing a person's groups (AD, OpenLDAP's memberof overlay).
    #[serde(default = "default_member_of")]
    pub member_of_attribute: String,
    /// Active Directory: a group's members include its nested groups' members
    /// (`memberOf:1.2.840.113556.1.4.1941:`); groups must then be given by DN.
    #[serde(default)]
    pub nested_groups: bool,
    #[serde(default)]
    pub disabled_by: DisabledBy,
    #[serde(default = "default_disabled_attribute")]
    pub disabled_attribute: String,
    /// Cron (seconds first, the bank's time zone) of the sync job.
    #[serde(default = "default_sync")]
    pub sync_schedule: String,
    #[serde(default)]
    pub groups: Vec<GroupMapping>,
}

fn default_filter() -> String {
    "(sAMAccountName={username})".into()
}
fn default_username_attribute() -> String {
    "sAMAccountName".into()
}
fn default_id_attribute() -> String {
    "objectGUID".into()
}
fn default_display() -> String {
    "displayName".into()
}
fn default_department() -> String {
    "department".into()
}
fn default_email() -> String {
    "mail".into()
}
fn default_member_of() -> String {
    "memberOf".into()
}
fn default_disabled_attribute() -> String {
    "pwdAccountLockedTime".into()
}
fn default_sync() -> String {
    "0 */15 * * * *".into()
}

impl Default for DirectoryPolicy {
    fn default() -> Self {
        DirectoryPolicy {
            user_base: String::new(),
            user_filter: default_filter(),
            username_attribute: default_username_attribute(),
            id_attribute: default_id_attribute(),
            group_base: String::new(),
            display_name_attribute: default_display(),
            department_attribute: default_department(),
            email_attribute: default_email(),
            member_of_attribute: default_member_of(),
            nested_groups: false,
            disabled_by: DisabledBy::default(),
            disabled_attribute: default_disabled_attribute(),
            sync_schedule: default_sync(),
            groups: Vec::new(),
        }
    }
}

impl DirectoryPolicy {
    /// Loads the file if present (absent: the defaults, no group gives a role).
    pub fn load(path: &Path, roles: &RoleCatalog) -> Result<Self, PolicyFileError> {
        if !path.exists() {
            return Ok(DirectoryPolicy::default());
        }
        let src = read(path)?;
        let p: DirectoryPolicy = parse_toml(path, &src)?;
        let at = |needle: &str| src.find(needle).map(|o| line_of(&src, o));
        if !p.user_filter.contains("{username}")
            || !p.user_filter.starts_with('(')
            || !p.user_filter.ends_with(')')
        {
            return Err(PolicyFileError::at(
                path,
                at("user_filter"),
                "user_filter must be one LDAP filter in parentheses holding {username}",
            ));
        }
        let compared = format!("({}={{username}})", p.username_attribute).to_lowercase();
        if !p.user_filter.to_lowercase().contains(&compared) {
            return Err(PolicyFileError::at(
                path,
                at("user_filter"),
                format!(
                    "user_filter must compare username_attribute with the typed name: it holds no `{compared}`"
                ),
            ));
        }
        for (name, v) in [
            ("username_attribute", &p.username_attribute),
            ("id_attribute", &p.id_attribute),
            ("display_name_attribute", &p.display_name_attribute),
            ("department_attribute", &p.department_attribute),
            ("email_attribute", &p.email_attribute),
            ("member_of_attribute", &p.member_of_attribute),
            ("disabled_attribute", &p.disabled_attribute),
        ] {
            if !is_attribute_name(v) {
                return Err(PolicyFileError::at(
                    path,
                    at(name),
                    format!("{name}: `{v}` is not an LDAP attribute name"),
                ));
            }
        }
        for (name, v) in [("user_base", &p.user_base), ("group_base", &p.group_base)] {
            if !v.trim().is_empty() && super::dn::parse(v).is_none() {
                return Err(PolicyFileError::at(
                    path,
                    at(name),
                    format!("{name}: `{v}` is not a DN"),
                ));
            }
        }
        if cron::Schedule::try_from(p.sync_schedule.as_str()).is_err() {
            return Err(PolicyFileError::at(
                path,
                at("sync_schedule"),
                format!(
                    "sync_schedule: `{}` is not a cron expression",
                    p.sync_schedule
                ),
            ));
        }
        for g in &p.groups {
            let line = at(&format!("\"{}\"", g.group));
            if g.group.trim().is_empty() {
                return Err(PolicyFileError::at(path, line, "groups: empty group"));
            }
            let is_dn = g.group.contains('=');
            if is_dn && super::dn::parse(&g.group).is_none() {
                return Err(PolicyFileError::at(
                    path,
                    line,
                    format!("groups: `{}` is not a DN", g.group),
                ));
            }
            if p.nested_groups && !is_dn {
                return Err(PolicyFileError::at(
                    path,
                    line,
                    format!("groups: with nested_groups, `{}` must be a DN", g.group),
                ));
            }
            if !is_dn && p.group_base.trim().is_empty() {
                return Err(PolicyFileError::at(
                    path,
                    line,
                    format!(
                        "groups: `{}` is a name: set group_base so that only the group of that name under it counts",
                        g.group
                    ),
                ));
            }
            for r in &g.roles {
                let Some(role) = roles.get(r) else {
                    return Err(PolicyFileError::at(
                        path,
                        line,
                        format!("groups: unknown role `{r}` (not in roles.toml)"),
                    ));
                };
                if role.machine {
                    return Err(PolicyFileError::at(
                        path,
                        line,
                        format!("groups: `{r}` is a role for machines, not for people"),
                    ));
                }
                if roles.needs_dual_control(r) {
                    return Err(PolicyFileError::at(
                        path,
                        line,
                        format!(
                            "groups: `{r}` is privileged or grants roles (dual control): grant it in changeguard, with a second person's approval, not through the directory"
                        ),
                    ));
                }
            }
        }
        Ok(p)
    }
}

/// An attribute type name (RFC 4512 descr): a letter, then letters, digits and `-`.
fn is_attribute_name(v: &str) -> bool {
    let mut c = v.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || x == '-')
        && v.len() <= 64
}

/// Whether to speak TLS to the directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `ldaps://`.
    Tls,
    /// `ldap://` then StartTLS.
    StartTls,
    /// `ldap://` in the clear (`CHANGEGUARD_LDAP_TLS=off`).
    Plain,
}

/// The connection settings, checked.
#[derive(Debug, Clone)]
pub struct Connection {
    pub url: String,
    pub transport: Transport,
    pub ca_file: Option<PathBuf>,
    pub bind_dn: String,
    pub bind_password: SecretString,
}

fn err(s: &str) -> ConfigError {
    ConfigError(s.to_string())
}

/// Checks the `CHANGEGUARD_LDAP_*` settings (the password is never quoted).
pub fn validate_settings(s: &Settings) -> Result<(), ConfigError> {
    connection(s).map(|_| ())
}

/// The connection the settings describe; `None`: directory sign-in is off.
pub fn connection(s: &Settings) -> Result<Option<Connection>, ConfigError> {
    if !matches!(s.ldap_tls.as_str(), "on" | "off") {
        return Err(err("CHANGEGUARD_LDAP_TLS must be on or off"));
    }
    let Some(url) = s.ldap_url.as_deref().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    let transport = if url.starts_with("ldaps://") {
        Transport::Tls
    } else if url.starts_with("ldap://") {
        if s.ldap_tls == "off" {
            Transport::Plain
        } else {
            Transport::StartTls
        }
    } else {
        return Err(err(
            "CHANGEGUARD_LDAP_URL must start with ldap:// (StartTLS) or ldaps://",
        ));
    };
    let bind_dn = s
        .ldap_bind_dn
        .clone()
        .filter(|d| !d.trim().is_empty())
        .ok_or_else(|| err("CHANGEGUARD_LDAP_URL is set: CHANGEGUARD_LDAP_BIND_DN is required"))?;
    let bind_password = match (&s.ldap_bind_password, &s.ldap_bind_password_file) {
        (Some(pw), None) => pw.clone(),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                ConfigError(format!(
                    "CHANGEGUARD_LDAP_BIND_PASSWORD_FILE {}: {e}",
                    file.display()
                ))
            })?;
            SecretString::from(text.trim_end_matches(['\r', '\n']).to_string())
        }
        (Some(_), Some(_)) => {
            return Err(err(
                "set CHANGEGUARD_LDAP_BIND_PASSWORD or CHANGEGUARD_LDAP_BIND_PASSWORD_FILE, not both",
            ));
        }
        (None, None) => {
            return Err(err(
                "CHANGEGUARD_LDAP_URL is set: CHANGEGUARD_LDAP_BIND_PASSWORD or CHANGEGUARD_LDAP_BIND_PASSWORD_FILE is required",
            ));
        }
    };
    if bind_password.expose_secret().is_empty() {
        return Err(err(
            "the directory's service password is empty (an empty password is an anonymous bind)",
        ));
    }
    if let Some(ca) = &s.ldap_ca_file
        && !ca.is_file()
    {
        return Err(ConfigError(format!(
            "CHANGEGUARD_LDAP_CA_FILE {} is not a file",
            ca.display()
        )));
    }
    Ok(Some(Connection {
        url: url.to_string(),
        transport,
        ca_file: s.ldap_ca_file.clone(),
        bind_dn,
        bind_password,
    }))
}
