//! What people do for their own account: change their password (the way out of a temporary
//! one), see their sessions and end them. An admin may see and end anybody's sessions.

use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::not_found;
use crate::App;
use crate::audit::Entry;
use crate::auth::password;
use crate::db::users::{self as users_db, SessionRow, SessionScope, UserChanges};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::Principal;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePassword {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Changes the caller's password after checking the current one; every other session of theirs
/// ends, and this one may do everything their roles permit (a temporary password is gone) —
/// or, while a second factor their roles need is missing, enrol it. Ok: this session's scope.
pub async fn change_password(
    app: &App,
    who: &Principal,
    req: ChangePassword,
    client: Option<IpAddr>,
) -> Result<SessionScope> {
    crate::directory::refuse_local_password(app, who.user_id).await?;
    if !crate::auth::verify_password(app, &who.username, &req.current_password, client).await? {
        return Err(Error::Forbidden {
            code: "wrong_password",
            message: "当前密码不正确 / The current password is wrong".into(),
            policy_ids: Vec::new(),
        });
    }
    password::check_policy(req.new_password.expose_secret(), &who.username)?;
    if req.new_password.expose_secret() == req.current_password.expose_secret() {
        return Err(Error::invalid(
            "password_unchanged",
            "新密码不能与当前密码相同 / The new password must differ from the current one",
        ));
    }
    let hash = app.hasher.hash(&req.new_password).await?;
    let now = app.now();
    let scope = if crate::auth::enrolment_due(app, who.user_id, now).await? {
        SessionScope::Enrolment
    } else {
        SessionScope::Full
    };
    let mut tx = Deed::open(app).await?;
    users_db::update(
        &mut tx,
        who.user_id,
        &UserChanges {
            password: Some((&hash, None)),
            ..UserChanges::default()
        },
        now,
    )
    .await?;
    users_db::end_other_sessions(&mut tx, who.user_id, &who.session_id, scope, now).await?;
    let entry = Entry::by(who, "user.password_change", format!("user:{}", who.user_id));
    tx.commit(&entry, now).await?;
    Ok(scope)
}

/// A live session, and whether it is the one asking.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    #[serde(flatten)]
    pub session: SessionRow,
    pub current: bool,
}

/// The live sessions of `user_id`, newest first; `who`'s own is marked.
pub async fn sessions(app: &App, who: &Principal, user_id: i64) -> Result<Vec<SessionView>> {
    users_db::get(&app.db, user_id).await.map_err(not_found)?;
    let rows = users_db::sessions_of(&app.db, user_id, app.now()).await?;
    Ok(rows
        .into_iter()
        .map(|session| SessionView {
            current: session.id == who.session_id,
            session,
        })
        .collect())
}

/// Ends a live session of `user_id` (the caller's own, or anybody's for an admin: the route
/// decides who may); its token is refused from the next request.
pub async fn end_session(app: &App, who: &Principal, user_id: i64, session: &str) -> Result<()> {
    users_db::get(&app.db, user_id).await.map_err(not_found)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    if !users_db::revoke_session_of(&mut tx, user_id, session, now).await? {
        return Err(Error::NotFound { what: "session" });
    }
    // Not the whole id: the trail needs to tell sessions apart, not to name them.
    let short: String = session.chars().take(8).collect();
    let entry = Entry::by(who, "session.end", format!("user:{user_id}"))
        .with_details(json!({"session": short, "own": user_id == who.user_id}));
    tx.commit(&entry, now).await?;
    Ok(())
}
