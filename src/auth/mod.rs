//! Who is calling: login, logout, and turning a bearer token into a [`Principal`].
//!
//! Sessions are rows: logging out, disabling a user, changing a password or revoking a role
//! takes effect on the very next request, because every request reloads the session, the user
//! and the grants in force — or reuses what it read while provably nothing changed
//! ([`sessions`]).

pub mod api_token;
pub mod device;
pub mod password;
pub mod sessions;
pub mod token;

use std::sync::Arc;

use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::SecretString;
use serde::Serialize;

use crate::App;
use crate::audit::Entry;
use crate::db::users::{self as users_db, SessionScope};
use crate::deed::Bookkeeping;
use crate::error::{Error, Result};
use crate::rbac::Principal;

/// Failures from one address allowed before the rising delay starts for it.
const FREE_FAILURES: u32 = 3;
/// Failures of one account from anywhere allowed before the delay starts for the account: a
/// guesser who spreads attempts over many addresses is slowed down too, while the real user,
/// from their own address, keeps a few tries of their own before that.
const FREE_ACCOUNT_FAILURES: u32 = 10;
/// The delay never grows past this: a slow-down, never a lock-out.
const MAX_DELAY_SECS: i64 = 15 * 60;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginOk {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: i64,
    /// The password is temporary (an admin set it): this token may only change it
    /// (`POST /api/v1/me/password`), read `GET /api/v1/me` and log out.
    pub must_change_password: bool,
    /// A role of this user needs a second factor and none is confirmed yet: this token may only
    /// enrol one (`/api/v1/me/totp`, then `/confirm`), read `GET /api/v1/me` and log out.
    pub enrolment_required: bool,
    /// The session opened (the console binds its CSRF token to it).
    #[serde(skip)]
    pub session_id: String,
    /// The account, as stored (the console issues its device token for it).
    #[serde(skip)]
    pub username: String,
}

/// Where a login comes from: the client's address (behind a trusted proxy, the one it names),
/// and the device token a browser that signed in to this account before carries.
#[derive(Debug, Clone, Copy, Default)]
pub struct From<'a> {
    pub client: Option<IpAddr>,
    pub device: Option<&'a str>,
}

fn invalid_credentials(subject: Option<String>) -> Error {
    Error::Unauthenticated {
        code: "invalid_credentials",
        message: "用户名或密码错误 / Wrong username or password".into(),
        subject,
    }
}

/// Delay after `failures` consecutive failures when `free` of them cost nothing: then 1 s, 2 s,
/// 4 s … up to 15 minutes.
pub fn delay_after(failures: i64, free: u32) -> TimeDelta {
    let free = i64::from(free);
    if failures < free {
        return TimeDelta::zero();
    }
    let exp = (failures - free).min(20) as u32;
    TimeDelta::seconds((1i64 << exp).min(MAX_DELAY_SECS))
}

pub fn normalize_username(s: &str) -> String {
    s.trim().to_lowercase()
}

/// An address the account signed in from this recently is its owner's: the account-wide delay
/// does not apply there, so a guesser elsewhere cannot keep the owner out.
pub const KNOWN_ADDRESS_DAYS: i64 = 90;

/// The throttle keys of a login attempt with the failures each allows for free: from a known
/// device, the device alone; else the account from any address (unless this one is `known`),
/// then the account from this address. Always in this order (lock order).
fn throttle_keys(
    username: &str,
    client: Option<IpAddr>,
    known: bool,
    device: Option<&str>,
) -> Vec<(String, u32)> {
    if let Some(device) = device {
        return vec![(format!("{username}|device:{device}"), FREE_FAILURES)];
    }
    let mut keys = Vec::with_capacity(2);
    if !known {
        keys.push((format!("account|{username}"), FREE_ACCOUNT_FAILURES));
    }
    if let Some(ip) = client {
        keys.push((format!("{username}|{ip}"), FREE_FAILURES));
    }
    keys
}

