//! The sync job: directory accounts gone or disabled in the directory are disabled here (their
//! sessions end), and roles of groups a person left are removed. Runs from the scheduler (once
//! across instances, by its `job_runs` slot) or directly; takes `now`.

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

/// Compares every active directory account with the directory. The directory not answering
/// changes nothing (an outage must not disable everybody).
pub async fn run(app: &App, now: DateTime<Utc>) -> Result<Synced> {
    let mut out = Synced::default();
    let Some(conn) = &app.directory else {
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
    let mut ldap = client::service(conn).await.map_err(unavailable)?;
    for user in accounts {
        let found = client::find(&mut ldap, policy, &user.username)
            .await
            .map_err(unavailable)?;
        out.checked += 1;
        let mut tx = Deed::open(app).await?;
        match found {
            Some(p) if !p.disabled => {
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
            gone_or_disabled => {
                let why = if gone_or_disabled.is_some() {
                    "disabled in the directory"
                } else {
                    "gone from the directory"
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
                out.disabled.push(user.username.clone());
            }
        }
    }
    let _ = ldap.unbind().await;
    Ok(out)
}
