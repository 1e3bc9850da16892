//! Dual control of privilege (双人复核): a grant of a privileged role (`policies/roles.toml`) is a
//! request that takes effect only when a second holder of `role.grant`, neither the one who
//! asked nor the grantee, approves it. So one admin cannot make a puppet manager: the account they
//! create holds nothing privileged until somebody else agrees.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{GrantRole, is_last_admin, not_found, require};
use crate::App;
use crate::audit::Entry;
use crate::db::StoreError;
use crate::db::role_requests::{self as db, NewRequest, RequestStatus, RoleRequest};
use crate::db::users::{self as users_db, User};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::notify::{self, Bulletin, Parties};
use crate::rbac::{Decision, Facts, Principal, Resource};
use crate::text::{self, Lines};

/// A request nobody decided within this long lapses.
pub const LAPSE_DAYS: i64 = 7;

/// The most requests one list answers.
const LIST_LIMIT: i64 = 500;

/// Files the request for a grant that the policies allowed the asker to make (`decision`).
pub(super) async fn file(
    app: &App,
    mut tx: Deed<'_>,
    who: &Principal,
    grantee: &User,
    grant: &GrantRole,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<RoleRequest> {
    let (role, expires_at) = (grant.role.as_str(), grant.expires_at);
    let new = NewRequest {
        user_id: grantee.id,
        role,
        expires_at,
        requested_by: who.user_id,
        lapses_at: now + TimeDelta::days(LAPSE_DAYS),
    };
    let r = db::insert(&mut tx, &new, now).await.map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "request_pending",
            "该用户的这一角色授权已在等待批准 / A grant of this role to this user already waits for approval",
        ),
        other => other.into(),
    })?;
    let entry = Entry::by(who, "role.request", format!("user:{}", grantee.id))
        .with_policies(&decision.policy_ids)
        .with_details(
            json!({"request_id": r.id, "role": role, "username": grantee.username,
                             "expires_at": expires_at}),
        );
    let notice = notice(
        app,
        &r,
        "特权角色授权待第二人批准",
        "A privileged role waits for a second person's approval",
    )
    .fact(app, "申请人", "Asked by", &r.requested_by_username);
    commit(app, tx, "role_requested", &r, &notice, &entry, now).await?;
    Ok(r)
}

/// A second person approves: the grant takes effect now.
pub async fn approve(app: &App, who: &Principal, id: i64) -> Result<RoleRequest> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let r = db::get_for_update(&mut tx, id)
        .await
        .map_err(request_not_found)?;
    ensure_pending(&r, now)?;
    let grantee = users_db::get_tx(&mut tx, r.user_id)
        .await
        .map_err(not_found)?;
    if !grantee.active {
        return Err(Error::conflict(
            "user_disabled",
            "被授权人已停用 / The grantee is disabled",
        ));
    }
    let held = users_db::roles_of_tx(&mut tx, r.user_id, now).await?;
    let removes_last_admin = r.role == "admin"
        && r.expires_at.is_some()
        && is_last_admin(&mut tx, r.user_id, now).await?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "role.grant",
        &Resource::Role(&r.role),
        &Facts {
            grantee: Some(r.user_id),
            grantee_roles: Some(held.clone()),
            requested_by: Some(r.requested_by),
            removes_last_admin,
            ..Facts::default()
        },
    ))?;
    users_db::upsert_grant(
        &mut tx,
        r.user_id,
        &r.role,
        Some(r.requested_by),
        now,
        r.expires_at,
    )
    .await?;
    let sessions_ended =
        super::end_sessions_without_factor(app, &mut tx, r.user_id, &r.role, &held, now).await?;
    let r = db::decide(
        &mut tx,
        id,
        RequestStatus::Active,
        Some(who.user_id),
        None,
        now,
    )
    .await?;
    let entry = Entry::by(who, "role.approve", format!("user:{}", r.user_id))
        .with_policies(&decision.policy_ids)
        .with_details(
            json!({"request_id": r.id, "role": r.role, "username": r.username,
                             "requested_by": r.requested_by_username, "expires_at": r.expires_at,
                             "sessions_ended": sessions_ended}),
        );
    let notice = notice(
        app,
        &r,
        "特权角色授权已批准生效",
        "A privileged role was approved and is in force",
    )
    .fact(app, "申请人", "Asked by", &r.requested_by_username)
    .fact(app, "批准人", "Approved by", crate::assets::person(who));
    commit(app, tx, "role_decided", &r, &notice, &entry, now).await?;
    Ok(r)
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefuseRequest {
    /// Mandatory: why the role is not granted.
    pub reason: String,
}

