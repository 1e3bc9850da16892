//! Just-in-time database access (Art. 19): the assignee of a `database` change in progress
//! gets a temporary account on a database of the change's system, with exactly the grants of
//! the change's action, that is dropped (its sessions ended) when the change completes, is
//! cancelled, or its window ends. Revocation is retried every minute until it succeeds, on one
//! instance at a time (the scheduler's expiry job).

pub mod engine;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::audit::{Entry, Outcome};
use crate::db::StoreError;
use crate::db::dbaccess::{self as db, Account, NewTarget, Target};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::Principal;
use crate::text::{self, Lines};

/// The actions of the `database` category a target's grants are keyed by (and `read`, given
/// to every account).
pub const ACTIONS: &[&str] = &["insert", "update", "delete", "schema", "read"];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTarget {
    pub name: String,
    /// postgres | mysql (MariaDB)
    pub engine: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// A vault credential of an account that may create and drop accounts on the target.
    pub admin_credential_id: i64,
    /// Per action (insert, update, delete, schema, read): PostgreSQL roles to join, or MariaDB
    /// privileges on the database (SELECT, INSERT, UPDATE, DELETE, CREATE, ALTER, …).
    pub grants: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TargetView {
    #[serde(flatten)]
    pub target: Target,
    pub grants: BTreeMap<String, Vec<String>>,
}

fn view(t: Target) -> Result<TargetView> {
    let grants = serde_json::from_str(&t.grants).map_err(|_| {
        Error::Internal(anyhow::Error::new(crate::db::CorruptValue::new(
            "database_targets.grants",
            t.grants.clone(),
        )))
    })?;
    Ok(TargetView { target: t, grants })
}

fn check_grants(engine: &str, grants: &BTreeMap<String, Vec<String>>) -> Result<()> {
    for (action, list) in grants {
        if !ACTIONS.contains(&action.as_str()) {
            return Err(Error::invalid(
                "invalid_grants",
                format!(
                    "grants 的键须为 {} / grants are keyed by {}",
                    ACTIONS.join(", "),
                    ACTIONS.join(", ")
                ),
            ));
        }
        let ok = list.iter().all(|g| match engine {
            "postgres" => engine::grantable_pg_role(g),
            _ => engine::MYSQL_PRIVILEGES.contains(&g.as_str()),
        });
        if !ok || list.len() > 32 {
            return Err(Error::invalid(
                "invalid_grants",
                if engine == "postgres" {
                    "PostgreSQL 的授权须为角色名（字母、数字、下划线） / PostgreSQL grants are role names (letters, digits, _)".to_string()
                } else {
                    format!(
                        "MariaDB 的授权须为以下权限 / MariaDB grants must be among: {}",
                        engine::MYSQL_PRIVILEGES.join(", ")
                    )
                },
            ));
        }
    }
    Ok(())
}

pub async fn create_target(
    app: &App,
    who: &Principal,
    system: &str,
    req: CreateTarget,
) -> Result<TargetView> {
    text::required("name", &req.name, 64, Lines::One)?;
    text::required("host", &req.host, 253, Lines::One)?;
    if !matches!(req.engine.as_str(), "postgres" | "mysql") {
        return Err(Error::invalid(
            "invalid_engine",
            "engine 须为 postgres 或 mysql / engine must be postgres or mysql",
        ));
    }
    if !engine::valid_ident(&req.database) {
        return Err(Error::invalid(
            "invalid_database",
            "database 须为字母、数字、下划线 / database must be letters, digits or _",
        ));
    }
    check_grants(&req.engine, &req.grants)?;
    // Binding a vault credential to a target hands its secret to that host: only someone who
    // manages the vault's credentials may do it.
    if !app
        .policies
        .authorizer
        .permissions(who)
        .iter()
        .any(|p| p == "credential.manage")
    {
        return Err(Error::Forbidden {
            code: "credential_manage_required",
            message: "登记数据库目标须有管理凭据的权限 / Registering a database target needs credential.manage".into(),
            policy_ids: Vec::new(),
        });
    }
    let now = app.now();
    let cred = crate::db::vault::get_credential(&app.db, req.admin_credential_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::invalid(
                "unknown_credential",
                "admin_credential_id 不是保管库中的凭据 / admin_credential_id is not a vault credential",
            ),
            other => other.into(),
        })?;
    if cred.system != system {
        return Err(Error::invalid(
            "credential_not_for_system",
            "管理凭据须属于同一系统 / The admin credential must belong to the same system",
        ));
    }
    let grants = serde_json::to_string(&req.grants).unwrap_or_else(|_| "{}".into());
    let mut tx = Deed::open(app).await?;
    if crate::db::changes::existing_systems(&mut tx, &[system.to_string()])
        .await?
        .is_empty()
    {
        return Err(Error::NotFound { what: "system" });
    }
    let t = db::insert_target(
        &mut tx,
        &NewTarget {
            system_key: system,
            name: req.name.trim(),
            engine: &req.engine,
            host: req.host.trim(),
            port: i32::from(req.port),
            database_name: &req.database,
            admin_credential_id: req.admin_credential_id,
            grants: &grants,
        },
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "target_exists",
            "该系统已有同名数据库目标 / This system already has a database target of that name",
        ),
        other => other.into(),
    })?;
    let entry = Entry::by(
        who,
        "database_target.create",
        format!("database_target:{}", t.id),
    )
    .with_details(json!({"system": system, "name": t.name, "engine": t.engine,
                             "host": t.host, "database": t.database_name, "grants": req.grants,
                             "admin_credential_id": t.admin_credential_id}));
    tx.commit(&entry, now).await?;
    view(t)
}