/// Counts a login attempt under every key BEFORE the password is checked, in one serialized
/// transaction: concurrent attempts cannot slip past the delay. Err: a key is blocked for that
/// long, and nothing is counted. The clock is read after the lock, so attempts are ordered as
/// they were serialized.
async fn claim_attempt(app: &App, keys: &[(String, u32)]) -> Result<()> {
    let mut tx = crate::deed::Deed::open(app).await?;
    let mut counted = Vec::with_capacity(keys.len());
    for (key, _) in keys {
        counted.push(users_db::throttle_for_update(&mut tx, key).await?);
    }
    let now = app.now();
    let blocked = counted
        .iter()
        .flatten()
        .filter(|(_, until)| *until > now)
        .map(|(_, until)| (*until - now).num_seconds().max(1) as u64)
        .max();
    if let Some(retry_after_secs) = blocked {
        return Err(Error::TooManyRequests {
            retry_after_secs,
            subject: None,
        });
    }
    for ((key, free), last) in keys.iter().zip(counted) {
        let failures = last.map_or(1, |(f, _)| f + 1);
        users_db::set_throttle(&mut tx, key, failures, now + delay_after(failures, *free)).await?;
    }
    tx.commit_bookkeeping(Bookkeeping::LoginThrottle).await?;
    Ok(())
}

/// Checks the password and opens a session. Unknown user, wrong password and disabled user all
/// get the same answer after the same work. The rising delay is kept per username and client
/// address, and per username from all addresses but those it signed in from lately: guesses
/// spread over many addresses slow the account down, yet cannot keep its owner out.
pub async fn login(
    app: &App,
    username: &str,
    password: &SecretString,
    totp: Option<&str>,
    from: From<'_>,
) -> Result<LoginOk> {
    let client = from.client;
    let now = app.now();
    let username = normalize_username(username);
    if username.is_empty() || username.len() > 64 || username.chars().any(char::is_control) {
        return Err(invalid_credentials(None));
    }
    let address = client.map(|ip| ip.to_string());
    let known = match &address {
        Some(a) => {
            let since = now - TimeDelta::days(KNOWN_ADDRESS_DAYS);
            users_db::known_address(&app.db, &username, a, since).await?
        }
        None => false,
    };
    let device = from
        .device
        .and_then(|token| device::verify(app, token, &username, now));
    let keys = throttle_keys(&username, client, known, device.as_deref());
    let found = users_db::credentials(&app.db, &username).await?;
    // No local password account: the bank's directory decides, if there is one.
    let directory = match &found {
        None => crate::directory::handles(app, &username).await?,
        Some(_) => None,
    };
    // Only a real username goes to the audit trail: people sometimes type a password there.
    let subject = found
        .as_ref()
        .map(|(u, _)| u.username.clone())
        .or_else(|| directory.clone().flatten());
    match claim_attempt(app, &keys).await {
        Ok(()) => {}
        Err(Error::TooManyRequests {
            retry_after_secs, ..
        }) => {
            return Err(Error::TooManyRequests {
                retry_after_secs,
                subject,
            });
        }
        Err(e) => return Err(e),
    }
    let user = if let Some(known) = directory {
        crate::directory::sign_in(app, &username, password, known, now).await?
    } else {
        let ok = app
            .hasher
            .verify(password, found.as_ref().map(|(_, h)| h.as_str()))
            .await?;
        match found {
            Some((user, _)) if ok && user.active => user,
            _ => return Err(invalid_credentials(subject)),
        }
    };
    // Said only to whoever knows the password: it names no account to anybody else.
    if user
        .password_temporary_until
        .is_some_and(|until| until <= now)
    {
        return Err(Error::Unauthenticated {
            code: "temporary_password_expired",
            message: "临时密码已过期，请联系管理员重新设置 / The temporary password has expired; ask an administrator to set a new one".into(),
            subject,
        });
    }
    let enrol = second_factor(app, &user, totp, now).await?;
    for (key, _) in &keys {
        users_db::clear_throttle(&app.db, key).await?;
    }
    if let Some(a) = &address {
        users_db::remember_address(&app.db, &username, a, now).await?;
    }

    let ttl = TimeDelta::seconds(app.settings.token_ttl_secs as i64);
    let expires_at = now + ttl;
    let session_id = uuid::Uuid::new_v4().to_string();
    let mut tx = crate::deed::Deed::open(app).await?;
    let scope = if user.password_temporary_until.is_some() {
        SessionScope::PasswordChange
    } else if enrol {
        SessionScope::Enrolment
    } else {
        SessionScope::Full
    };
    let session = users_db::NewSession {
        id: &session_id,
        user_id: user.id,
        expires_at,
        scope,
        address: address.as_deref(),
    };
    users_db::insert_session(&mut tx, &session, now).await?;
    let entry = Entry::ok(
        Some((user.id, &user.username)),
        "auth.login",
        format!("user:{}", user.id),
    );
    tx.commit(&entry, now).await?;

    let access_token = app.tokens.issue(user.id, &session_id, now, expires_at)?;
    Ok(LoginOk {
        access_token,
        token_type: "Bearer",
        expires_in: ttl.num_seconds(),
        must_change_password: scope == SessionScope::PasswordChange,
        enrolment_required: enrol,
        session_id,
        username: user.username,
    })
}

