//! Accounts and role grants: creating and changing users, granting and revoking roles, with
//! the separation-of-duties rules decided by the Cedar policies.

pub mod requests;
pub mod resets;
pub mod self_service;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::audit::Entry;
use crate::auth::{normalize_username, password};
use crate::db::password_resets::PasswordReset;
use crate::db::role_requests::RoleRequest;
use crate::db::users::{self as users_db, Grant, NewUser, User, UserChanges};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::{Decision, Facts, Principal, Resource};
use crate::text::{self, Lines};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    pub display_name: String,
    /// e.g. 科技部, 电子银行部, 合规部, or a branch.
    pub department: String,
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateUser {
    pub display_name: Option<String>,
    pub department: Option<String>,
    pub email: Option<String>,
    /// `false` disables the user: their sessions end at once.
    pub active: Option<bool>,
    /// A new password: every session of the user ends.
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantRole {
    pub role: String,
    /// RFC 3339; the grant ends by itself then.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A user with the roles they hold.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserView {
    #[serde(flatten)]
    pub user: User,
    pub grants: Vec<Grant>,
}

pub(crate) fn check_username(u: &str) -> Result<()> {
    let ok = (2..=64).contains(&u.len())
        && u.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_username",
            "用户名须为 2–64 个小写字母、数字或 . _ - / A username is 2–64 lowercase letters, digits or . _ -",
        ))
    }
}

pub(crate) fn check_email(v: &str) -> Result<()> {
    let ok = v.len() <= 254
        && v.split_once('@').is_some_and(|(l, d)| {
            !l.is_empty() && d.contains('.') && !d.starts_with('.') && !d.ends_with('.')
        })
        && !v.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_email",
            "邮箱地址无效 / The e-mail address is not valid",
        ))
    }
}

/// Refuses with the code of the forbid policy that decided, if one did.
pub fn require(decision: Decision) -> Result<Decision> {
    if decision.allowed {
        return Ok(decision);
    }
    let (code, message) = match decision.policy_ids.first().map(String::as_str) {
        Some("sod.no_self_grant") => (
            "self_grant",
            "不能给自己授予角色 / Nobody may grant a role to themselves",
        ),
        Some("sod.only_grantable_roles") => (
            "role_not_grantable",
            "您的角色无权授予该角色 / Your roles may not grant this role",
        ),
        Some("sod.incompatible_roles") => (
            "incompatible_roles",
            "该用户已持有与此角色不相容的角色（不相容职责） / The user holds a role incompatible with this one (incompatible duties)",
        ),
        Some("sod.second_person") => (
            "self_approval",
            "特权角色授权须由申请人和被授权人以外的第二人批准 / A second person, neither the one who asked nor the grantee, must approve a privileged grant",
        ),
        Some("sod.second_person_reset") => (
            "self_approval",
            "特权账号的密码重置须由申请人和该账号持有人以外的第二人批准 / A second person, neither the one who asked nor the account's holder, must approve a privileged account's password reset",
        ),
        Some("sod.keep_last_admin") => (
            "last_admin",
            "不能停用最后一名管理员或撤销其管理员角色 / The last active admin cannot be disabled or lose admin",
        ),
        _ => return Err(Error::forbidden(decision.policy_ids)),
    };
    Err(Error::Forbidden {
        code,
        message: message.into(),
        policy_ids: decision.policy_ids,
    })
}

/// A password an admin chose signs in only to be changed, and only this long.
pub const TEMPORARY_PASSWORD_HOURS: i64 = 72;

