//! The caller's own account: password and sessions.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;

use crate::App;
use crate::accounts::self_service::{self, ChangePassword, SessionView};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};

/// Changes the caller's password (the only thing a temporary password's token may do); every
/// other session of the caller ends.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "auth", operation_id = "me.password",
    request_body = ChangePassword, security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem),
               (status = 403, body = Problem, description = "wrong_password, not_for_service_accounts"),
               (status = 422, body = Problem, description = "weak_password, password_unchanged, directory_account_password"),
               (status = 429, body = Problem, description = "too_many_requests, with Retry-After")))]
pub async fn change_password(
    State(app): State<App>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    Auth(who): Auth,
    Json(req): Json<ChangePassword>,
) -> ApiResult<StatusCode> {
    let trusted = app.settings.trusted_proxy_nets().unwrap_or_default();
    let client = crate::http::client::client_ip(&trusted, peer.ip(), &headers);
    let _scope = self_service::change_password(&app, &who, req, Some(client)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The caller's live sessions, newest first; `current` marks the one asking.
#[utoipa::path(get, path = "/api/v1/me/sessions", tag = "auth", operation_id = "me.sessions",
    security(("bearer" = [])), responses((status = 200, body = Vec<SessionView>), (status = 401, body = Problem)))]
pub async fn sessions(
    State(app): State<App>,
    Auth(who): Auth,
) -> ApiResult<Json<Vec<SessionView>>> {
    Ok(Json(self_service::sessions(&app, &who, who.user_id).await?))
}

/// Ends one of the caller's sessions (another device, or this one).
#[utoipa::path(delete, path = "/api/v1/me/sessions/{id}", tag = "auth", operation_id = "me.session_end",
    params(("id" = String, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 401, body = Problem), (status = 404, body = Problem)))]
pub async fn end_session(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    self_service::end_session(&app, &who, who.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
