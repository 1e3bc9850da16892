//! Users and role grants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::App;
use crate::accounts::self_service::{self, SessionView};
use crate::accounts::{self, CreateUser, GrantRole, Granted, UpdateUser, Updated, UserView};
use crate::db::password_resets::PasswordReset;
use crate::db::role_requests::RoleRequest;
use crate::db::users::{self as users_db, Grant, User};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};

/// Creates a user (never returns the password hash). The password is temporary: it signs in
/// only to be changed, within 72 hours.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", operation_id = "user.create",
    request_body = CreateUser, security(("bearer" = ["user.manage"])),
    responses((status = 201, body = User), (status = 409, body = Problem, description = "username_taken"),
               (status = 422, body = Problem, description = "weak_password, invalid_username, invalid_email, …")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = accounts::create_user(&app, Some(&who), req).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", operation_id = "user.list",
    security(("bearer" = ["user.read"])), responses((status = 200, body = Vec<User>)))]
pub async fn list(State(app): State<App>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(users_db::list(&app.db).await?))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", operation_id = "user.get",
    params(("id" = i64, Path)), security(("bearer" = ["user.read"])),
    responses((status = 200, body = UserView), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Path(id): Path<i64>) -> ApiResult<Json<UserView>> {
    Ok(Json(accounts::view(&app, id).await?))
}

/// Changes a user; `{"active": false}` disables them and ends their sessions.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", operation_id = "user.update",
    params(("id" = i64, Path)), request_body = UpdateUser, security(("bearer" = ["user.manage"])),
    responses((status = 200, body = User),
               (status = 202, body = PasswordReset, description = "the user holds privilege: the new password waits for a second person (`status` is `pending`); the other fields are changed"),
               (status = 403, body = Problem, description = "last_admin"), (status = 404, body = Problem),
               (status = 409, body = Problem, description = "request_pending"),
               (status = 422, body = Problem, description = "weak_password, invalid_email, invalid_text, service_account_password, directory_account_password")))]
pub async fn update(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<UpdateUser>,
) -> ApiResult<Response> {
    Ok(match accounts::update_user(&app, &who, id, req).await? {
        Updated::Done(u) => Json(u).into_response(),
        Updated::ResetPending(r) => (StatusCode::ACCEPTED, Json(r)).into_response(),
    })
}

/// Grants a role (optionally until `expires_at`). A privileged role (`policies/roles.toml`) is
/// not granted yet: the answer is a pending request that a second person approves
/// (`POST /api/v1/role-grants/{id}/approve`).
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", tag = "users", operation_id = "role.grant",
    params(("id" = i64, Path)), request_body = GrantRole, security(("bearer" = ["role.grant"])),
    responses((status = 201, body = Grant, description = "in force"),
               (status = 202, body = RoleRequest, description = "a privileged role: `status` is `pending`"),
               (status = 403, body = Problem, description = "self_grant, role_not_grantable, incompatible_roles, last_admin"),
               (status = 404, body = Problem),
               (status = 409, body = Problem, description = "request_pending"),
               (status = 422, body = Problem, description = "unknown_role, invalid_expiry, role_not_for_service_accounts, role_only_for_service_accounts")))]
pub async fn grant(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<GrantRole>,
) -> ApiResult<Response> {
    Ok(match accounts::grant_role(&app, &who, id, req).await? {
        Granted::Active(g) => (StatusCode::CREATED, Json(g)).into_response(),
        Granted::Pending(r) => (StatusCode::ACCEPTED, Json(r)).into_response(),
    })
}

/// Revokes a role; effective on the holder's very next request.
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles/{role}", tag = "users", operation_id = "role.revoke",
    params(("id" = i64, Path), ("role" = String, Path)), security(("bearer" = ["role.grant"])),
    responses((status = 204), (status = 403, body = Problem, description = "last_admin"), (status = 404, body = Problem)))]
pub async fn revoke(
    State(app): State<App>,
    Auth(who): Auth,
    Path((id, role)): Path<(i64, String)>,
) -> ApiResult<StatusCode> {
    accounts::revoke_role(&app, &who, id, &role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A user's live sessions, newest first.
#[utoipa::path(get, path = "/api/v1/users/{id}/sessions", tag = "users", operation_id = "user.sessions",
    params(("id" = i64, Path)), security(("bearer" = ["user.manage"])),
    responses((status = 200, body = Vec<SessionView>), (status = 404, body = Problem)))]
pub async fn sessions(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<SessionView>>> {
    Ok(Json(self_service::sessions(&app, &who, id).await?))
}

/// Ends one of a user's sessions.
#[utoipa::path(delete, path = "/api/v1/users/{id}/sessions/{session}", tag = "users", operation_id = "user.session_end",
    params(("id" = i64, Path), ("session" = String, Path)), security(("bearer" = ["user.manage"])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn end_session(
    State(app): State<App>,
    Auth(who): Auth,
    Path((id, session)): Path<(i64, String)>,
) -> ApiResult<StatusCode> {
    self_service::end_session(&app, &who, id, &session).await?;
    Ok(StatusCode::NO_CONTENT)
}