/// Creates a person. Created by an admin (`who`), the password is temporary; from the server's
/// console (the CLI, the first start) it is the one whoever runs the server chose.
pub async fn create_user(app: &App, who: Option<&Principal>, req: CreateUser) -> Result<User> {
    let username = normalize_username(&req.username);
    check_username(&username)?;
    text::required("display_name", &req.display_name, 100, Lines::One)?;
    text::required("department", &req.department, 100, Lines::One)?;
    check_email(&req.email)?;
    password::check_policy(req.password.expose_secret(), &username)?;
    let hash = app.hasher.hash(&req.password).await?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let user = users_db::insert(
        &mut tx,
        &NewUser {
            kind: users_db::AccountKind::Person,
            username: &username,
            display_name: req.display_name.trim(),
            department: req.department.trim(),
            email: req.email.trim(),
            password_hash: &hash,
            password_temporary_until: who.map(|_| now + TimeDelta::hours(TEMPORARY_PASSWORD_HOURS)),
        },
        now,
    )
    .await
    .map_err(|e| match e {
        crate::db::StoreError::Unique => Error::conflict(
            "username_taken",
            "用户名已被使用 / This username is already taken",
        ),
        other => other.into(),
    })?;
    let entry = match who {
        Some(w) => Entry::by(w, "user.create", format!("user:{}", user.id)),
        // The first admin, or the server console.
        None => Entry::ok(None, "user.create", format!("user:{}", user.id)),
    }
    .with_details(json!({"username": user.username, "department": user.department}));
    tx.commit(&entry, now).await?;
    Ok(user)
}

/// The active user with this username (as typed: it is normalized), read by its index.
pub async fn active_user(app: &App, username: &str) -> Result<Option<User>> {
    let found = users_db::credentials(&app.db, &normalize_username(username)).await?;
    Ok(found.map(|(u, _)| u).filter(|u| u.active))
}

pub async fn view(app: &App, id: i64) -> Result<UserView> {
    let user = users_db::get(&app.db, id).await.map_err(not_found)?;
    let grants = users_db::grants_of(&app.db, id).await?;
    Ok(UserView { user, grants })
}

pub(crate) fn not_found(e: crate::db::StoreError) -> Error {
    match e {
        crate::db::StoreError::NotFound => Error::NotFound { what: "user" },
        other => other.into(),
    }
}

/// What a change of a user did.
#[derive(Debug)]
pub enum Updated {
    Done(User),
    /// The account holds privilege: the new password waits for a second person
    /// ([`resets`]); the other fields are changed.
    ResetPending(PasswordReset),
}

