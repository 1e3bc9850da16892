//! Directory sign-in (LDAP / Active Directory), next to the local accounts.
//!
//! A username with no local password account (or one of kind `directory`) is looked up with the
//! service account, then authenticated by a bind as the entry found. The first sign-in creates
//! the account (kind `directory`, no local password); every sign-in brings its display name,
//! department, e-mail and the roles its groups map to (`policies/directory.toml`) up to date.
//! Grants an admin made in changeguard stay as they are (`role_grants.source`). The [`sync`] job
//! disables accounts gone or disabled in the directory and removes roles of groups left.

pub mod client;
pub mod config;
pub mod sync;

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::App;
use crate::audit::{Entry, Outcome};
use crate::db::directory::{self as db, Attributes};
use crate::db::users::{AccountKind, User};
use crate::deed::Deed;
use crate::error::{Error, Result};

pub use config::{Connection, DirectoryPolicy};

/// The answer to a directory user while the directory does not answer.
pub fn unavailable(subject: Option<String>) -> Error {
    Error::Unavailable {
        code: "directory_unavailable",
        message: "目录服务（LDAP / AD）暂时不可用，请稍后再试；本地账号不受影响 / The directory (LDAP / AD) is unavailable; try again later (local accounts are not affected)".into(),
        subject,
    }
}

fn invalid_credentials(subject: Option<String>) -> Error {
    Error::Unauthenticated {
        code: "invalid_credentials",
        message: "用户名或密码错误 / Wrong username or password".into(),
        subject,
    }
}

/// A directory account has no local password to set or use.
pub fn no_local_password() -> Error {
    Error::invalid(
        "directory_account_password",
        "目录账号没有本地密码，请在目录（AD / LDAP）中修改密码 / A directory account has no local password; change it in the directory (AD / LDAP)",
    )
}

/// Refuses a local password change for a directory account.
pub async fn refuse_local_password(app: &App, user_id: i64) -> Result<()> {
    let user = crate::db::users::get(&app.db, user_id).await?;
    if user.kind == AccountKind::Directory {
        return Err(no_local_password());
    }
    Ok(())
}

/// Whether a login for `username` goes to the directory: it is configured and the username has
/// no local password account. Ok(Some(name)): the directory account already known here.
pub async fn handles(app: &App, username: &str) -> Result<Option<Option<String>>> {
    if app.directory.is_none() {
        return Ok(None);
    }
    match db::by_username(&app.db, username).await? {
        Some(u) if u.kind == AccountKind::Directory => Ok(Some(Some(u.username))),
        Some(_) => Ok(None),
        None => Ok(Some(None)),
    }
}

/// The roles `groups` map to.
pub fn mapped_roles(policy: &DirectoryPolicy, groups: &[String]) -> BTreeSet<String> {
    policy
        .groups
        .iter()
        .filter(|g| client::is_member(groups, &g.group))
        .flat_map(|g| g.roles.iter().cloned())
        .collect()
}

/// Two incompatible roles among `roles`, if any.
fn incompatible(app: &App, roles: &BTreeSet<String>) -> Option<(String, String)> {
    let all: Vec<&String> = roles.iter().collect();
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if app.policies.roles.incompatible(a, b) {
                return Some(((*a).clone(), (*b).clone()));
            }
        }
    }
    None
}