/// Checks the password of a signed-in person (changing it), counted by the same delay as a
/// login: a stolen session cannot guess its way to the account's password.
pub(crate) async fn verify_password(
    app: &App,
    username: &str,
    password: &SecretString,
    client: Option<IpAddr>,
) -> Result<bool> {
    let keys = throttle_keys(username, client, false, None);
    claim_attempt(app, &keys).await?;
    let found = users_db::credentials(&app.db, username).await?;
    let ok = app
        .hasher
        .verify(password, found.as_ref().map(|(_, h)| h.as_str()))
        .await?;
    if ok {
        for (key, _) in &keys {
            users_db::clear_throttle(&app.db, key).await?;
        }
    }
    Ok(ok)
}

/// Whether a role `user_id` holds at `now`, or may exercise through a delegation to them, is one
/// `policies/security.toml` names for a second factor at login.
async fn second_factor_required(app: &App, user_id: i64, now: DateTime<Utc>) -> Result<bool> {
    let required = &app.policies.security.totp_required_roles;
    if required.is_empty() {
        return Ok(false);
    }
    let roles = users_db::roles_of(&app.db, user_id, now).await?;
    if roles.iter().any(|r| required.contains(r)) {
        return Ok(true);
    }
    let delegated = crate::db::approvals::delegated_roles_now(&app.db, user_id, now).await?;
    Ok(delegated.iter().any(|r| required.contains(r)))
}

/// Whether `user_id` must still enrol a second factor: a role of theirs needs one and none is
/// confirmed. Their sessions are limited to enrolling it ([`SessionScope::Enrolment`]).
pub(crate) async fn enrolment_due(app: &App, user_id: i64, now: DateTime<Utc>) -> Result<bool> {
    Ok(second_factor_required(app, user_id, now).await?
        && !crate::db::vault::has_confirmed_totp(&app.db, user_id).await?)
}

