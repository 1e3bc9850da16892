//! Who can reveal what, who did, and the credentials waiting to be rotated.

use super::credentials::view;
use super::*;

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
    let f = reveal_facts(app, p.user_id, c, now).await?;
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
