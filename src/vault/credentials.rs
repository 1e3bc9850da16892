//! Credentials: create, list, read and rotate (never the secret).

use super::*;

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
    /// A password's account on a database target of the same system: changeguard then rotates
    /// it itself (`{"generate": true}`, and after every use for a change).
    pub target: Option<CredentialTarget>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialTarget {
    /// A database target of the credential's system.
    pub database_id: i64,
    /// The account's name on the target (letters, digits, `_`).
    pub account: String,
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

pub(super) fn view(c: Credential, now: DateTime<Utc>) -> CredentialView {
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
    if let Some(t) = &req.target {
        super::machine::check_target(&mut tx, &req.system, &req.kind, t).await?;
    }
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
            target: req
                .target
                .as_ref()
                .map(|t| (t.database_id, t.account.as_str())),
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
    .with_details(json!({"name": req.name.trim(), "system": req.system, "account": req.account.trim(), "kind": req.kind,
                         "target": req.target.as_ref().map(|t| json!({"database_id": t.database_id, "account": t.account}))}));
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
    #[schema(value_type = Option<String>, format = Password)]
    pub secret: Option<SecretString>,
    /// `true`: changeguard makes a random password and sets it on the credential's database
    /// target itself (instead of `secret`).
    pub generate: Option<bool>,
}

/// Whether `who` may rotate `c`: as a manager of credentials (the decision), or as the assignee
/// of the change it was last revealed for (the flag).
async fn rotator(app: &App, who: &Principal, c: &Credential) -> Result<(Decision, bool)> {
    let manager =
        app.policies
            .authorizer
            .decide(who, "credential.manage", &Resource::Api, &Facts::default());
    let assignee = match c.rotate_reason_change_id {
        Some(change) => db::window(&app.db, change, &c.system)
            .await?
            .is_some_and(|w| w.assignee_id == who.user_id),
        None => false,
    };
    Ok((manager, assignee))
}

/// Whether `who` may rotate `c` now (what [`rotate`] checks first).
pub async fn may_rotate(app: &App, who: &Principal, c: &Credential) -> Result<bool> {
    let (manager, assignee) = rotator(app, who, c).await?;
    Ok(manager.allowed || assignee)
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
    let secret = match (req.secret, req.generate) {
        (Some(secret), None | Some(false)) => {
            check_secret(&secret)?;
            Some(secret)
        }
        (None, Some(true)) => None,
        _ => {
            return Err(Error::invalid(
                "invalid_field",
                "须给出 secret 或 \"generate\": true 之一 / Give either secret or \"generate\": true",
            ));
        }
    };
    // Who may rotate is decided before the write transaction: nothing may wait on the pool
    // while a transaction holds the (SQLite) write lock.
    let known = db::get_credential(&app.db, id).await.map_err(not_found)?;
    let (manager, assignee) = rotator(app, who, &known).await?;
    if !manager.allowed && !assignee {
        return Err(Error::Forbidden {
            code: "not_rotator",
            message: "只有管理员或使用该凭据的变更实施人可以轮换 / Only an admin or the assignee of the change it was revealed for may rotate this credential".into(),
            policy_ids: manager.policy_ids,
        });
    }
    let Some(secret) = secret else {
        let by = super::machine::By::Person {
            who,
            as_assignee: !manager.allowed,
            policy_ids: &manager.policy_ids,
        };
        super::machine::rotate(app, id, by, now).await?;
        return get(app, id).await;
    };
    let mut tx = Deed::open(app).await?;
    let c = db::get_credential_tx(&mut tx, id)
        .await
        .map_err(not_found)?;
    if c.target_database_id.is_some() && db::pending_of(&mut tx, id).await?.is_some() {
        return Err(super::machine::rotation_pending());
    }
    let key = app.vault.sealing_key(&mut tx).await?;
    let version = c.version + 1;
    let sealed = app.vault.seal(
        &key,
        binding(id, version),
        secret.expose_secret().as_bytes(),
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