pub async fn update_user(app: &App, who: &Principal, id: i64, req: UpdateUser) -> Result<Updated> {
    if let Some(v) = &req.display_name {
        text::required("display_name", v, 100, Lines::One)?;
    }
    if let Some(v) = &req.department {
        text::required("department", v, 100, Lines::One)?;
    }
    if let Some(v) = &req.email {
        check_email(v)?;
    }
    let now = app.now();
    let current = users_db::get(&app.db, id).await.map_err(not_found)?;
    if req.password.is_some() && current.kind == users_db::AccountKind::Service {
        return Err(Error::invalid(
            "service_account_password",
            "服务账号没有密码，只用 API 令牌登录 / A service account has no password; it signs in with API tokens",
        ));
    }
    if req.password.is_some() && current.kind == users_db::AccountKind::Directory {
        return Err(crate::directory::no_local_password());
    }
    let new_hash = match &req.password {
        Some(pw) => {
            password::check_policy(pw.expose_secret(), &current.username)?;
            Some(app.hasher.hash(pw).await?)
        }
        None => None,
    };
    let mut tx = Deed::open(app).await?;
    // Not `current.active`: it was read before the transaction, and an enable committed since
    // would let this disable skip ending the sessions and the last-admin check.
    let disabling = req.active == Some(false);
    let removes_last_admin = disabling && is_last_admin(&mut tx, id, now).await?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "user.manage",
        &Resource::User(id),
        &Facts {
            removes_last_admin,
            ..Facts::default()
        },
    ))?;
    // A privileged account's new password waits for a second person (read in this
    // transaction: a grant committed meanwhile is seen).
    let reset_waits = new_hash.is_some()
        && (resets::needs_second_person(app, &users_db::roles_of_tx(&mut tx, id, now).await?)
            || resets::needs_second_person(
                app,
                &crate::db::approvals::delegated_roles(&mut tx, id, now).await?,
            )
            || crate::db::role_requests::has_pending(&mut tx, id, now).await?);
    let password_now = new_hash.as_deref().filter(|_| !reset_waits);
    let user = users_db::update(
        &mut tx,
        id,
        &UserChanges {
            display_name: req.display_name.as_deref().map(str::trim),
            department: req.department.as_deref().map(str::trim),
            email: req.email.as_deref().map(str::trim),
            active: req.active,
            // Chosen by an admin: temporary.
            password: password_now
                .map(|h| (h, Some(now + TimeDelta::hours(TEMPORARY_PASSWORD_HOURS)))),
        },
        now,
    )
    .await?;
    if disabling || password_now.is_some() {
        users_db::revoke_sessions_of(&mut tx, id, now).await?;
    }
    let mut changed: Vec<&str> = Vec::new();
    for (name, set) in [
        ("display_name", req.display_name.is_some()),
        ("department", req.department.is_some()),
        ("email", req.email.is_some()),
        ("active", req.active.is_some()),
        ("password", password_now.is_some()),
    ] {
        if set {
            changed.push(name);
        }
    }
    if let (true, Some(hash)) = (reset_waits, new_hash.as_deref()) {
        let (r, notice) = resets::file(app, &mut tx, who, &user, hash, now).await?;
        let entry = Entry::by(who, "password_reset.request", format!("user:{id}"))
            .with_policies(&decision.policy_ids)
            .with_details(
                json!({"request_id": r.id, "username": r.username, "changed": changed,
                                 "active": user.active}),
            );
        crate::notify::commit_with_bulletin(
            app,
            tx,
            ("role_requested", resets::parties(&r), &notice),
            &entry,
            now,
        )
        .await?;
        return Ok(Updated::ResetPending(r));
    }
    let action = if disabling {
        "user.disable"
    } else {
        "user.update"
    };
    let entry = Entry::by(who, action, format!("user:{id}"))
        .with_policies(&decision.policy_ids)
        .with_details(json!({"changed": changed, "active": user.active}));
    tx.commit(&entry, now).await?;
    Ok(Updated::Done(user))
}

/// True when `user_id` is an active admin and no other active admin exists.
pub(crate) async fn is_last_admin(
    tx: &mut crate::db::Tx,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    users_db::lock_admins(tx).await?;
    let target = users_db::get_tx(tx, user_id).await.map_err(not_found)?;
    let holds_admin = users_db::roles_of_tx(tx, user_id, now)
        .await?
        .iter()
        .any(|r| r == "admin");
    if !target.active || !holds_admin {
        return Ok(false);
    }
    // Another admin counts only with a grant that cannot run out: else grant B `admin` for an
    // hour, remove A's, and after the hour nobody administers the service.
    Ok(users_db::count_permanent_holders(tx, "admin", user_id).await? == 0)
}

/// Roles for machines go to service accounts only, and service accounts hold nothing else:
/// a token never carries a person's privileges, and no person gets a pipeline's admissions.
fn check_role_fits(app: &App, grantee: &User, role: &str) -> Result<()> {
    let machine_role = app.policies.roles.get(role).is_some_and(|r| r.machine);
    match (grantee.kind, machine_role) {
        (users_db::AccountKind::Service, false) => Err(Error::invalid(
            "role_not_for_service_accounts",
            "服务账号只能持有为机器设立的角色（如 流水线、变更监测） / A service account may hold only roles for machines (such as pipeline or change_monitor)",
        )),
        (users_db::AccountKind::Person | users_db::AccountKind::Directory, true) => {
            Err(Error::invalid(
                "role_only_for_service_accounts",
                "该角色只授予服务账号 / This role is for service accounts only",
            ))
        }
        _ => Ok(()),
    }
}

/// What a grant did.
pub enum Granted {
    /// In force now.
    Active(Grant),
    /// A privileged role: waits for a second person ([`requests`]).
    Pending(RoleRequest),
}

