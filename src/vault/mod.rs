//! The credential vault (Art. 19): server and database passwords, platform keys, encrypted at
//! rest, handed out only to the right person, for the right change, at the right time, with a
//! fresh second factor, and recorded.
//!
//! Every reveal attempt, allowed or refused, writes its audit entry in the transaction that
//! decides it; the secret leaves only after that transaction committed.

pub mod crypto;
pub mod factor;
pub mod keyring;
pub mod rotate;
pub mod totp;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::App;
use crate::audit::{Entry, Outcome};
use crate::db::vault::{self as db, Credential, CredentialGrant, NewCredential, WindowRow};
use crate::db::{StoreError, users as users_db};
use crate::deed::{Bookkeeping, Deed};
use crate::error::{Error, Result};
use crate::notify::{self, Bulletin, Parties};
use crate::rbac::{CredentialFacts, Decision, Facts, Principal, Resource, WindowFacts};
use crate::text::{self, Lines};
use crypto::Binding;
pub use keyring::Keyring;

const KINDS: [&str; 3] = ["password", "key", "token"];
const MAX_SECRET: usize = 16 * 1024;

fn binding(id: i64, version: i64) -> Binding<'static> {
    Binding {
        kind: "credential",
        id,
        version,
    }
}

fn not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound { what: "credential" },
        other => other.into(),
    }
}

