//! Password resets of privileged accounts, decided by a second person.

use axum::extract::State;

use crate::App;
use crate::accounts::requests::RefuseRequest;
use crate::accounts::resets;
use crate::db::password_resets::PasswordReset;
use crate::http::api::role_grants::ListQuery;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};

/// Password resets of privileged accounts, newest first (at most 500).
#[utoipa::path(get, path = "/api/v1/password-resets", tag = "users", operation_id = "password_reset.list",
    params(ListQuery), security(("bearer" = ["user.manage"])),
    responses((status = 200, body = Vec<PasswordReset>), (status = 422, body = Problem, description = "invalid_status")))]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<PasswordReset>>> {
    Ok(Json(resets::list(&app, q.status()?).await?))
}

/// A second person (neither the admin who chose the password nor the account's holder)
/// approves: the password is set, temporary, and the account's sessions end.
#[utoipa::path(post, path = "/api/v1/password-resets/{id}/approve", tag = "users", operation_id = "password_reset.approve",
    params(("id" = i64, Path)), security(("bearer" = ["user.manage"])),
    responses((status = 200, body = PasswordReset, description = "`status` is `active`"),
               (status = 403, body = Problem, description = "self_approval"),
               (status = 404, body = Problem),
               (status = 409, body = Problem, description = "request_decided, request_expired, user_disabled")))]
pub async fn approve(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<PasswordReset>> {
    Ok(Json(resets::approve(&app, &who, id).await?))
}

/// Refuses a reset, with the reason (the one who asked, or the account's holder, may too).
#[utoipa::path(post, path = "/api/v1/password-resets/{id}/refuse", tag = "users", operation_id = "password_reset.refuse",
    params(("id" = i64, Path)), request_body = RefuseRequest, security(("bearer" = ["user.manage"])),
    responses((status = 200, body = PasswordReset, description = "`status` is `refused`"),
               (status = 404, body = Problem),
               (status = 409, body = Problem, description = "request_decided, request_expired"),
               (status = 422, body = Problem, description = "invalid_field, invalid_text")))]
pub async fn refuse(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<RefuseRequest>,
) -> ApiResult<Json<PasswordReset>> {
    Ok(Json(resets::refuse(&app, &who, id, req).await?))
}