/// Refuses a request. Refusing only keeps a privilege from being given, so any holder of
/// `role.grant` who may grant the role may refuse, the one who asked included (a withdrawal).
pub async fn refuse(
    app: &App,
    who: &Principal,
    id: i64,
    req: RefuseRequest,
) -> Result<RoleRequest> {
    text::required("reason", &req.reason, 500, Lines::Many)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let r = db::get_for_update(&mut tx, id)
        .await
        .map_err(request_not_found)?;
    ensure_pending(&r, now)?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "role.grant",
        &Resource::Role(&r.role),
        &Facts {
            grantee: Some(r.user_id),
            revoke: true,
            ..Facts::default()
        },
    ))?;
    let reason = req.reason.trim();
    let r = db::decide(
        &mut tx,
        id,
        RequestStatus::Refused,
        Some(who.user_id),
        Some(reason),
        now,
    )
    .await?;
    let entry = Entry::by(who, "role.refuse", format!("user:{}", r.user_id))
        .with_policies(&decision.policy_ids)
        .with_reason(reason)
        .with_details(json!({"request_id": r.id, "role": r.role, "username": r.username}));
    let notice = notice(
        app,
        &r,
        "特权角色授权未获批准",
        "A privileged role was refused",
    )
    .fact(app, "申请人", "Asked by", &r.requested_by_username)
    .fact(app, "决定人", "Refused by", crate::assets::person(who))
    .comment(Some(reason));
    commit(app, tx, "role_decided", &r, &notice, &entry, now).await?;
    Ok(r)
}

/// Requests, newest first, optionally of one status.
pub async fn list(app: &App, status: Option<RequestStatus>) -> Result<Vec<RoleRequest>> {
    Ok(db::list(&app.db, status, app.now(), LIST_LIMIT).await?)
}

fn ensure_pending(r: &RoleRequest, now: DateTime<Utc>) -> Result<()> {
    let lapsed = r.expires_at.is_some_and(|e| e <= now);
    match db::effective(r.status, r.lapses_at, now) {
        RequestStatus::Pending if !lapsed => Ok(()),
        RequestStatus::Pending | RequestStatus::Expired => Err(Error::conflict(
            "request_expired",
            "该授权申请已过期，请重新申请 / The request has lapsed; ask again",
        )),
        RequestStatus::Active | RequestStatus::Refused => Err(Error::conflict(
            "request_decided",
            "该授权申请已有决定 / The request is already decided",
        )),
    }
}

fn request_not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound {
            what: "role request",
        },
        other => other.into(),
    }
}

fn notice(app: &App, r: &RoleRequest, zh: &str, en: &str) -> Bulletin {
    let title = |lang: &str| {
        app.policies
            .roles
            .get(&r.role)
            .map(|x| {
                if lang == "zh" {
                    x.title_zh.clone()
                } else {
                    x.title_en.clone()
                }
            })
            .unwrap_or_else(|| r.role.clone())
    };
    let tz = app.policies.change.timezone;
    let until = r.expires_at.map_or_else(
        || "长期 / permanent".to_string(),
        |e| e.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string(),
    );
    Bulletin::new(
        app,
        &format!("{zh}：{} → {}", title("zh"), r.username),
        &format!("{en}: {} → {}", title("en"), r.username),
    )
    .fact(
        app,
        "角色",
        "Role",
        format!("{} / {}", title("zh"), title("en")),
    )
    .fact(app, "被授权人", "Grantee", &r.username)
    .fact(app, "有效期至", "Until", until)
    .fact(app, "申请编号", "Request", r.id)
    .link(app, "/console/inbox")
}

async fn commit(
    app: &App,
    tx: Deed<'_>,
    event: &str,
    r: &RoleRequest,
    notice: &Bulletin,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<()> {
    let parties = Parties {
        requester: Some(r.requested_by),
        assignee: Some(r.user_id),
        ..Parties::default()
    };
    notify::commit_with_bulletin(app, tx, (event, parties, notice), entry, now).await
}