pub async fn grant_role(
    app: &App,
    who: &Principal,
    user_id: i64,
    req: GrantRole,
) -> Result<Granted> {
    let now = app.now();
    if app.policies.roles.get(&req.role).is_none() {
        return Err(Error::invalid(
            "unknown_role",
            format!("没有角色 {} / No such role: {}", req.role, req.role),
        ));
    }
    if let Some(exp) = req.expires_at
        && exp <= now
    {
        return Err(Error::invalid(
            "invalid_expiry",
            "到期时间必须晚于现在 / expires_at must be in the future",
        ));
    }
    let grantee = users_db::get(&app.db, user_id).await.map_err(not_found)?;
    check_role_fits(app, &grantee, &req.role)?;
    let mut tx = Deed::open(app).await?;
    // Re-granting the last admin's `admin` with an expiry would let it run out.
    let removes_last_admin = req.role == "admin"
        && req.expires_at.is_some()
        && is_last_admin(&mut tx, user_id, now).await?;
    let held = users_db::roles_of_tx(&mut tx, user_id, now).await?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "role.grant",
        &Resource::Role(&req.role),
        &Facts {
            grantee: Some(user_id),
            removes_last_admin,
            grantee_roles: Some(held.clone()),
            ..Facts::default()
        },
    ))?;
    if app.policies.roles.is_privileged(&req.role) {
        let r = requests::file(app, tx, who, &grantee, &req, &decision, now).await?;
        return Ok(Granted::Pending(r));
    }
    let grant = users_db::upsert_grant(
        &mut tx,
        user_id,
        &req.role,
        Some(who.user_id),
        now,
        req.expires_at,
    )
    .await?;
    let sessions_ended =
        end_sessions_without_factor(app, &mut tx, user_id, &req.role, &held, now).await?;
    let entry = Entry::by(who, "role.grant", format!("user:{user_id}"))
        .with_policies(&decision.policy_ids)
        .with_details(
            json!({"role": req.role, "username": grantee.username, "expires_at": req.expires_at,
                   "sessions_ended": sessions_ended}),
        );
    tx.commit(&entry, now).await?;
    Ok(Granted::Active(grant))
}

pub async fn revoke_role(app: &App, who: &Principal, user_id: i64, role: &str) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let removes_last_admin = role == "admin" && is_last_admin(&mut tx, user_id, now).await?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "role.grant",
        &Resource::Role(role),
        &Facts {
            grantee: Some(user_id),
            revoke: true,
            removes_last_admin,
            ..Facts::default()
        },
    ))?;
    if !users_db::delete_grant(&mut tx, user_id, role).await? {
        return Err(Error::NotFound { what: "role grant" });
    }
    let entry = Entry::by(who, "role.revoke", format!("user:{user_id}"))
        .with_policies(&decision.policy_ids)
        .with_details(json!({"role": role}));
    tx.commit(&entry, now).await?;
    Ok(())
}

/// A role `policies/security.toml` lists for a second factor at sign-in, newly in force for
/// `user_id` (who held no listed role: `held`): their sessions were opened without that factor,
/// so they end with the grant. The next sign-in asks for the code, or allows only enrolling one.
/// Returns whether sessions were ended.
///
/// And a privileged role (or one that grants roles) voids a temporary password an admin chose
/// that the holder has not changed yet: else one admin could set it, have the role approved,
/// and sign in as a privileged account they alone know the password of. A new password then
/// needs a second person ([`resets`]).
///
/// The people `user_id` delegated approval to come to decide in `role` too: the same holds for
/// them (their own roles and those delegated to them, but `role`, are what they held).
pub(crate) async fn end_sessions_without_factor(
    app: &App,
    tx: &mut crate::db::Tx,
    user_id: i64,
    role: &str,
    held: &[String],
    now: DateTime<Utc>,
) -> Result<bool> {
    let mut ended = end_own_sessions_without_factor(app, tx, user_id, role, held, now).await?;
    for delegate in crate::db::approvals::delegates_not_over(tx, user_id, now).await? {
        let mut theirs = users_db::roles_of_tx(tx, delegate, now).await?;
        theirs.extend(
            crate::db::approvals::delegated_roles(tx, delegate, now)
                .await?
                .into_iter()
                .filter(|r| r != role),
        );
        ended |= end_own_sessions_without_factor(app, tx, delegate, role, &theirs, now).await?;
    }
    Ok(ended)
}