pub async fn targets(app: &App, system: &str) -> Result<Vec<TargetView>> {
    db::targets_of(&app.db, system)
        .await?
        .into_iter()
        .map(view)
        .collect()
}

pub async fn delete_target(app: &App, who: &Principal, system: &str, id: i64) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let t = db::delete_target(&mut tx, system, id, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::NotFound {
                what: "database target",
            },
            other => other.into(),
        })?;
    let entry = Entry::by(
        who,
        "database_target.delete",
        format!("database_target:{}", t.id),
    )
    .with_details(json!({"system": system, "name": t.name}));
    tx.commit(&entry, now).await?;
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessRequest {
    /// The target's name on one of the change's systems.
    pub database: String,
    pub totp: Option<String>,
}

/// A temporary account: the password is in this answer only.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Access {
    pub username: String,
    #[serde(serialize_with = "expose")]
    #[schema(value_type = String)]
    pub password: SecretString,
    pub host: String,
    pub port: i32,
    pub database: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("username", &self.username)
            .field("password", &"[redacted]")
            .finish_non_exhaustive()
    }
}

fn expose<S: serde::Serializer>(s: &SecretString, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.expose_secret())
}

fn refuse(code: &'static str, message: String) -> Error {
    Error::Forbidden {
        code,
        message,
        policy_ids: Vec::new(),
    }
}