fn check_secret(secret: &SecretString) -> Result<()> {
    let s = secret.expose_secret();
    if s.is_empty() || s.len() > MAX_SECRET {
        return Err(Error::invalid(
            "invalid_secret",
            format!(
                "secret 不能为空且不超过 {MAX_SECRET} 字节 / secret must be 1 to {MAX_SECRET} bytes"
            ),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- credentials

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCredential {
    pub name: String,
    /// Key of the systems register.
    pub system: String,
    pub account: String,
    /// `password`, `key` or `token`.
    pub kind: String,
    #[schema(value_type = String, format = Password)]
    pub secret: SecretString,
    /// Rotate at least every so many days.
    pub rotation_days: Option<i64>,
    /// Owning department; default: the system's owner department.
    pub department: Option<String>,
}

/// Metadata, the last reveal and the rotation state: never the secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialView {
    #[serde(flatten)]
    pub credential: Credential,
    /// When the secret should be rotated by its interval, if it has one.
    pub rotation_due_at: Option<DateTime<Utc>>,
    /// Rotation is due (interval passed, or "rotate after use").
    pub rotation_due: bool,
}

fn view(c: Credential, now: DateTime<Utc>) -> CredentialView {
    let due_at = c
        .rotation_days
        .map(|d| c.secret_changed_at + TimeDelta::days(d));
    let rotation_due = c.rotate_after_use || due_at.is_some_and(|t| t <= now);
    CredentialView {
        credential: c,
        rotation_due_at: due_at,
        rotation_due,
    }
}

pub async fn create(app: &App, who: &Principal, req: CreateCredential) -> Result<CredentialView> {
    let now = app.now();
    text::required("name", &req.name, 200, Lines::One)?;
    text::required("account", &req.account, 200, Lines::One)?;
    if !KINDS.contains(&req.kind.as_str()) {
        return Err(Error::invalid(
            "invalid_kind",
            "kind 须为 password、key 或 token / kind must be password, key or token",
        ));
    }
    if req.rotation_days.is_some_and(|d| !(1..=3650).contains(&d)) {
        return Err(Error::invalid(
            "invalid_field",
            "rotation_days 须在 1 到 3650 之间 / rotation_days must be 1 to 3650",
        ));
    }
    check_secret(&req.secret)?;
    let system = crate::db::changes::list_systems(&app.db)
        .await?
        .into_iter()
        .find(|s| s.key == req.system)
        .ok_or_else(|| {
            Error::invalid(
                "unknown_system",
                format!(
                    "系统登记中没有 {} / No system {} in the register",
                    req.system, req.system
                ),
            )
        })?;
    let department = req.department.clone().unwrap_or(system.owner_department);
    text::required("department", &department, 100, Lines::One)?;
    let mut tx = Deed::open(app).await?;
    let key = app.vault.sealing_key(&mut tx).await?;
    let id = db::insert_credential(
        &mut tx,
        &NewCredential {
            name: req.name.trim(),
            system: &req.system,
            account: req.account.trim(),
            kind: &req.kind,
            department: &department,
            rotation_days: req.rotation_days,
            created_by: who.user_id,
        },
        &key.id,
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "credential_exists",
            "同名凭据已存在 / A credential with this name already exists",
        ),
        other => other.into(),
    })?;
    let sealed = app
        .vault
        .seal(&key, binding(id, 1), req.secret.expose_secret().as_bytes())?;
    db::store_secret(&mut tx, id, 1, &sealed, now).await?;
    let entry = Entry::by(
        who,
        "credential.create",
        format!("credential:{id}"),
    )
    .with_details(json!({"name": req.name.trim(), "system": req.system, "account": req.account.trim(), "kind": req.kind}));
    tx.commit(&entry, now).await?;
    get(app, id).await
}

pub async fn list(app: &App) -> Result<Vec<CredentialView>> {
    let now = app.now();
    Ok(db::list_credentials(&app.db)
        .await?
        .into_iter()
        .map(|c| view(c, now))
        .collect())
}

pub async fn get(app: &App, id: i64) -> Result<CredentialView> {
    let c = db::get_credential(&app.db, id).await.map_err(not_found)?;
    Ok(view(c, app.now()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateCredential {
    /// The new secret, already set on the target system.
    #[schema(value_type = String, format = Password)]
    pub secret: SecretString,
}

/// Stores a new secret (a new version with a new data key); clears "rotate after use".
/// Admins (credential.manage) rotate any credential; the assignee of the change a secret was
/// revealed for rotates that one.
pub async fn rotate(
    app: &App,
    who: &Principal,
    id: i64,
    req: RotateCredential,
) -> Result<CredentialView> {
    let now = app.now();
    check_secret(&req.secret)?;
    // Who may rotate is decided before the write transaction: nothing may wait on the pool
    // while a transaction holds the (SQLite) write lock.
    let known = db::get_credential(&app.db, id).await.map_err(not_found)?;
    let manager =
        app.policies
            .authorizer
            .decide(who, "credential.manage", &Resource::Api, &Facts::default());
    let assignee = match known.rotate_reason_change_id {
        Some(change) => db::window(&app.db, change, &known.system)
            .await?
            .is_some_and(|w| w.assignee_id == who.user_id),
        None => false,
    };
    if !manager.allowed && !assignee {
        return Err(Error::Forbidden {
            code: "not_rotator",
            message: "只有管理员或使用该凭据的变更实施人可以轮换 / Only an admin or the assignee of the change it was revealed for may rotate this credential".into(),
            policy_ids: manager.policy_ids,
        });
    }
    let mut tx = Deed::open(app).await?;
    let c = db::get_credential_tx(&mut tx, id)
        .await
        .map_err(not_found)?;
    let key = app.vault.sealing_key(&mut tx).await?;
    let version = c.version + 1;
    let sealed = app.vault.seal(
        &key,
        binding(id, version),
        req.secret.expose_secret().as_bytes(),
    )?;
    db::store_secret(&mut tx, id, version, &sealed, now).await?;
    // As a manager: the policies that let them manage credentials; as the assignee (not a
    // manager): the route's own, and the details say why.
    let mut entry = Entry::by(who, "credential.rotate", format!("credential:{id}"))
        .with_details(json!({"version": version, "after_use": c.rotate_after_use,
                             "as_assignee": !manager.allowed}));
    if manager.allowed {
        entry = entry.with_policies(&manager.policy_ids);
    }
    tx.commit(&entry, now).await?;
    get(app, id).await
}

// ---------------------------------------------------------------- reveal

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevealRequest {
    /// Why the secret is needed (recorded in the audit trail).
    pub reason: String,
    /// The change it is needed for; default: the caller's change in progress on its system.
    pub change_id: Option<i64>,
    /// A fresh TOTP code (or an unused recovery code).
    pub totp: Option<String>,
}

/// The secret, once; the response is `Cache-Control: no-store`.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Revealed {
    #[schema(value_type = String)]
    #[serde(serialize_with = "expose")]
    pub secret: SecretString,
    pub credential_id: i64,
    pub version: i64,
    pub account: String,
    /// The change it was revealed for (then "rotate after use" is set).
    pub change_id: Option<i64>,
    /// The standing grant that allowed it, when not a change.
    pub via_standing_grant: bool,
    pub rotate_after_use: bool,
    /// Audit sequence number of this reveal.
    pub audit_seq: i64,
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn refuse(code: &'static str, message: &str, policy_ids: Vec<String>) -> Error {
    Error::Forbidden {
        code,
        message: message.to_string(),
        policy_ids,
    }
}

/// The facts the reveal policy looks at, for one user and one credential, now.
pub struct RevealFacts {
    pub window: Option<WindowRow>,
    /// Now is before the window's planned end (plus the grace).
    pub within_window: bool,
    pub standing_grant: bool,
}

impl RevealFacts {
    fn facts(&self) -> Facts {
        Facts {
            change: self.window.as_ref().map(|w| WindowFacts {
                assignee: w.assignee_id,
                in_progress: w.status == "in_progress",
                within_window: self.within_window,
                touches_system: w.touches,
            }),
            standing_grant: self.standing_grant,
            ..Facts::default()
        }
    }
}

pub async fn reveal_facts(
    app: &App,
    user_id: i64,
    c: &Credential,
    change_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<RevealFacts> {
    let window = match change_id {
        Some(id) => db::window(&app.db, id, &c.system).await?,
        None => db::windows_for(&app.db, &c.system, user_id)
            .await?
            .into_iter()
            .next(),
    };
    let standing_grant = db::has_active_grant(&app.db, c.id, user_id, now).await?;
    let grace = TimeDelta::minutes(app.policies.security.reveal_grace_minutes.max(0));
    let within_window = window.as_ref().is_some_and(|w| now < w.planned_end + grace);
    Ok(RevealFacts {
        window,
        within_window,
        standing_grant,
    })
}

/// The policy's decision for `who` revealing `c`.
pub fn decide(app: &App, who: &Principal, c: &Credential, f: &RevealFacts) -> Decision {
    app.policies.authorizer.decide(
        who,
        "credential.reveal",
        &Resource::Credential(CredentialFacts {
            id: c.id,
            system: &c.system,
            department: &c.department,
        }),
        &f.facts(),
    )
}

/// Why a reveal was refused, in the reveal rule's words.
fn refusal(who: &Principal, f: &RevealFacts, d: Decision, asked_change: Option<i64>) -> Error {
    let ids = d.policy_ids;
    match &f.window {
        None if asked_change.is_some() => refuse(
            "no_change_window",
            "指定的变更不存在 / The given change does not exist",
            ids,
        ),
        None => refuse(
            "no_change_window",
            "该凭据所属系统没有进行中的变更 / No change touching this credential's system is in progress",
            ids,
        ),
        Some(w) if !w.touches => refuse(
            "change_not_for_system",
            "该变更不涉及此凭据所属的系统 / The change does not touch this credential's system",
            ids,
        ),
        Some(w) if w.status != "in_progress" => refuse(
            "change_not_in_progress",
            &format!(
                "变更 {} 不在实施中（状态 {}） / Change {} is not in progress (status {})",
                w.id, w.status, w.id, w.status
            ),
            ids,
        ),
        Some(w) if !f.within_window => refuse(
            "change_overdue",
            &format!(
                "变更 {} 已超过计划结束时间，须先完成或改期后才能取用凭据 / Change {} is past its planned end: complete or reschedule it before revealing",
                w.id, w.id
            ),
            ids,
        ),
        Some(w) if w.assignee_id != who.user_id => refuse(
            "not_assignee",
            "只有变更的实施人可以取用凭据 / Only the change's assignee may reveal its credentials",
            ids,
        ),
        Some(_) => Error::forbidden(ids),
    }
}

/// A credential's account and secret for the server's own use (just-in-time database
/// accounts are made with it): never handed to a person, so no reveal entry; the deed that
/// uses it is audited.
pub(crate) async fn server_secret(
    app: &App,
    tx: &mut crate::db::Tx,
    id: i64,
) -> Result<(String, SecretString)> {
    let c = db::get_credential(&app.db, id).await.map_err(not_found)?;
    let (version, sealed) = db::sealed_secret(tx, id).await?;
    let secret = app
        .vault
        .open(tx, binding(id, version), &sealed)
        .await
        .map_err(keyring::crypto_error)?;
    Ok((c.account, secret))
}

pub async fn reveal(app: &App, who: &Principal, id: i64, req: RevealRequest) -> Result<Revealed> {
    let now = app.now();
    let c = db::get_credential(&app.db, id).await.map_err(not_found)?;
    text::required("reason", &req.reason, 500, Lines::Many)?;
    let facts = reveal_facts(app, who.user_id, &c, req.change_id, now).await?;
    let decision = decide(app, who, &c, &facts);
    let via_change = facts
        .window
        .as_ref()
        .filter(|w| w.assignee_id == who.user_id && w.status == "in_progress" && w.touches)
        .map(|w| w.id);
    let mut entry = Entry::by(who, "credential.reveal", format!("credential:{id}"))
        .with_reason(req.reason.trim())
        .with_policies(&decision.policy_ids)
        .with_details(json!({
            "name": c.name, "system": c.system, "account": c.account,
            "change_id": req.change_id.or(facts.window.as_ref().map(|w| w.id)),
            "standing_grant": facts.standing_grant,
        }));

    let mut tx = Deed::open(app).await?;
    let refused = if decision.allowed {
        factor::check(app, &mut tx, who.user_id, req.totp.as_deref(), false, now)
            .await?
            .err()
    } else {
        Some(refusal(who, &facts, decision, req.change_id))
    };
    if let Some(error) = refused {
        entry.outcome = Outcome::Refused;
        entry.code = Some(error.code().to_string());
        tx.commit(&entry, now).await?;
        return Err(error.audited());
    }
    // Decrypt inside the transaction, hand out only after it committed with the audit entry.
    let (version, sealed) = db::sealed_secret(&mut tx, id).await?;
    entry.details["version"] = json!(version);
    let secret = match app.vault.open(&mut tx, binding(id, version), &sealed).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(credential = id, version, error = %e, "a stored credential does not decrypt");
            let error = keyring::crypto_error(e);
            entry.outcome = Outcome::Refused;
            entry.code = Some(error.code().to_string());
            tx.commit(&entry, now).await?;
            return Err(error.audited());
        }
    };
    db::mark_revealed(&mut tx, id, who.user_id, via_change, now).await?;
    let recorded = tx.record_first(&entry, now).await?;
    let revealer = Parties {
        assignee: Some(who.user_id),
        ..Parties::default()
    };
    let notice = credential_facts(
        app,
        Bulletin::new(
            app,
            &format!("凭据已取用：{}", c.name),
            &format!("Credential revealed: {}", c.name),
        ),
        &c,
    )
    .fact(app, "取用人", "Revealed by", crate::assets::person(who))
    .fact(
        app,
        "依据",
        "Under",
        match via_change {
            Some(change) => format!(
                "{} #{change}",
                app.notifier.templates.pick("变更", "change")
            ),
            None => app
                .notifier
                .templates
                .pick("长期授权", "standing grant")
                .to_string(),
        },
    )
    .fact(app, "事由", "Reason", req.reason.trim())
    .fact(app, "审计序号", "Audit entry", recorded.seq());
    notify::enqueue_bulletin(app, &mut tx, "credential_revealed", revealer, &notice, now).await?;
    if via_change.is_some() {
        let reminder = rotation_notice(app, &c);
        notify::enqueue_bulletin(app, &mut tx, "rotation_reminder", revealer, &reminder, now)
            .await?;
    }
    let seq = recorded.seq();
    tx.commit_recorded(recorded).await?;
    Ok(Revealed {
        secret,
        credential_id: id,
        version,
        account: c.account,
        change_id: via_change,
        via_standing_grant: via_change.is_none(),
        rotate_after_use: via_change.is_some() || c.rotate_after_use,
        audit_seq: seq,
    })
}

// ---------------------------------------------------------------- standing grants

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGrant {
    /// Username of the grantee (must hold credential.reveal).
    pub grantee: String,
    /// Mandatory: why standing access is needed.
    pub reason: String,
    /// At most 90 days ahead.
    pub expires_at: DateTime<Utc>,
}

pub async fn create_grant(
    app: &App,
    who: &Principal,
    credential_id: i64,
    req: CreateGrant,
) -> Result<CredentialGrant> {
    let now = app.now();
    db::get_credential(&app.db, credential_id)
        .await
        .map_err(not_found)?;
    text::required("reason", &req.reason, 500, Lines::Many)?;
    if req.expires_at <= now || req.expires_at > now + TimeDelta::days(90) {
        return Err(Error::invalid(
            "invalid_expiry",
            "有效期须在将来且不超过 90 天 / expires_at must be in the future and at most 90 days ahead",
        ));
    }
    let grantee = crate::accounts::active_user(app, &req.grantee)
        .await?
        .ok_or_else(|| Error::invalid("unknown_user", "没有该用户 / No such active user"))?;
    if grantee.id == who.user_id {
        return Err(refuse(
            "self_grant",
            "不能给自己授予凭据访问 / Nobody may grant themselves access to a credential",
            vec![],
        ));
    }
    let mut tx = Deed::open(app).await?;
    // The credential row first, then the grant that references it: the other way round, the
    // grant's foreign key takes a share lock that two concurrent grants could not upgrade.
    let c = db::get_credential_tx(&mut tx, credential_id).await?;
    let g = db::insert_grant(
        &mut tx,
        credential_id,
        grantee.id,
        req.reason.trim(),
        req.expires_at,
        who.user_id,
        now,
    )
    .await?;
    let entry = Entry::by(
        who,
        "credential.grant",
        format!("credential:{credential_id}"),
    )
    .with_reason(req.reason.trim())
    .with_details(
        json!({"grant_id": g.id, "grantee": grantee.username, "expires_at": req.expires_at}),
    );
    let notice = grant_notice(
        app,
        &c,
        &g,
        &grantee.username,
        "凭据长期授权待批准",
        "Standing access to a credential waits for approval",
    )
    .fact(app, "授权人", "Granted by", crate::assets::person(who));
    let parties = Parties {
        requester: Some(who.user_id),
        assignee: Some(grantee.id),
        ..Parties::default()
    };
    notify::commit_with_bulletin(app, tx, ("grant_requested", parties, &notice), &entry, now)
        .await?;
    Ok(g)
}

/// A second person, neither the grantee nor the granter, approves a standing grant.
pub async fn approve_grant(app: &App, who: &Principal, grant_id: i64) -> Result<CredentialGrant> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let g = db::get_grant_tx(&mut tx, grant_id)
        .await
        .map_err(grant_not_found)?;
    if g.grantee_id == who.user_id || g.granted_by == who.user_id {
        return Err(refuse(
            "self_approval",
            "授权须由授予人和被授权人以外的第二人批准 / A second person, neither the granter nor the grantee, must approve",
            vec![],
        ));
    }
    if g.approved_by.is_some() {
        return Err(Error::conflict(
            "already_approved",
            "已批准 / Already approved",
        ));
    }
    if g.expires_at <= now || g.revoked_at.is_some() {
        return Err(Error::conflict(
            "grant_expired",
            "授权已失效 / The grant has expired",
        ));
    }
    let g = db::approve_grant(&mut tx, grant_id, who.user_id, now).await?;
    let entry = Entry::by(
        who,
        "credential.grant_approve",
        format!("credential:{}", g.credential_id),
    )
    .with_details(json!({"grant_id": g.id, "grantee_id": g.grantee_id}));
    commit_grant_decided(app, tx, who, &g, None, &entry, now).await?;
    Ok(g)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeGrant {
    /// Mandatory: why the access ends early.
    pub reason: String,
}

/// Ends a standing grant before its expiry (approved or not). Revoking only takes access away,
/// so any holder of `credential.grant` may do it, the granter included; the next reveal under
/// it is refused.
pub async fn revoke_grant(
    app: &App,
    who: &Principal,
    grant_id: i64,
    req: RevokeGrant,
) -> Result<CredentialGrant> {
    text::required("reason", &req.reason, 500, Lines::Many)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let g = db::get_grant_tx(&mut tx, grant_id)
        .await
        .map_err(grant_not_found)?;
    if g.revoked_at.is_some() {
        return Err(Error::conflict(
            "already_revoked",
            "授权已撤销 / The grant is already revoked",
        ));
    }
    if g.expires_at <= now {
        return Err(Error::conflict(
            "grant_expired",
            "授权已失效 / The grant has expired",
        ));
    }
    let g = db::revoke_grant(&mut tx, grant_id, now).await?;
    let entry = Entry::by(
        who,
        "credential.grant_revoke",
        format!("credential:{}", g.credential_id),
    )
    .with_reason(req.reason.trim())
    .with_details(json!({"grant_id": g.id, "grantee_id": g.grantee_id}));
    commit_grant_decided(app, tx, who, &g, Some(req.reason.trim()), &entry, now).await?;
    Ok(g)
}

fn grant_not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound { what: "grant" },
        o => o.into(),
    }
}

/// Ends an approval or revocation: the `grant_decided` notice (to the granter and grantee, with
/// the reason of a revocation), the audit entry, the commit.
async fn commit_grant_decided(
    app: &App,
    mut tx: Deed<'_>,
    who: &Principal,
    g: &CredentialGrant,
    revoked: Option<&str>,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<()> {
    let c = db::get_credential_tx(&mut tx, g.credential_id).await?;
    let grantee = users_db::get_tx(&mut tx, g.grantee_id).await?.username;
    let (zh, en) = if revoked.is_some() {
        (
            "凭据长期授权已撤销",
            "Standing access to a credential revoked",
        )
    } else {
        (
            "凭据长期授权已批准",
            "Standing access to a credential approved",
        )
    };
    let notice = grant_notice(app, &c, g, &grantee, zh, en)
        .fact(
            app,
            if revoked.is_some() {
                "撤销人"
            } else {
                "批准人"
            },
            if revoked.is_some() {
                "Revoked by"
            } else {
                "Approved by"
            },
            crate::assets::person(who),
        )
        .comment(revoked);
    let parties = Parties {
        requester: Some(g.granted_by),
        assignee: Some(g.grantee_id),
        ..Parties::default()
    };
    notify::commit_with_bulletin(app, tx, ("grant_decided", parties, &notice), entry, now).await
}

/// The facts of every notice about one credential.
fn credential_facts(app: &App, b: Bulletin, c: &Credential) -> Bulletin {
    b.fact(app, "凭据", "Credential", format!("{} (#{})", c.name, c.id))
        .fact(app, "系统", "System", &c.system)
        .fact(app, "账号", "Account", &c.account)
        .link(app, &format!("/api/v1/credentials/{}", c.id))
}

fn grant_notice(
    app: &App,
    c: &Credential,
    g: &CredentialGrant,
    grantee: &str,
    zh: &str,
    en: &str,
) -> Bulletin {
    let tz = app.policies.change.timezone;
    credential_facts(
        app,
        Bulletin::new(
            app,
            &format!("{zh}：{}", c.name),
            &format!("{en}: {}", c.name),
        ),
        c,
    )
    .fact(app, "被授权人", "Grantee", grantee)
    .fact(
        app,
        "有效期至",
        "Expires",
        g.expires_at.with_timezone(&tz).format("%Y-%m-%d %H:%M"),
    )
    .fact(app, "授权事由", "Reason", &g.reason)
    .fact(app, "授权编号", "Grant", g.id)
}

/// "Rotate after use": the reminder to whoever revealed a secret for a change.
fn rotation_notice(app: &App, c: &Credential) -> Bulletin {
    credential_facts(
        app,
        Bulletin::new(
            app,
            &format!("请轮换已取用的凭据：{}", c.name),
            &format!("Rotate the credential you revealed: {}", c.name),
        ),
        c,
    )
    .comment(Some(&match app.notifier.templates.language.as_str() {
        "en" => format!(
            "It was revealed for a change: store the new secret with POST /api/v1/credentials/{}/rotate once the change is done. You are reminded every working day until then.",
            c.id
        ),
        _ => format!(
            "该凭据已为变更取用，请在变更结束后通过 POST /api/v1/credentials/{}/rotate 存入新密码；轮换前每个工作日提醒。",
            c.id
        ),
    }))
}

/// The scheduled "rotate after use" reminders: one notice per credential still flagged, to the
/// assignee of the change it was revealed for. Returns how many were queued.
pub async fn remind_rotation(app: &App, now: DateTime<Utc>) -> Result<usize> {
    let mut n = 0;
    for (c, assignee) in db::rotation_due(&app.db).await? {
        let mut tx = Deed::open(app).await?;
        let parties = Parties {
            assignee: Some(assignee),
            ..Parties::default()
        };
        if notify::enqueue_bulletin(
            app,
            &mut tx,
            "rotation_reminder",
            parties,
            &rotation_notice(app, &c),
            now,
        )
        .await?
        {
            n += 1;
        }
        tx.commit_bookkeeping(Bookkeeping::ScheduledNotice).await?;
    }
    Ok(n)
}

pub async fn grants(app: &App, credential_id: i64) -> Result<Vec<CredentialGrant>> {
    db::get_credential(&app.db, credential_id)
        .await
        .map_err(not_found)?;
    Ok(db::grants_of_credential(&app.db, credential_id).await?)
}

// ---------------------------------------------------------------- reports

/// One person who may reveal a credential now, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevealAccess {
    pub user_id: i64,
    pub username: String,
    pub credential_id: i64,
    pub credential: String,
    /// The change in progress that allows it, or null for a standing grant.
    pub change_id: Option<i64>,
    pub standing_grant: bool,
    /// Whether they can give the second factor the reveal also needs.
    pub totp_enrolled: bool,
    pub policy_ids: Vec<String>,
}

async fn access(
    app: &App,
    p: &Principal,
    c: &Credential,
    now: DateTime<Utc>,
) -> Result<Option<RevealAccess>> {
    let f = reveal_facts(app, p.user_id, c, None, now).await?;
    let d = decide(app, p, c, &f);
    if !d.allowed {
        return Ok(None);
    }
    let via_change = f
        .window
        .as_ref()
        .filter(|w| w.assignee_id == p.user_id && w.status == "in_progress")
        .map(|w| w.id);
    Ok(Some(RevealAccess {
        user_id: p.user_id,
        username: p.username.clone(),
        credential_id: c.id,
        credential: c.name.clone(),
        change_id: via_change,
        standing_grant: f.standing_grant,
        totp_enrolled: db::has_confirmed_totp(&app.db, p.user_id).await?,
        policy_ids: d.policy_ids,
    }))
}

/// Who can reveal this credential now, decided by the same policies as a reveal.
pub async fn revealers(app: &App, credential_id: i64) -> Result<Vec<RevealAccess>> {
    let now = app.now();
    let c = db::get_credential(&app.db, credential_id)
        .await
        .map_err(not_found)?;
    let roles = app.policies.authorizer.roles_with("credential.reveal");
    let mut ids: Vec<i64> = users_db::holders(&app.db, &roles, now)
        .await?
        .into_iter()
        .map(|h| h.id)
        .collect();
    ids.extend(
        db::grants_of_credential(&app.db, credential_id)
            .await?
            .into_iter()
            .map(|g| g.grantee_id),
    );
    ids.sort_unstable();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        if let Some(p) = crate::accounts::active_principal(app, id, now).await?
            && let Some(a) = access(app, &p, &c, now).await?
        {
            out.push(a);
        }
    }
    Ok(out)
}