/// [`end_sessions_without_factor`] for one person.
pub(crate) async fn end_own_sessions_without_factor(
    app: &App,
    tx: &mut crate::db::Tx,
    user_id: i64,
    role: &str,
    held: &[String],
    now: DateTime<Utc>,
) -> Result<bool> {
    let privileged = resets::needs_second_person(app, &[role.to_string()]);
    if privileged && users_db::void_temporary_password(tx, user_id, now).await? {
        users_db::revoke_sessions_of(tx, user_id, now).await?;
        return Ok(true);
    }
    let listed = &app.policies.security.totp_required_roles;
    if !listed.iter().any(|r| r == role) || held.iter().any(|r| listed.contains(r)) {
        return Ok(false);
    }
    users_db::revoke_sessions_of(tx, user_id, now).await?;
    Ok(true)
}

/// `user` as Cedar sees them, with the roles in force at `now` (not a signed-in session).
pub async fn principal_for(app: &App, user: User, now: DateTime<Utc>) -> Result<Principal> {
    let roles = users_db::roles_of(&app.db, user.id, now).await?;
    Ok(Principal {
        user_id: user.id,
        username: user.username,
        display_name: user.display_name,
        department: user.department,
        email: user.email,
        roles,
        session_id: String::new(),
        token: None,
        permitted_by: Vec::new(),
        scope: crate::db::users::SessionScope::Full,
    })
}

