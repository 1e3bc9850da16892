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
pub mod dn;
pub mod sync;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// How many look-ups of names not known here may ask the directory at once: anybody can type a
/// made-up name, and that must not turn into unbounded traffic to the bank's directory.
const NEW_NAME_LOOKUPS: usize = 8;
/// How long a look-up of a new name waits for its turn before the answer is 503.
const NEW_NAME_WAIT: Duration = Duration::from_secs(5);
/// How long `/readyz` trusts its last look at the directory (the probe needs no login).
const READY_FOR: Duration = Duration::from_secs(10);

/// The directory this instance signs people in with.
pub struct Directory {
    pub conn: Connection,
    new_names: tokio::sync::Semaphore,
    ready: Mutex<Option<(Instant, bool)>>,
}

impl Directory {
    pub fn new(conn: Connection) -> Directory {
        Directory {
            conn,
            new_names: tokio::sync::Semaphore::new(NEW_NAME_LOOKUPS),
            ready: Mutex::new(None),
        }
    }

    /// What the last conversation with the directory showed, for `/readyz`.
    fn note(&self, answered: bool) {
        *self.ready.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), answered));
    }
}

/// Whether `username` may be looked up in the directory at all: the shape of a local username
/// (lowercase letters, digits, `.`, `_`, `-`); anything else never reaches a filter.
pub fn is_directory_name(username: &str) -> bool {
    crate::accounts::check_username(username).is_ok()
}

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
    if app.directory.is_none() || !is_directory_name(username) {
        return Ok(None);
    }
    match db::by_username(&app.db, username).await? {
        Some(u) if u.kind == AccountKind::Directory => Ok(Some(Some(u.username))),
        Some(_) => Ok(None),
        None => Ok(Some(None)),
    }
}

/// The roles `groups` (DNs) map to.
pub fn mapped_roles(policy: &DirectoryPolicy, groups: &[String]) -> BTreeSet<String> {
    let groups: Vec<dn::Dn> = groups.iter().filter_map(|g| dn::parse(g)).collect();
    let base = dn::parse(&policy.group_base);
    policy
        .groups
        .iter()
        .filter(|g| client::is_member(&groups, &g.group, base.as_ref()))
        .flat_map(|g| g.roles.iter().cloned())
        .collect()
}

/// Whether the account here and the entry found are the same person: the lasting identifier;
/// an account made before identifiers were kept, by its DN (it adopts the identifier then).
fn same_person(stored: &db::Identity, p: &client::Person) -> bool {
    match &stored.id {
        Some(id) => *id == p.id,
        None => stored
            .dn
            .as_deref()
            .is_some_and(|d| dn::parse(d).is_some_and(|d| Some(d) == dn::parse(&p.dn))),
    }
}

/// Zero-width and bidirectional formatting characters (Unicode `Cf` that matter in names):
/// they could make one approver's name look like another's.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}')
}