/// Issues a temporary account on `req.database` for change `change_id`. Every refusal and
/// every issue is audited (never the password).
pub async fn grant(
    app: &App,
    who: &Principal,
    change_id: i64,
    req: AccessRequest,
) -> Result<Access> {
    text::required("database", &req.database, 64, Lines::One)?;
    let now = app.now();
    let change = crate::db::changes::get_change(&app.db, change_id)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::NotFound { what: "change" },
            other => other.into(),
        })?;
    let systems: Vec<String> = serde_json::from_str(&change.systems).map_err(|_| {
        Error::Internal(anyhow::Error::new(crate::db::CorruptValue::new(
            "change_requests.systems",
            change.systems.clone(),
        )))
    })?;
    let mut target = None;
    for s in &systems {
        if let Some(t) = db::targets_of(&app.db, s)
            .await?
            .into_iter()
            .find(|t| t.name == req.database.trim())
        {
            target = Some(t);
        }
    }
    let mut entry = Entry::by(who, "database_access.grant", format!("change:{change_id}"))
        .with_details(json!({"database": req.database.trim(), "change_id": change_id}));
    let grace = chrono::TimeDelta::minutes(app.policies.security.reveal_grace_minutes.max(0));
    let refusal = if change.assignee_id != who.user_id {
        Some(refuse(
            "not_assignee",
            "只有变更的实施人可以申请数据库账号 / Only the change's assignee may ask for a database account".into(),
        ))
    } else if change.status != "in_progress" {
        Some(refuse(
            "change_not_in_progress",
            format!(
                "变更 {change_id} 不在实施中（状态 {}） / Change {change_id} is not in progress (status {})",
                change.status, change.status
            ),
        ))
    } else if change.category != "database" {
        Some(refuse(
            "not_a_database_change",
            "只有数据库类变更可以申请数据库账号 / Only a database change gets a database account"
                .into(),
        ))
    } else if now < change.planned_start || now >= change.planned_end + grace {
        Some(refuse(
            "outside_window",
            format!(
                "当前不在变更 {change_id} 的计划窗口内 / Now is outside the planned window of change {change_id}"
            ),
        ))
    } else if target.is_none() {
        Some(refuse(
            "change_not_for_system",
            "该变更的系统没有此数据库目标 / None of the change's systems has this database target"
                .into(),
        ))
    } else {
        None
    };
    let mut tx = Deed::open(app).await?;
    // The change again, in the deed: a completion committed meanwhile wins.
    let still_running = crate::db::changes::get_change_for_update(&mut tx, change_id)
        .await?
        .status
        == "in_progress";
    let refusal = match refusal {
        None if !still_running => Some(refuse(
            "change_not_in_progress",
            format!("变更 {change_id} 不在实施中 / Change {change_id} is not in progress"),
        )),
        Some(e) => Some(e),
        None => {
            crate::vault::factor::check(app, &mut tx, who.user_id, req.totp.as_deref(), false, now)
                .await?
                .err()
        }
    };
    if let Some(error) = refusal {
        entry.outcome = Outcome::Refused;
        entry.code = Some(error.code().to_string());
        tx.commit(&entry, now).await?;
        return Err(error.audited());
    }
    let Some(t) = target else {
        return Err(Error::Internal(anyhow::anyhow!("checked above")));
    };
    let (admin_user, admin_password) =
        crate::vault::server_secret(app, &mut tx, t.admin_credential_id).await?;
    let grants: BTreeMap<String, Vec<String>> = serde_json::from_str(&t.grants).unwrap_or_default();
    let action = change.action.clone().unwrap_or_default();
    let mut list = grants.get(&action).cloned().unwrap_or_default();
    list.extend(grants.get("read").cloned().unwrap_or_default());
    list.sort();
    list.dedup();
    let (username, password) = engine::new_credentials();
    let expires_at = change.planned_end + grace;
    // Recorded BEFORE the account exists on the target: an account can never exist that the
    // revocation job does not know of.
    let account = db::insert_account(
        &mut tx,
        t.id,
        change_id,
        who.user_id,
        &username,
        expires_at,
        now,
    )
    .await?;
    entry.details["target_id"] = json!(t.id);
    entry.details["username"] = json!(username);
    entry.details["grants"] = json!(list);
    entry.details["expires_at"] = json!(expires_at);
    tx.commit(&entry, now).await?;
    let admin = engine::Admin::of(&t, &admin_user, &admin_password);
    // The revocation job settles an account only a minute after its record: a creation must
    // start well within that (a request that waited long for locks gives up instead).
    if app.now() - account.created_at > SETTLE - chrono::TimeDelta::seconds(30) {
        let _ = db::mark_failed(&app.db, account.id, "creation started too late").await;
        return Err(Error::Integrity {
            code: "database_target_unavailable",
            message: "无法在目标数据库上创建账号，请稍后再试 / The account could not be created on the target database; try again later".into(),
        });
    }
    if let Err(e) = engine::create(&admin, &username, &password, &list, expires_at).await {
        tracing::warn!(target = t.id, error = %e, "creating a just-in-time database account failed");
        // Nothing usable was handed out; the job drops whatever part exists.
        let _ = db::mark_failed(&app.db, account.id, &e).await;
        return Err(Error::Integrity {
            code: "database_target_unavailable",
            message: "无法在目标数据库上创建账号，请稍后再试 / The account could not be created on the target database; try again later".into(),
        });
    }
    Ok(Access {
        username,
        password,
        host: t.host,
        port: t.port,
        database: t.database_name,
        expires_at,
    })
}

/// Drops every live account whose change ended or whose window is over. Failures are kept
/// and retried on the next run. Returns (revoked, still failing).
pub async fn revoke_due(app: &App, now: DateTime<Utc>) -> Result<(usize, usize)> {
    revoke(app, None, now).await
}

/// The same for one change's accounts (when it completes or is cancelled).
pub async fn revoke_change(
    app: &App,
    change_id: i64,
    now: DateTime<Utc>,
) -> Result<(usize, usize)> {
    revoke(app, Some(change_id), now).await
}

/// An account younger than this may still be being created on its target (creation is bounded
/// by [`engine::TIMEOUT`]): it is dropped, but stays `live` so that the next run drops it again
/// and a creation that finished after the first drop cannot survive.
const SETTLE: chrono::TimeDelta = chrono::TimeDelta::seconds(60);

