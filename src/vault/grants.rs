//! Standing grants (an admin gives, a second person approves), the notices about credentials, and the rotate-after-use reminders.

use super::*;

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
pub(super) fn credential_facts(app: &App, b: Bulletin, c: &Credential) -> Bulletin {
    b.fact(app, "凭据", "Credential", format!("{} (#{})", c.name, c.id))
        .fact(app, "系统", "System", &c.system)
        .fact(app, "账号", "Account", &c.account)
        .link(app, "/console/inbox")
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
pub(super) fn rotation_notice(app: &App, c: &Credential) -> Bulletin {
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
