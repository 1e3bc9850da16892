//! The sync job: directory accounts gone or disabled in the directory, or whose username now
//! names another entry, are disabled here (their sessions end), and roles of groups a person
//! left are removed. Runs from the scheduler (once across instances, by its `job_runs` slot) or
//! directly; takes `now`. A sign-in that finds the same is ended by [`end_account`] too.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::client;
use crate::App;
use crate::audit::Entry;
use crate::db::directory as db;
use crate::deed::Deed;
use crate::error::{Error, Result};

/// What one run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Synced {
    pub checked: usize,
    pub disabled: Vec<String>,
    /// (username, role) removed.
    pub roles_removed: Vec<(String, String)>,
}

/// Why an account ended: its entry is still there but disabled, or it is gone.
fn why_ended(disabled: bool) -> &'static str {
    if disabled {
        "disabled in the directory"
    } else {
        "gone from the directory"
    }
}

/// Why an account ended: its username names another entry (another person) now.
pub(super) const ANOTHER_ENTRY: &str = "the username belongs to another directory entry now";

/// Disables the active directory account `username`, ends its sessions and removes its
/// directory roles, audited with `why`. Ok(false): there was no such active account.
pub(super) async fn end_account(
    app: &App,
    username: &str,
    why: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut tx = Deed::open(app).await?;
    let Some(user) = db::by_username_tx(&mut tx, username)
        .await?
        .filter(|u| u.active && u.kind == crate::db::users::AccountKind::Directory)
    else {
        return Ok(false);
    };
    db::disable(&mut tx, user.id, now).await?;
    crate::db::users::revoke_sessions_of(&mut tx, user.id, now).await?;
    let removed = db::directory_roles(&mut tx, user.id).await?;
    for role in &removed {
        db::remove_grant(&mut tx, user.id, role).await?;
    }
    let entry = Entry::ok(None, "directory.sync.disable", format!("user:{}", user.id))
        .with_reason(why)
        .with_details(json!({"username": user.username, "roles_removed": removed}));
    tx.commit(&entry, now).await.map_err(Error::from)?;
    Ok(true)
}

/// Compares every active directory account with the directory. The directory not answering
/// changes nothing (an outage must not disable everybody).
pub async fn run(app: &App, now: DateTime<Utc>) -> Result<Synced> {
    let mut out = Synced::default();
    let Some(d) = &app.directory else {
        return Ok(out);
    };
    let policy = &app.policies.directory;
    let accounts = db::active_accounts(&app.db).await?;
    if accounts.is_empty() {
        return Ok(out);
    }
    let unavailable = |e: client::Down| {
        tracing::warn!(error = %e, "directory sync: the directory does not answer");
        super::unavailable(None)
    };
    let mut ldap = client::service(&d.conn).await.map_err(unavailable)?;
    for user in accounts {
        let found = client::find(&mut ldap, policy, &user.username, now)
            .await
            .map_err(unavailable)?;
        out.checked += 1;
        let mut tx = Deed::open(app).await?;
        let why = match &found {
            client::Found::Disabled => Some(why_ended(true)),
            client::Found::Person(p) => {
                let stored = db::identity(&mut tx, user.id).await?;
                (!super::same_person(&stored, p)).then_some(ANOTHER_ENTRY)
            }
            client::Found::Gone => Some(why_ended(false)),
            client::Found::Unclear(why) => {
                // Nothing changes on an unclear answer: somebody may have made it so.
                tracing::warn!(username = %user.username, reason = why, "directory sync: left as it is");
                continue;
            }
        };
        let (None, client::Found::Person(p)) = (why, found) else {
            drop(tx);
            if end_account(app, &user.username, why.unwrap_or(ANOTHER_ENTRY), now).await? {
                out.disabled.push(user.username.clone());
            }
            continue;
        };
        let mapped = super::mapped_roles(policy, &p.groups);
        let from_directory: BTreeSet<String> = db::directory_roles(&mut tx, user.id)
            .await?
            .into_iter()
            .collect();
        let mut removed = Vec::new();
        for role in from_directory.difference(&mapped) {
            if db::remove_grant(&mut tx, user.id, role).await? {
                removed.push(role.clone());
            }
        }
        if removed.is_empty() {
            continue;
        }
        let entry = Entry::ok(None, "directory.sync.roles", format!("user:{}", user.id))
            .with_reason("the person left the directory groups that gave these roles")
            .with_details(json!({"username": user.username, "roles_removed": removed}));
        tx.commit(&entry, now).await.map_err(Error::from)?;
        out.roles_removed
            .extend(removed.into_iter().map(|r| (user.username.clone(), r)));
    }
    let _ = ldap.unbind().await;
    Ok(out)
}
