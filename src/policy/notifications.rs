//! `policies/notifications.toml`: who gets which email notice, retries, and the schedules.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use serde::Deserialize;

use super::{PolicyFileError, line_of, parse_toml, read};

/// The events that send notices.
pub const EVENTS: &[&str] = &[
    "filed",
    "receipt",
    "approved",
    "rejected",
    "rescheduled",
    "started",
    "completed",
    "cancelled",
    "expired",
    "overdue",
    "reviewed",
    "emergency_also",
    "digest",
    "reminder",
    "calendar_missing",
    "disclosure_requested",
    "disclosure_decided",
    "credential_revealed",
    "rotation_reminder",
    "grant_requested",
    "grant_decided",
    "audit_broken",
    "unauthorized_change",
    "approval_requested",
    "approval_reminder",
    "approval_escalated",
    "delegation_granted",
    "role_requested",
    "role_decided",
    "database_access_overdue",
];

/// The people an event concerns, i.e. the party rules (`requester`, `assignee`, `management`,
/// `custodian`) it may use. Roles and fixed mailboxes fit every event.
pub fn parties_of(event: &str) -> &'static [&'static str] {
    match event {
        "digest"
        | "calendar_missing"
        | "audit_broken"
        | "unauthorized_change"
        | "database_access_overdue" => &[],
        // A disclosure: who asked for it and the asset's custodian.
        "disclosure_requested" | "disclosure_decided" => &["requester", "custodian"],
        // A reveal: the person who revealed the secret.
        "credential_revealed" | "rotation_reminder" => &["assignee"],
        // A standing grant: the admin who gave it and its grantee.
        "grant_requested" | "grant_decided" => &["requester", "assignee"],
        // A privileged role: requester = who asked for it, assignee = the grantee.
        "role_requested" | "role_decided" => &["requester", "assignee"],
        // A delegation: requester = who delegates, assignee = the delegate.
        "delegation_granted" => &["requester", "assignee"],
        // A stage of a change's approval: its approvers (and their delegates), and the role
        // the stage escalates to.
        "approval_requested" | "approval_reminder" | "approval_escalated" => &[
            "requester",
            "assignee",
            "management",
            "approvers",
            "escalation",
        ],
        _ => &["requester", "assignee", "management"],
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    max_attempts: u32,
    backoff_secs: u64,
    backoff_max_secs: u64,
    poll_secs: u64,
    #[serde(default = "default_lease")]
    lease_secs: u64,
    #[serde(default = "default_batch")]
    batch: u32,
    events: BTreeMap<String, Vec<String>>,
    schedules: Schedules,
}

fn default_lease() -> u64 {
    120
}

fn default_batch() -> u32 {
    50
}

/// Cron expressions (with seconds) in the bank's time zone.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedules {
    pub digest: String,
    pub digest_working_days: u32,
    pub reminder: String,
    pub expiry: String,
    pub calendar_warning: String,
    /// Reminds whoever revealed a secret for a change until it is rotated.
    #[serde(default = "default_rotation_reminder")]
    pub rotation_reminder: String,
    /// Verifies the whole audit chain; a broken one is e-mailed (`audit_broken`).
    #[serde(default = "default_audit_verify")]
    pub audit_verify: String,
    /// Reminds, then escalates, approval stages waiting too long.
    #[serde(default = "default_approval_nudge")]
    pub approval_nudge: String,
}

fn default_approval_nudge() -> String {
    "0 */5 * * * *".into()
}

fn default_rotation_reminder() -> String {
    "0 0 9 * * *".into()
}

fn default_audit_verify() -> String {
    "0 0 2 * * *".into()
}

/// One recipient rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recipient {
    Requester,
    Assignee,
    /// The category's notify_roles and notify_mailboxes.
    Management,
    /// The custodian of a confidential asset.
    Custodian,
    /// Whoever may decide the waiting approval stage, and their delegates.
    Approvers,
    /// The holders of the role a waiting stage escalates to.
    Escalation,
    Role(String),
    Mailbox(String),
}