/// Which credentials this user can reveal now.
pub async fn revealable_by(app: &App, user_id: i64) -> Result<Vec<RevealAccess>> {
    let now = app.now();
    let Some(p) = crate::accounts::active_principal(app, user_id, now).await? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in db::list_credentials(&app.db).await? {
        if let Some(a) = access(app, &p, &c, now).await? {
            out.push(a);
        }
    }
    Ok(out)
}

pub async fn access_log(app: &App, credential_id: i64) -> Result<Vec<crate::audit::Record>> {
    db::get_credential(&app.db, credential_id)
        .await
        .map_err(not_found)?;
    Ok(db::access_log(&app.db, credential_id, 500).await?)
}

/// Credentials the user must rotate after using them for a change.
pub async fn reminders(app: &App, user_id: i64) -> Result<Vec<CredentialView>> {
    let now = app.now();
    Ok(db::rotation_reminders(&app.db, user_id)
        .await?
        .into_iter()
        .map(|c| view(c, now))
        .collect())
}

// ---------------------------------------------------------------- TOTP enrolment

#[derive(Serialize, utoipa::ToSchema)]
pub struct TotpEnrolment {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    pub otpauth_uri: String,
    /// The otpauth URI as a QR code (an SVG document) for the console to show.
    pub qr_svg: String,
}