/// The login second factor, for holders of the roles `policies/security.toml` names. A refused
/// code leaves the attempt counted by the throttle (the password alone is not a success).
/// Ok(true): such a holder has no confirmed factor yet, and gets a session only to enrol one
/// (new staff are never locked out, and never skip enrolment).
async fn second_factor(
    app: &App,
    user: &users_db::User,
    totp: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool> {
    if !second_factor_required(app, user.id, now).await? {
        return Ok(false);
    }
    if !crate::db::vault::has_confirmed_totp(&app.db, user.id).await? {
        return Ok(true);
    }
    let mut tx = crate::deed::Deed::open(app).await?;
    let outcome = crate::vault::factor::check(app, &mut tx, user.id, totp, false, now).await?;
    // An accepted step or a counted failure sticks.
    tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
    outcome.map(|()| false).map_err(|e| match e {
        Error::Forbidden { code, message, .. } => Error::Unauthenticated {
            code,
            message,
            subject: Some(user.username.clone()),
        },
        other => other,
    })
}

/// Ends the caller's session; the token is dead afterwards.
pub async fn logout(app: &App, who: &Principal) -> Result<()> {
    let now = app.now();
    let mut tx = crate::deed::Deed::open(app).await?;
    users_db::revoke_session(&mut tx, &who.session_id, now).await?;
    let entry = Entry::by(who, "auth.logout", format!("user:{}", who.user_id));
    tx.commit(&entry, now)
        .await
        .map(|_| ())
        .map_err(Error::from)
}

pub(crate) fn unauthenticated() -> Error {
    unauthenticated_as(None)
}

pub(crate) fn unauthenticated_as(subject: Option<String>) -> Error {
    Error::Unauthenticated {
        code: "unauthenticated",
        message: "需要有效的登录凭证 / A valid access token is required".into(),
        subject,
    }
}

/// The principal behind a bearer token, with the roles in force at `now`.
pub async fn authenticate(
    app: &App,
    bearer: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Principal> {
    let token = bearer.ok_or_else(unauthenticated)?;
    if let Some(secret) = token.strip_prefix(api_token::PREFIX) {
        return api_token::authenticate(app, secret, now).await;
    }
    let claims = app.tokens.verify(token, now).ok_or_else(unauthenticated)?;
    let user_id: i64 = claims.sub.parse().map_err(|_| unauthenticated())?;
    // The epoch BEFORE the read: a commit during the read makes what was read stale.
    let epoch = app.db.epoch().current();
    let found = match app.sessions.get(&claims.jti, epoch, now) {
        Some(hit) => Some(hit),
        None => {
            let read = users_db::session_user(&app.db, &claims.jti, now)
                .await?
                .map(Arc::new);
            if let Some(found) = &read {
                app.sessions.put(&claims.jti, epoch, found.clone());
            }
            read
        }
    };
    let Some(found) = found.filter(|s| s.user.id == user_id) else {
        // A token we signed, for a session that is over (logout, disabled user, changed
        // password): the refusal is still that person's, for the audit trail.
        let subject = users_db::get(&app.db, user_id)
            .await
            .ok()
            .map(|u| u.username);
        return Err(unauthenticated_as(subject));
    };
    let user = &found.user;
    // Roles for machines never count for a person's session, even one granted before the
    // rule existed.
    let roles = found
        .roles
        .iter()
        .filter(|r| app.policies.roles.get(r).is_none_or(|role| !role.machine))
        .cloned()
        .collect();
    Ok(Principal {
        user_id: user.id,
        username: user.username.clone(),
        display_name: user.display_name.clone(),
        department: user.department.clone(),
        email: user.email.clone(),
        roles,
        session_id: claims.jti,
        token: None,
        permitted_by: Vec::new(),
        scope: found.scope,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_rises_and_is_capped() {
        assert_eq!(delay_after(1, 3), TimeDelta::zero());
        assert_eq!(delay_after(2, 3), TimeDelta::zero());
        assert_eq!(delay_after(3, 3), TimeDelta::seconds(1));
        assert_eq!(delay_after(4, 3), TimeDelta::seconds(2));
        assert_eq!(delay_after(8, 3), TimeDelta::seconds(32));
        assert_eq!(delay_after(100, 3), TimeDelta::seconds(MAX_DELAY_SECS));
        assert_eq!(delay_after(9, 10), TimeDelta::zero());
        assert_eq!(delay_after(10, 10), TimeDelta::seconds(1));
    }

    #[test]
    fn an_attempt_counts_for_the_account_and_for_its_address() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(
            throttle_keys("op.zhang", Some(ip), false, None),
            vec![
                ("account|op.zhang".to_string(), FREE_ACCOUNT_FAILURES),
                ("op.zhang|10.1.2.3".to_string(), FREE_FAILURES),
            ]
        );
        // From the owner's usual address only the address's own count applies.
        assert_eq!(
            throttle_keys("op.zhang", Some(ip), true, None),
            vec![("op.zhang|10.1.2.3".to_string(), FREE_FAILURES)]
        );
        // From a device that signed in before: the device alone, whatever others did.
        assert_eq!(
            throttle_keys("op.zhang", Some(ip), false, Some("d1")),
            vec![("op.zhang|device:d1".to_string(), FREE_FAILURES)]
        );
    }
}