#[derive(Debug, Clone)]
pub struct NotifyPolicy {
    pub max_attempts: u32,
    pub backoff_secs: u64,
    pub backoff_max_secs: u64,
    pub poll_secs: u64,
    /// How long a claimed message belongs to its worker (longer than one SMTP attempt).
    pub lease_secs: u64,
    pub batch: u32,
    pub events: BTreeMap<String, Vec<Recipient>>,
    pub schedules: Schedules,
}

impl NotifyPolicy {
    pub fn load(path: &Path, is_role: impl Fn(&str) -> bool) -> Result<Self, PolicyFileError> {
        let src = read(path)?;
        let f: File = parse_toml(path, &src)?;
        let at = |needle: &str, reason: String| {
            let line = src.find(needle).map(|o| line_of(&src, o));
            PolicyFileError::at(path, line, reason)
        };
        if f.max_attempts == 0 || f.max_attempts > 100 {
            return Err(at("max_attempts", "max_attempts must be 1 to 100".into()));
        }
        if f.backoff_secs == 0 || f.backoff_max_secs < f.backoff_secs {
            return Err(at(
                "backoff_secs",
                "backoff_secs must be at least 1 and at most backoff_max_secs".into(),
            ));
        }
        if f.poll_secs == 0 || f.poll_secs > 3600 {
            return Err(at("poll_secs", "poll_secs must be 1 to 3600".into()));
        }
        if !(2..=3600).contains(&f.lease_secs) {
            return Err(at("lease_secs", "lease_secs must be 2 to 3600".into()));
        }
        if f.batch == 0 || f.batch > 1000 {
            return Err(at("batch", "batch must be 1 to 1000".into()));
        }
        let mut events = BTreeMap::new();
        for (name, list) in &f.events {
            if !EVENTS.contains(&name.as_str()) {
                return Err(at(
                    &format!("{name} ="),
                    format!("unknown event `{name}`; known: {}", EVENTS.join(", ")),
                ));
            }
            let mut rules = Vec::new();
            for r in list {
                let rule = match r.as_str() {
                    "requester" => Recipient::Requester,
                    "assignee" => Recipient::Assignee,
                    "management" => Recipient::Management,
                    "custodian" => Recipient::Custodian,
                    "approvers" => Recipient::Approvers,
                    "escalation" => Recipient::Escalation,
                    other => {
                        if let Some(role) = other.strip_prefix("role:") {
                            if !is_role(role) {
                                return Err(at(
                                    &format!("{name} ="),
                                    format!("event `{name}`: unknown role `{role}`"),
                                ));
                            }
                            Recipient::Role(role.to_string())
                        } else if valid_address(other) {
                            Recipient::Mailbox(other.to_string())
                        } else {
                            return Err(at(
                                &format!("{name} ="),
                                format!(
                                    "event `{name}`: `{other}` is not requester, assignee, management, custodian, approvers, escalation, role:NAME or an e-mail address"
                                ),
                            ));
                        }
                    }
                };
                let party = match rule {
                    Recipient::Requester => Some("requester"),
                    Recipient::Assignee => Some("assignee"),
                    Recipient::Management => Some("management"),
                    Recipient::Custodian => Some("custodian"),
                    Recipient::Approvers => Some("approvers"),
                    Recipient::Escalation => Some("escalation"),
                    Recipient::Role(_) | Recipient::Mailbox(_) => None,
                };
                if let Some(party) = party
                    && !parties_of(name).contains(&party)
                {
                    let allowed = parties_of(name);
                    return Err(at(
                        &format!("{name} ="),
                        if allowed.is_empty() {
                            format!(
                                "event `{name}` concerns no single person: use role:NAME or an address"
                            )
                        } else {
                            format!(
                                "event `{name}` has no `{party}`; use {}, role:NAME or an address",
                                allowed.join(", ")
                            )
                        },
                    ));
                }
                rules.push(rule);
            }
            events.insert(name.clone(), rules);
        }
        if let Some(missing) = EVENTS.iter().find(|e| !events.contains_key(**e)) {
            return Err(at(
                "[events]",
                format!("[events] must list `{missing}` (use [] for nobody)"),
            ));
        }
        let s = &f.schedules;
        for (key, expr) in [
            ("digest", &s.digest),
            ("reminder", &s.reminder),
            ("expiry", &s.expiry),
            ("calendar_warning", &s.calendar_warning),
            ("rotation_reminder", &s.rotation_reminder),
            ("audit_verify", &s.audit_verify),
            ("approval_nudge", &s.approval_nudge),
        ] {
            if let Err(e) = cron::Schedule::from_str(expr) {
                return Err(at(
                    &format!("{key} ="),
                    format!(
                        "schedules.{key}: not a cron expression (sec min hour dom month dow): {e}"
                    ),
                ));
            }
        }
        if !(1..=20).contains(&s.digest_working_days) {
            return Err(at(
                "digest_working_days",
                "digest_working_days must be 1 to 20".into(),
            ));
        }
        Ok(NotifyPolicy {
            max_attempts: f.max_attempts,
            backoff_secs: f.backoff_secs,
            backoff_max_secs: f.backoff_max_secs,
            poll_secs: f.poll_secs,
            lease_secs: f.lease_secs,
            batch: f.batch,
            events,
            schedules: f.schedules,
        })
    }

