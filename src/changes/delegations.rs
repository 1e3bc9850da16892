//! Delegations of approval (审批委托): a person names a substitute for a period; while it runs the
//! delegate may decide approval stages in their place (recorded as "on behalf of"), never for a
//! change the delegate requested or carries out, and never in a role incompatible with one of
//! the delegate's own (`policies/roles.toml` `[[incompatible]]`).

use chrono::{FixedOffset, TimeDelta};

use super::*;
use crate::db::approvals::{self as adb, DelegationRow, NewDelegation};
use crate::notify::{Bulletin, Parties};

/// The longest delegation.
pub const MAX_DELEGATION_DAYS: i64 = 90;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Delegate {
    /// Username of the substitute.
    pub delegate: String,
    /// RFC 3339 with offset.
    pub from: DateTime<FixedOffset>,
    pub to: DateTime<FixedOffset>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DelegationView {
    pub id: i64,
    pub delegator: UserRef,
    pub delegate: UserRef,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub reason: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Running now.
    pub in_force: bool,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MyDelegations {
    /// Delegations the caller gave (not ended more than 30 days ago).
    pub given: Vec<DelegationView>,
    /// Delegations to the caller.
    pub received: Vec<DelegationView>,
}

fn view(d: DelegationRow, now: DateTime<Utc>) -> DelegationView {
    DelegationView {
        id: d.id,
        delegator: UserRef {
            id: d.delegator_id,
            username: d.delegator_username,
            display_name: d.delegator_name,
        },
        delegate: UserRef {
            id: d.delegate_id,
            username: d.delegate_username,
            display_name: d.delegate_name,
        },
        from: d.starts_at,
        to: d.ends_at,
        in_force: d.revoked_at.is_none() && d.starts_at <= now && now < d.ends_at,
        reason: d.reason,
        created_at: d.created_at,
        revoked_at: d.revoked_at,
    }
}

/// Names a substitute for a period.
pub async fn delegate(app: &App, who: &Principal, req: Delegate) -> Result<DelegationView> {
    text::required("delegate", &req.delegate, 64, Lines::One)?;
    text::required("reason", &req.reason, 2000, Lines::Many)?;
    let now = app.now();
    let (from, to) = (req.from.with_timezone(&Utc), req.to.with_timezone(&Utc));
    if to <= from || to <= now || to - from > TimeDelta::days(MAX_DELEGATION_DAYS) {
        return Err(invalid(
            "invalid_period",
            format!(
                "委托期须在将来结束、开始早于结束，且不超过 {MAX_DELEGATION_DAYS} 天 / A delegation must end in the future, after it starts, and last at most {MAX_DELEGATION_DAYS} days"
            ),
        ));
    }
    let permissions = app.policies.authorizer.permissions(who);
    if !permissions
        .iter()
        .any(|p| p == "change.approve" || p == "change.approve_emergency")
    {
        return Err(invalid(
            "nothing_to_delegate",
            "您没有审批权限，无可委托 / You approve nothing, so there is nothing to delegate",
        ));
    }
    let username = crate::auth::normalize_username(&req.delegate);
    let mut tx = Deed::open(app).await?;
    let delegate = match crate::accounts::active_user(app, &username).await? {
        Some(u) if u.id != who.user_id => crate::accounts::principal_in(&mut tx, u.id, now).await?,
        _ => None,
    };
    let Some(delegate) = delegate else {
        return Err(invalid(
            "invalid_delegate",
            "受托人须为他人且为在职人员账号 / The delegate must be somebody else, an active person",
        ));
    };
    let roles = &app.policies.roles;
    for mine in &who.roles {
        if let Some(theirs) = delegate.roles.iter().find(|r| roles.incompatible(r, mine)) {
            return Err(invalid(
                "incompatible_delegate",
                format!(
                    "受托人的角色 {theirs} 与您的角色 {mine} 职责不相容 / The delegate's role {theirs} is incompatible with your role {mine}"
                ),
            ));
        }
    }
    if adb::overlapping(&mut tx, who.user_id, from, to).await? {
        return Err(Error::conflict(
            "delegation_overlaps",
            "该期间已有您的委托，请先撤销 / You already have a delegation in this period: revoke it first",
        ));
    }
    // The delegate comes to decide in the delegator's roles: where one of those needs a second
    // factor and the delegate has none (or still holds a password an admin set), their
    // sessions end, as when such a role is granted to them.
    let mut held = delegate.roles.clone();
    held.extend(adb::delegated_roles(&mut tx, delegate.user_id, now).await?);
    let mut sessions_ended = false;
    for role in &who.roles {
        sessions_ended |= crate::accounts::end_own_sessions_without_factor(
            app,
            &mut tx,
            delegate.user_id,
            role,
            &held,
            now,
        )
        .await?;
    }
    let id = adb::insert_delegation(
        &mut tx,
        &NewDelegation {
            delegator_id: who.user_id,
            delegate_id: delegate.user_id,
            starts_at: from,
            ends_at: to,
            reason: req.reason.trim(),
        },
        now,
    )
    .await?;
    let tz = app.policies.change.timezone;
    let local = |t: DateTime<Utc>| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string();
    let notice = Bulletin::new(app, "审批委托", "Approval delegated")
        .fact(app, "委托人", "Delegated by", &who.display_name)
        .fact(app, "受托人", "Delegate", &delegate.display_name)
        .fact(app, "开始", "From", local(from))
        .fact(app, "结束", "To", local(to))
        .comment(Some(req.reason.trim()))
        .link(app, "/console/me");
    let parties = Parties {
        requester: Some(who.user_id),
        assignee: Some(delegate.user_id),
        ..Parties::default()
    };
    let entry = Entry::by(who, "delegation.create", format!("delegation:{id}")).with_details(
        json!({"delegate": delegate.username, "from": from, "to": to,
                             "sessions_ended": sessions_ended}),
    );
    crate::notify::commit_with_bulletin(
        app,
        tx,
        ("delegation_granted", parties, &notice),
        &entry,
        now,
    )
    .await?;
    let mut tx = Deed::open(app).await?;
    let row = adb::get_delegation(&mut tx, id).await?;
    Ok(view(row, now))
}

/// The caller's delegations, given and received.
pub async fn mine(app: &App, who: &Principal) -> Result<MyDelegations> {
    let now = app.now();
    let rows = adb::delegations_of(&app.db, who.user_id, now - TimeDelta::days(30)).await?;
    let (given, received): (Vec<_>, Vec<_>) = rows
        .into_iter()
        .partition(|d| d.delegator_id == who.user_id);
    Ok(MyDelegations {
        given: given.into_iter().map(|d| view(d, now)).collect(),
        received: received.into_iter().map(|d| view(d, now)).collect(),
    })
}

/// Ends a delegation the caller gave (at once).
pub async fn revoke(app: &App, who: &Principal, id: i64) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let row = match adb::get_delegation(&mut tx, id).await {
        Ok(r) if r.delegator_id == who.user_id => r,
        Ok(_) | Err(StoreError::NotFound) => return Err(Error::NotFound { what: "delegation" }),
        Err(e) => return Err(e.into()),
    };
    if row.revoked_at.is_some() {
        return Ok(());
    }
    adb::revoke_delegation(&mut tx, id, now).await?;
    let entry = Entry::by(who, "delegation.revoke", format!("delegation:{id}"))
        .with_details(json!({"delegate": row.delegate_username}));
    tx.commit(&entry, now).await?;
    Ok(())
}