/// Starts (or restarts) TOTP enrolment. Replacing a CONFIRMED second factor needs a current
/// code or recovery code (`current`): else a stolen password or session would be enough to
/// move the step-up to the thief's phone, and lock the owner out of it.
pub async fn enrol_totp(
    app: &App,
    who: &Principal,
    current: Option<&str>,
) -> Result<TotpEnrolment> {
    let now = app.now();
    let secret = Zeroizing::new(totp::new_secret());
    let mut tx = Deed::open(app).await?;
    let replacing = db::totp_for_update(&mut tx, who.user_id)
        .await?
        .is_some_and(|row| row.confirmed);
    if replacing
        && let Err(e) = factor::check(app, &mut tx, who.user_id, current, false, now).await?
    {
        // The counted failure sticks; the gate audits the refusal.
        tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
        return Err(e);
    }
    let key = app.vault.sealing_key(&mut tx).await?;
    let sealed = app.vault.seal(
        &key,
        factor::binding(who.user_id),
        totp::base32(&secret).as_bytes(),
    )?;
    if replacing {
        // The phone in use keeps working until the new one confirms a code.
        db::put_totp_pending(&mut tx, who.user_id, &sealed, now).await?;
    } else {
        db::put_totp(&mut tx, who.user_id, &sealed, now).await?;
    }
    let entry = Entry::by(who, "totp.enrol", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    let otpauth_uri = totp::otpauth_uri("changeguard", &who.username, &secret);
    Ok(TotpEnrolment {
        secret: totp::base32(&secret),
        qr_svg: totp::qr_svg(&otpauth_uri),
        otpauth_uri,
    })
}

pub async fn confirm_totp(app: &App, who: &Principal, code: &str) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    if let Err(e) = factor::check(app, &mut tx, who.user_id, Some(code), true, now).await? {
        // The counted failure sticks; the gate audits the refusal.
        tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
        return Err(e);
    }
    let entry = Entry::by(who, "totp.confirm", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    Ok(())
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RecoveryCodes {
    /// Shown once; each works once instead of a TOTP code. Only hashes are stored.
    pub codes: Vec<String>,
}

/// New recovery codes (replacing older ones); needs a fresh TOTP code.
pub async fn recovery_codes(app: &App, who: &Principal, code: &str) -> Result<RecoveryCodes> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    if let Err(e) = factor::check(app, &mut tx, who.user_id, Some(code), false, now).await? {
        tx.commit_bookkeeping(Bookkeeping::TotpStep).await?;
        return Err(e);
    }
    let codes: Vec<String> = (0..10).map(|_| factor::new_recovery_code()).collect();
    let hashes: Vec<String> = codes
        .iter()
        .map(|c| factor::hash_recovery_code(c))
        .collect();
    db::set_recovery_codes(&mut tx, who.user_id, &hashes).await?;
    let entry = Entry::by(who, "totp.recovery_codes", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    Ok(RecoveryCodes { codes })
}