    /// The rules of an event (empty when nobody is to be told).
    pub fn recipients(&self, event: &str) -> &[Recipient] {
        self.events.get(event).map_or(&[], Vec::as_slice)
    }
}

/// A plain check: one `@`, something on both sides, no spaces or angle brackets.
pub fn valid_address(s: &str) -> bool {
    s.parse::<lettre::Address>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(src: &str) -> Result<NotifyPolicy, PolicyFileError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("notifications.toml");
        std::fs::write(&p, src).unwrap();
        NotifyPolicy::load(&p, |r| ["manager", "compliance", "admin"].contains(&r))
    }

    fn shipped() -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/notifications.toml"),
        )
        .unwrap()
    }

    #[test]
    fn shipped_policy_loads() {
        let p = load(&shipped()).unwrap();
        assert_eq!(p.recipients("filed"), &[Recipient::Management]);
    }

    #[test]
    fn errors_name_the_line_and_reason() {
        let src = shipped().replace(
            "emergency_also = [\"role:compliance\"]",
            "emergency_also = [\"role:nobody\"]",
        );
        let e = load(&src).unwrap_err();
        assert!(e.reason.contains("unknown role `nobody`"), "{e}");
        let line = src
            .lines()
            .position(|l| l.starts_with("emergency_also"))
            .unwrap()
            + 1;
        assert_eq!(e.line, Some(line));

        let e = load(&shipped().replace("0 30 8 * * *", "half past eight")).unwrap_err();
        assert!(e.reason.contains("schedules.digest"), "{e}");
        assert!(e.line.is_some());

        let e = load(&shipped().replace("receipt = [\"requester\"]\n", "")).unwrap_err();
        assert!(e.reason.contains("`receipt`"), "{e}");

        let e = load(&shipped().replace("\"management\"]", "\"not an address\"]")).unwrap_err();
        assert!(e.reason.contains("not an address"), "{e}");

        // A party the event does not have: a reveal has no custodian, a digest no requester.
        let e = load(&shipped().replace(
            "credential_revealed = [",
            "credential_revealed = [\"custodian\", ",
        ))
        .unwrap_err();
        assert!(e.reason.contains("has no `custodian`"), "{e}");
        let e = load(&shipped().replace("digest = [", "digest = [\"requester\", ")).unwrap_err();
        assert!(e.reason.contains("no single person"), "{e}");
    }
}