async fn revoke(app: &App, change: Option<i64>, now: DateTime<Utc>) -> Result<(usize, usize)> {
    let (mut revoked, mut failing) = (0, 0);
    for a in db::due(&app.db, change, now).await? {
        match revoke_one(app, &a, now).await {
            Ok(()) => revoked += 1,
            // A drop racing another instance's drop of the same account may fail on a role
            // that is already gone: the account is no longer live, nothing is overdue.
            Err(e) => match db::mark_failed(&app.db, a.id, &e).await? {
                None => revoked += 1,
                Some(attempts) => {
                    failing += 1;
                    tracing::error!(account = %a.username, error = %e, "revoking a just-in-time database account failed; retrying");
                    if attempts == 1 {
                        overdue_notice(app, &a, &e, now).await?;
                    }
                }
            },
        }
    }
    if change.is_none() {
        // The whole picture only from a full run (a per-change run sees one change).
        metrics::gauge!("changeguard_database_accounts_overdue").set(failing as f64);
    }
    Ok((revoked, failing))
}

/// The first failure to revoke an account is audited and e-mailed to the admins (once: the
/// retries every minute are counted on the account and in the gauge).
async fn overdue_notice(app: &App, a: &Account, error: &str, now: DateTime<Utc>) -> Result<()> {
    let mut tx = Deed::open(app).await?;
    let notice = crate::notify::Bulletin::new(
        app,
        &format!("数据库临时账号回收失败：{}", a.username),
        &format!(
            "A just-in-time database account could not be revoked: {}",
            a.username
        ),
    )
    .fact(app, "账号", "Account", &a.username)
    .fact(app, "变更", "Change", format!("#{}", a.change_id))
    .fact(app, "原因", "Reason", error)
    .fact(
        app,
        "处理",
        "What happens",
        app.notifier.templates.pick(
            "每分钟重试，直至回收成功；请检查目标数据库是否可达",
            "Retried every minute until it succeeds; check that the target database is reachable",
        ),
    )
    .link(app, "/api/v1/database-accounts?status=overdue");
    crate::notify::enqueue_bulletin(
        app,
        &mut tx,
        "database_access_overdue",
        crate::notify::Parties::default(),
        &notice,
        now,
    )
    .await?;
    let entry = Entry::ok(
        None,
        "database_access.revoke_failed",
        format!("change:{}", a.change_id),
    )
    .with_details(json!({"username": a.username, "target_id": a.target_id}));
    tx.commit(&entry, now).await?;
    Ok(())
}

async fn revoke_one(app: &App, a: &Account, now: DateTime<Utc>) -> std::result::Result<(), String> {
    // Read what the drop needs in a read-only transaction (rolled back), so that no write lock
    // is held while the target is reached (it may be slow or down).
    let mut read = app.db.begin().await.map_err(|e| e.to_string())?;
    let t = db::target(&mut read, a.target_id)
        .await
        .map_err(|e| e.to_string())?;
    let (user, password) = crate::vault::server_secret(app, &mut read, t.admin_credential_id)
        .await
        .map_err(|e| e.to_string())?;
    drop(read);
    let admin = engine::Admin::of(&t, &user, &password);
    engine::drop_account(&admin, &a.username).await?;
    if now - a.created_at < SETTLE {
        return Ok(());
    }
    let mut tx = Deed::open(app).await.map_err(|e| e.to_string())?;
    if !db::mark_revoked(&mut tx, a.id, now)
        .await
        .map_err(|e| e.to_string())?
    {
        // Another instance finished it first (its deed audited it): nothing to record.
        return Ok(());
    }
    let entry = Entry::ok(
        None,
        "database_access.revoke",
        format!("change:{}", a.change_id),
    )
    .with_details(
        json!({"username": a.username, "target_id": a.target_id, "attempts": a.attempts + 1}),
    );
    tx.commit(&entry, now).await.map_err(|e| e.to_string())?;
    Ok(())
}

pub async fn accounts(app: &App, status: Option<&str>) -> Result<Vec<Account>> {
    if let Some(s) = status
        && !["live", "revoked", "overdue"].contains(&s)
    {
        return Err(Error::invalid(
            "invalid_status",
            "status 须为 live、revoked 或 overdue / status must be live, revoked or overdue",
        ));
    }
    Ok(db::list(&app.db, status).await?)
}