/// The principal of an active person, read inside `tx` (the deed that relies on it); `None` for
/// a disabled, unknown or machine account.
pub async fn principal_in(
    tx: &mut crate::db::Tx,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Principal>> {
    let user = match users_db::get_tx(tx, user_id).await {
        Ok(u) if u.active && u.kind != crate::db::users::AccountKind::Service => u,
        Ok(_) | Err(crate::db::StoreError::NotFound) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let roles = users_db::roles_of_tx(tx, user.id, now).await?;
    Ok(Some(Principal {
        user_id: user.id,
        username: user.username,
        display_name: user.display_name,
        department: user.department,
        email: user.email,
        roles,
        session_id: String::new(),
        token: None,
        permitted_by: Vec::new(),
        scope: crate::db::users::SessionScope::Full,
    }))
}

/// The principal of an active user; `None` for a disabled or unknown one.
pub async fn active_principal(
    app: &App,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<Option<Principal>> {
    match users_db::get(&app.db, user_id).await {
        Ok(u) if u.active => Ok(Some(principal_for(app, u, now).await?)),
        Ok(_) | Err(crate::db::StoreError::NotFound) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a user may do on the service now: their roles in force and the permissions these give
/// (none while the user is disabled).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserPermissions {
    pub user_id: i64,
    pub username: String,
    pub active: bool,
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
}

pub async fn permissions_of(app: &App, user_id: i64) -> Result<UserPermissions> {
    let user = users_db::get(&app.db, user_id).await.map_err(not_found)?;
    let active = user.active;
    let who = principal_for(app, user, app.now()).await?;
    let permissions = if active {
        app.policies.authorizer.permissions(&who)
    } else {
        Vec::new()
    };
    Ok(UserPermissions {
        user_id: who.user_id,
        username: who.username,
        active,
        roles: who.roles,
        permissions,
    })
}

/// A holder of a permission and the role that gives it to them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HolderView {
    pub user_id: i64,
    pub username: String,
    pub display_name: String,
    pub department: String,
    pub role: String,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn holders(app: &App, permission: &str) -> Result<Vec<HolderView>> {
    if !app.policies.authorizer.is_action(permission) {
        return Err(Error::NotFound { what: "permission" });
    }
    let roles = app.policies.authorizer.roles_with(permission);
    let rows = users_db::holders(&app.db, &roles, app.now()).await?;
    Ok(rows
        .into_iter()
        .map(|h| HolderView {
            user_id: h.id,
            username: h.username,
            display_name: h.display_name,
            department: h.department,
            role: h.role,
            expires_at: h.expires_at,
        })
        .collect())
}

/// Creates user `admin` with the `admin` role on the first start with no users.
/// Returns the generated password when none was configured (to be printed once).
pub async fn bootstrap_admin(
    app: &App,
    configured: Option<&SecretString>,
) -> Result<Option<String>> {
    if users_db::count(&app.db).await? > 0 {
        return Ok(None);
    }
    let (password, generated) = match configured {
        Some(pw) => (pw.clone(), None),
        None => {
            use rand::Rng;
            let pw: String = rand::rng()
                .sample_iter(&rand::distr::Alphanumeric)
                .take(20)
                .map(char::from)
                .collect();
            (SecretString::from(pw.clone()), Some(pw))
        }
    };
    let created = create_user(
        app,
        None,
        CreateUser {
            username: "admin".into(),
            display_name: "系统管理员".into(),
            department: "科技部".into(),
            email: "admin@localhost.localdomain".into(),
            password,
        },
    )
    .await;
    let user = match created {
        Ok(user) => user,
        // Another instance starting at the same moment created it first.
        Err(Error::Conflict {
            code: "username_taken",
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    grant_role_unattended(app, user.id, "admin").await?;
    Ok(generated)
}

/// Grants a role from the server's console (the CLI, the first start): no principal, audited
/// as such.
pub async fn grant_role_unattended(app: &App, user_id: i64, role: &str) -> Result<Grant> {
    if app.policies.roles.get(role).is_none() {
        return Err(Error::invalid(
            "unknown_role",
            format!("没有角色 {role} / No such role: {role}"),
        ));
    }
    let grantee = users_db::get(&app.db, user_id).await.map_err(not_found)?;
    check_role_fits(app, &grantee, role)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    // The console skips the second person, never the incompatible duties.
    let held = users_db::roles_of_tx(&mut tx, user_id, now).await?;
    if let Some(other) = app.policies.roles.conflict(&held, role) {
        return Err(Error::Forbidden {
            code: "incompatible_roles",
            message: format!(
                "该用户已持有与 {role} 不相容的角色 {other} / The user holds {other}, which is incompatible with {role}"
            ),
            policy_ids: vec!["sod.incompatible_roles".into()],
        });
    }
    let grant = users_db::upsert_grant(&mut tx, user_id, role, None, now, None).await?;
    let sessions_ended =
        end_sessions_without_factor(app, &mut tx, user_id, role, &held, now).await?;
    let entry = Entry::ok(None, "role.grant", format!("user:{user_id}"))
        .with_reason("granted from the server console")
        .with_details(json!({"role": role, "sessions_ended": sessions_ended}));
    tx.commit(&entry, now).await?;
    Ok(grant)
}

/// People who hold two roles `policies/roles.toml` names incompatible (granted before the rule,
/// or by hand in the database): reported at start-up, for an admin to resolve.
pub async fn incompatible_holdings(app: &App) -> Result<Vec<(String, String, String)>> {
    let now = app.now();
    let mut found = Vec::new();
    for user in users_db::list(&app.db).await? {
        let roles = users_db::roles_of(&app.db, user.id, now).await?;
        for (i, a) in roles.iter().enumerate() {
            for b in &roles[i + 1..] {
                if app.policies.roles.incompatible(a, b) {
                    found.push((user.username.clone(), a.clone(), b.clone()));
                }
            }
        }
    }
    Ok(found)
}