/// Text from the directory as changeguard keeps it: no control characters, at most `max`
/// characters.
fn tidy(v: Option<&str>, max: usize) -> String {
    let v: String = v
        .unwrap_or_default()
        .chars()
        .filter(|c| !c.is_control() && !is_invisible_format(*c))
        .collect();
    v.trim().chars().take(max).collect()
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
    let held_before: Vec<String> = held.iter().cloned().collect();
    let mut added = Vec::new();
    for role in mapped.difference(&from_directory) {
        if db::add_grant(tx, user.id, role, now).await? {
            // A role that needs a second factor, to somebody with none: their sessions end.
            crate::accounts::end_sessions_without_factor(app, tx, user.id, role, &held_before, now)
                .await?;
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

/// Asks the directory for `username`'s entry with the service account. New names (`known`
/// is `None`) wait for one of a few slots.
async fn look_up(
    d: &Directory,
    policy: &DirectoryPolicy,
    username: &str,
    known: bool,
    now: DateTime<Utc>,
) -> std::result::Result<client::Found, client::Down> {
    let _slot = if known {
        None
    } else {
        let wait = tokio::time::timeout(NEW_NAME_WAIT, d.new_names.acquire());
        match wait.await {
            Ok(Ok(permit)) => Some(permit),
            _ => {
                return Err(client::Down(
                    "too many look-ups of new names at once".into(),
                ));
            }
        }
    };
    let mut ldap = client::service(&d.conn)
        .await
        .inspect_err(|_| d.note(false))?;
    let found = client::find(&mut ldap, policy, username, now).await;
    let _ = ldap.unbind().await;
    d.note(found.is_ok());
    found
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
    let Some(d) = &app.directory else {
        return Err(invalid_credentials(None));
    };
    let policy = &app.policies.directory;
    // Never an empty bind (it would be anonymous, and succeed).
    if password.expose_secret().is_empty() {
        return Err(invalid_credentials(known));
    }
    let down = |e: client::Down| {
        tracing::warn!(error = %e, "directory sign-in: the directory does not answer");
        unavailable(known.clone())
    };
    let found = look_up(d, policy, username, known.is_some(), now)
        .await
        .map_err(down)?;
    // Gone or disabled: refused; the account here is ended by the sync, never by a sign-in
    // attempt (which anybody can make, e.g. after locking a colleague out with wrong passwords).
    let person = match found {
        client::Found::Person(p) => p,
        client::Found::Unclear(why) => {
            tracing::warn!(reason = why, "directory sign-in refused");
            return Err(invalid_credentials(known));
        }
        _ => return Err(invalid_credentials(known)),
    };
    if !client::check_password(&d.conn, &person.dn, password)
        .await
        .map_err(down)?
    {
        return Err(invalid_credentials(known));
    }
    let display_name = match tidy(person.display_name.as_deref(), 100) {
        name if name.is_empty() => username.to_string(),
        name => name,
    };
    let email = tidy(person.email.as_deref(), 254);
    let attrs = Attributes {
        dn: &person.dn,
        id: &person.id,
        display_name: &display_name,
        department: &tidy(person.department.as_deref(), 100),
        email: if crate::accounts::check_email(&email).is_ok() {
            &email
        } else {
            ""
        },
    };
    let mapped = mapped_roles(policy, &person.groups);
    let mut tx = Deed::open(app).await?;
    let (user, created) = match db::by_username_tx(&mut tx, username).await? {
        Some(u) if u.kind == AccountKind::Directory => {
            if u.active && !same_person(&db::identity(&mut tx, u.id).await?, &person) {
                drop(tx);
                sync::end_account(app, username, sync::ANOTHER_ENTRY, now).await?;
                return Err(Error::Forbidden {
                    code: "directory_identity_changed",
                    message: "该用户名在目录中已属于另一位人员，原账号已停用，请联系管理员 / This username now belongs to another person in the directory; the earlier account here is disabled: ask an administrator".into(),
                    policy_ids: Vec::new(),
                });
            }
            (db::update(&mut tx, u.id, &attrs, now).await?, false)
        }
        Some(_) => return Err(invalid_credentials(None)),
        None => {
            // Renamed in the directory: the person has an account here already, under the old
            // name (one person, one account: never one to request and another to approve).
            if let Some(old) = db::username_of_entry(&mut tx, &person.id).await? {
                return Err(Error::Forbidden {
                    code: "directory_account_renamed",
                    message: format!(
                        "您在目录中的账号在本系统已以用户名 {old} 存在，请联系管理员 / Your directory entry already has an account here, named {old}: ask an administrator"
                    ),
                    policy_ids: Vec::new(),
                });
            }
            (db::insert(&mut tx, username, &attrs, now).await?, true)
        }
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

/// Whether the directory answers (the service bind), for `/readyz`; a look at most every
/// [`READY_FOR`], however often the probe asks. `None`: not configured.
pub async fn reachable(app: &App) -> Option<bool> {
    let d = app.directory.as_ref()?;
    let cached = *d.ready.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((at, ok)) = cached
        && at.elapsed() < READY_FOR
    {
        return Some(ok);
    }
    let ok = match client::service(&d.conn).await {
        Ok(mut ldap) => {
            let _ = ldap.unbind().await;
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: the directory does not answer");
            false
        }
    };
    d.note(ok);
    Some(ok)
}