/// What the grants of a person become: (added, removed), refused when the result holds two
/// incompatible roles.
async fn bring_roles(
    app: &App,
    tx: &mut Deed<'_>,
    user: &User,
    mapped: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> Result<std::result::Result<(Vec<String>, Vec<String>), (String, String)>> {
    let held: BTreeSet<String> = crate::db::users::roles_of_tx(tx, user.id, now)
        .await?
        .into_iter()
        .collect();
    let from_directory: BTreeSet<String> = db::directory_roles(tx, user.id)
        .await?
        .into_iter()
        .collect();
    let mut after: BTreeSet<String> = held.difference(&from_directory).cloned().collect();
    after.extend(mapped.iter().cloned());
    if let Some(pair) = incompatible(app, &after) {
        return Ok(Err(pair));
    }
    let mut added = Vec::new();
    for role in mapped.difference(&from_directory) {
        if db::add_grant(tx, user.id, role, now).await? {
            added.push(role.clone());
        }
    }
    let mut removed = Vec::new();
    for role in from_directory.difference(mapped) {
        if db::remove_grant(tx, user.id, role).await? {
            removed.push(role.clone());
        }
    }
    Ok(Ok((added, removed)))
}

/// Authenticates `username` against the directory and brings its account up to date.
/// `known`: the directory account already here. The caller counted the attempt.
pub async fn sign_in(
    app: &App,
    username: &str,
    password: &SecretString,
    known: Option<String>,
    now: DateTime<Utc>,
) -> Result<User> {
    let Some(conn) = &app.directory else {
        return Err(invalid_credentials(None));
    };
    let policy = &app.policies.directory;
    // Never an empty bind (it would be anonymous, and succeed).
    if password.expose_secret().is_empty() {
        return Err(invalid_credentials(known));
    }
    let looked_up = async {
        let mut ldap = client::service(conn).await?;
        let found = client::find(&mut ldap, policy, username).await;
        let _ = ldap.unbind().await;
        let found = found?;
        let ok = match &found {
            Some(p) if !p.disabled => client::check_password(conn, &p.dn, password).await?,
            _ => false,
        };
        Ok::<_, client::Down>(found.filter(|_| ok))
    }
    .await;
    let person = match looked_up {
        Ok(Some(p)) => p,
        Ok(None) => return Err(invalid_credentials(known)),
        Err(e) => {
            tracing::warn!(error = %e, "directory sign-in: the directory does not answer");
            return Err(unavailable(known));
        }
    };
    let display_name = person.display_name.as_deref().unwrap_or(username);
    let attrs = Attributes {
        dn: &person.dn,
        display_name,
        department: person.department.as_deref().unwrap_or(""),
        email: person.email.as_deref().unwrap_or(""),
    };
    let mapped = mapped_roles(policy, &person.groups);
    let mut tx = Deed::open(app).await?;
    let (user, created) = match db::by_username_tx(&mut tx, username).await? {
        Some(u) if u.kind == AccountKind::Directory => {
            (db::update(&mut tx, u.id, &attrs, now).await?, false)
        }
        Some(_) => return Err(invalid_credentials(None)),
        None => (db::insert(&mut tx, username, &attrs, now).await?, true),
    };
    if !user.active {
        // Disabled here (by an admin or the sync): the directory alone does not bring it back.
        return Err(invalid_credentials(Some(user.username)));
    }
    let (added, removed) = match bring_roles(app, &mut tx, &user, &mapped, now).await? {
        Ok(changes) => changes,
        Err((a, b)) => {
            drop(tx);
            let message = format!(
                "目录分组给出的角色 {a} 与 {b} 不相容（不相容职责），无法登录，请联系管理员 / The directory's groups give {a} and {b}, which are incompatible (separation of duties): sign-in refused; ask an administrator"
            );
            let mut entry = Entry::ok(None, "auth.login", Some(format!("directory:{username}")))
                .with_reason(message.clone())
                .with_policies(&["sod.incompatible_roles".to_string()])
                .with_details(
                    json!({"username": username, "directory_dn": person.dn, "roles": mapped}),
                );
            entry.outcome = Outcome::Refused;
            entry.code = Some("directory_roles_incompatible".into());
            entry.actor = Some(username.to_string());
            Deed::audit_alone(app, &entry, now).await?;
            return Err(Error::Forbidden {
                code: "directory_roles_incompatible",
                message,
                policy_ids: vec!["sod.incompatible_roles".into()],
            }
            .audited());
        }
    };
    let entry = Entry::ok(
        Some((user.id, &user.username)),
        "directory.sign_in",
        format!("user:{}", user.id),
    )
    .with_details(json!({
        "created": created,
        "directory_dn": person.dn,
        "department": user.department,
        "roles_added": added,
        "roles_removed": removed,
    }));
    tx.commit(&entry, now).await?;
    Ok(user)
}

/// Whether the directory answers (the service bind), for `/readyz`. `None`: not configured.
pub async fn reachable(app: &App) -> Option<bool> {
    let conn = app.directory.as_ref()?;
    Some(match client::service(conn).await {
        Ok(mut ldap) => {
            let _ = ldap.unbind().await;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the directory does not answer");
            false
        }
    })
}
