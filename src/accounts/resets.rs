//! Dual control of privilege for passwords (双人复核): a password an admin chooses for a holder
//! of a privileged role, or of a role that grants roles, takes effect only when a second person
//! with `user.manage` — neither the admin who chose it nor the account's holder — approves it.
//! Otherwise one admin could reset another admin's password, sign in as them and be the "second
//! person" of their own requests.

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::requests::{LAPSE_DAYS, RefuseRequest};
use super::{TEMPORARY_PASSWORD_HOURS, not_found, require};
use crate::App;
use crate::audit::Entry;
use crate::db::StoreError;
use crate::db::password_resets::{self as db, PasswordReset};
use crate::db::role_requests::{RequestStatus, effective};
use crate::db::users::{self as users_db, User, UserChanges};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::notify::{self, Bulletin, Parties};
use crate::rbac::{Facts, Principal, Resource};
use crate::text::{self, Lines};

/// The most resets one list answers.
const LIST_LIMIT: i64 = 500;

/// Whether a password reset of somebody holding `roles` needs a second person.
pub fn needs_second_person(app: &App, roles: &[String]) -> bool {
    roles
        .iter()
        .any(|r| app.policies.roles.needs_dual_control(r))
}

/// Files the reset of `user`'s password to `hash` (inside the update's deed). Returns the
/// request and the notice the deed sends with its entry.
pub(super) async fn file(
    app: &App,
    tx: &mut Deed<'_>,
    who: &Principal,
    user: &User,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<(PasswordReset, Bulletin)> {
    let lapses_at = now + TimeDelta::days(LAPSE_DAYS);
    let r = db::insert(tx, user.id, hash, who.user_id, lapses_at, now)
        .await
        .map_err(|e| match e {
            StoreError::Unique => Error::conflict(
                "request_pending",
                "该用户的密码重置已在等待批准 / A password reset of this user already waits for approval",
            ),
            other => other.into(),
        })?;
    let notice = notice(
        app,
        &r,
        "特权账号密码重置待第二人批准",
        "A privileged account's password reset waits for a second person's approval",
    );
    Ok((r, notice))
}

/// A second person approves: the password is set (temporary, as every password an admin
/// chooses) and the account's sessions end.
pub async fn approve(app: &App, who: &Principal, id: i64) -> Result<PasswordReset> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let (r, hash) = db::get_for_update(&mut tx, id)
        .await
        .map_err(reset_not_found)?;
    ensure_pending(&r, now)?;
    let user = users_db::get_tx(&mut tx, r.user_id)
        .await
        .map_err(not_found)?;
    if !user.active {
        return Err(Error::conflict(
            "user_disabled",
            "该用户已停用 / The user is disabled",
        ));
    }
    let decision = require(app.policies.authorizer.decide(
        who,
        "user.manage",
        &Resource::User(r.user_id),
        &Facts {
            grantee: Some(r.user_id),
            requested_by: Some(r.requested_by),
            ..Facts::default()
        },
    ))?;
    let Some(hash) = hash else {
        return Err(Error::conflict(
            "request_decided",
            "该申请已有决定 / The request is already decided",
        ));
    };
    users_db::update(
        &mut tx,
        r.user_id,
        &UserChanges {
            password: Some((
                &hash,
                Some(now + TimeDelta::hours(TEMPORARY_PASSWORD_HOURS)),
            )),
            ..UserChanges::default()
        },
        now,
    )
    .await?;
    users_db::revoke_sessions_of(&mut tx, r.user_id, now).await?;
    let r = db::decide(&mut tx, id, RequestStatus::Active, who.user_id, None, now).await?;
    let entry = Entry::by(who, "password_reset.approve", format!("user:{}", r.user_id))
        .with_policies(&decision.policy_ids)
        .with_details(json!({"request_id": r.id, "username": r.username,
                             "requested_by": r.requested_by_username}));
    let notice = notice(
        app,
        &r,
        "特权账号密码重置已批准生效",
        "A privileged account's password reset was approved and is in force",
    )
    .fact(app, "批准人", "Approved by", crate::assets::person(who));
    commit(app, tx, "role_decided", &r, &notice, &entry, now).await?;
    Ok(r)
}

/// Refuses a reset, with the reason: the one who asked (a withdrawal) and the account's holder
/// may refuse too, since refusing changes nothing.
pub async fn refuse(
    app: &App,
    who: &Principal,
    id: i64,
    req: RefuseRequest,
) -> Result<PasswordReset> {
    text::required("reason", &req.reason, 500, Lines::Many)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let (r, _) = db::get_for_update(&mut tx, id)
        .await
        .map_err(reset_not_found)?;
    ensure_pending(&r, now)?;
    let decision = require(app.policies.authorizer.decide(
        who,
        "user.manage",
        &Resource::User(r.user_id),
        &Facts {
            revoke: true,
            ..Facts::default()
        },
    ))?;
    let reason = req.reason.trim();
    let r = db::decide(
        &mut tx,
        id,
        RequestStatus::Refused,
        who.user_id,
        Some(reason),
        now,
    )
    .await?;
    let entry = Entry::by(who, "password_reset.refuse", format!("user:{}", r.user_id))
        .with_policies(&decision.policy_ids)
        .with_reason(reason)
        .with_details(json!({"request_id": r.id, "username": r.username}));
    let notice = notice(
        app,
        &r,
        "特权账号密码重置未获批准",
        "A privileged account's password reset was refused",
    )
    .fact(app, "决定人", "Refused by", crate::assets::person(who))
    .comment(Some(reason));
    commit(app, tx, "role_decided", &r, &notice, &entry, now).await?;
    Ok(r)
}

/// Resets, newest first, optionally of one status.
pub async fn list(app: &App, status: Option<RequestStatus>) -> Result<Vec<PasswordReset>> {
    Ok(db::list(&app.db, status, app.now(), LIST_LIMIT).await?)
}

fn ensure_pending(r: &PasswordReset, now: DateTime<Utc>) -> Result<()> {
    match effective(r.status, r.lapses_at, now) {
        RequestStatus::Pending => Ok(()),
        RequestStatus::Expired => Err(Error::conflict(
            "request_expired",
            "该申请已过期，请重新申请 / The request has lapsed; ask again",
        )),
        RequestStatus::Active | RequestStatus::Refused => Err(Error::conflict(
            "request_decided",
            "该申请已有决定 / The request is already decided",
        )),
    }
}

fn reset_not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound {
            what: "password reset",
        },
        other => other.into(),
    }
}

fn notice(app: &App, r: &PasswordReset, zh: &str, en: &str) -> Bulletin {
    Bulletin::new(
        app,
        &format!("{zh}：{}", r.username),
        &format!("{en}: {}", r.username),
    )
    .fact(app, "账号", "Account", &r.username)
    .fact(app, "申请人", "Asked by", &r.requested_by_username)
    .fact(app, "申请编号", "Request", r.id)
    .link(app, "/api/v1/password-resets?status=pending")
}

pub(super) fn parties(r: &PasswordReset) -> Parties<'static> {
    Parties {
        requester: Some(r.requested_by),
        assignee: Some(r.user_id),
        ..Parties::default()
    }
}

async fn commit(
    app: &App,
    tx: Deed<'_>,
    event: &str,
    r: &PasswordReset,
    notice: &Bulletin,
    entry: &Entry,
    now: DateTime<Utc>,
) -> Result<()> {
    notify::commit_with_bulletin(app, tx, (event, parties(r), notice), entry, now).await
}
