//! Login, logout, and who am I.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::App;
use crate::auth::{self, LoginOk};
use crate::db::users::SessionScope;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Problem};

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// TOTP code (or a recovery code), for holders of the roles `policies/security.toml` lists.
    pub totp: Option<String>,
}

/// Signs in; the token carries identity and session only.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", operation_id = "auth.login",
    request_body = LoginRequest, security(()),
    responses((status = 200, body = LoginOk), (status = 401, body = Problem, description = "invalid_credentials, temporary_password_expired, totp_required, totp_invalid, totp_replayed"),
               (status = 403, body = Problem, description = "directory_roles_incompatible: the directory's groups would give incompatible roles; directory_identity_changed: the username names another directory entry now (the earlier account is disabled); directory_account_renamed: the directory entry already has an account here under another name"),
               (status = 429, body = Problem, description = "too_many_requests, with Retry-After"),
               (status = 503, body = Problem, description = "directory_unavailable: a directory account while the directory cannot be reached")))]
pub async fn login(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Json<LoginOk>> {
    let trusted = app.settings.trusted_proxy_nets().unwrap_or_default();
    let client = crate::http::client::client_ip(&trusted, peer.ip(), &headers);
    Ok(Json(
        auth::login(
            &app,
            &req.username,
            &req.password,
            req.totp.as_deref(),
            auth::From {
                client: Some(client),
                device: None,
            },
        )
        .await?,
    ))
}

/// Ends the session: the token is dead afterwards.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", operation_id = "auth.logout",
    security(("bearer" = [])), responses((status = 204), (status = 401, body = Problem)))]
pub async fn logout(State(app): State<App>, Auth(who): Auth) -> ApiResult<StatusCode> {
    auth::logout(&app, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub department: String,
    pub email: String,
    pub roles: Vec<String>,
    /// What the caller may do now (nothing while the password must be changed).
    pub permissions: Vec<String>,
    /// Signed in with a temporary password: only `POST /api/v1/me/password`, this and logout.
    pub must_change_password: bool,
    /// Signed in to enrol a second factor a role needs: only the `/api/v1/me/totp` routes,
    /// this, a password change and logout.
    pub enrolment_required: bool,
}

/// The caller, their roles in force and what they may do.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", operation_id = "me.get",
    security(("bearer" = [])), responses((status = 200, body = Me), (status = 401, body = Problem)))]
pub async fn me(State(app): State<App>, Auth(who): Auth) -> ApiResult<Json<Me>> {
    let must_change_password = who.scope == SessionScope::PasswordChange;
    let enrolment_required = who.scope == SessionScope::Enrolment;
    let permissions = if who.scope != SessionScope::Full {
        Vec::new()
    } else {
        app.policies.authorizer.permissions(&who)
    };
    Ok(Json(Me {
        id: who.user_id,
        username: who.username,
        display_name: who.display_name,
        department: who.department,
        email: who.email,
        roles: who.roles,
        permissions,
        must_change_password,
        enrolment_required,
    }))
}
