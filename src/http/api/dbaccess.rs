//! Database targets of the systems register and just-in-time database accounts.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::App;
use crate::db::dbaccess::Account;
use crate::dbaccess::{self, Access, AccessRequest, CreateTarget, TargetView};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};

/// Registers a database of a system, with the admin credential the server uses and the grants
/// per change action.
#[utoipa::path(post, path = "/api/v1/systems/{key}/databases", tag = "database access", operation_id = "database_target.create",
    params(("key" = String, Path)), request_body = CreateTarget, security(("bearer" = ["system.manage"])),
    responses((status = 201, body = TargetView), (status = 404, body = Problem, description = "no such system"),
               (status = 409, body = Problem, description = "target_exists"),
               (status = 422, body = Problem, description = "invalid_engine, invalid_database, invalid_grants, unknown_credential, credential_not_for_system")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Path(key): Path<String>,
    Json(req): Json<CreateTarget>,
) -> ApiResult<(StatusCode, Json<TargetView>)> {
    Ok((
        StatusCode::CREATED,
        Json(dbaccess::create_target(&app, &who, &key, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/systems/{key}/databases", tag = "database access", operation_id = "database_target.list",
    params(("key" = String, Path)), security(("bearer" = ["system.manage"])),
    responses((status = 200, body = Vec<TargetView>)))]
pub async fn list(
    State(app): State<App>,
    Path(key): Path<String>,
) -> ApiResult<Json<Vec<TargetView>>> {
    Ok(Json(dbaccess::targets(&app, &key).await?))
}

#[utoipa::path(delete, path = "/api/v1/systems/{key}/databases/{id}", tag = "database access", operation_id = "database_target.delete",
    params(("key" = String, Path), ("id" = i64, Path)), security(("bearer" = ["system.manage"])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete(
    State(app): State<App>,
    Auth(who): Auth,
    Path((key, id)): Path<(String, i64)>,
) -> ApiResult<StatusCode> {
    dbaccess::delete_target(&app, &who, &key, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A temporary database account for the assignee of a database change in progress, inside its
/// window; dropped when the change ends or its window is over. The password is shown once.
#[utoipa::path(post, path = "/api/v1/changes/{id}/database-access", tag = "database access", operation_id = "database_access.grant",
    params(("id" = i64, Path)), request_body = AccessRequest, security(("bearer" = ["credential.reveal"])),
    responses((status = 201, body = Access),
               (status = 403, body = Problem, description = "not_assignee, change_not_in_progress, not_a_database_change, outside_window, change_not_for_system, totp_required, totp_invalid"),
               (status = 404, body = Problem), (status = 429, body = Problem, description = "too many wrong TOTP codes"),
               (status = 500, body = Problem, description = "database_target_unavailable")))]
pub async fn grant(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<AccessRequest>,
) -> ApiResult<(StatusCode, Json<Access>)> {
    Ok((
        StatusCode::CREATED,
        Json(dbaccess::grant(&app, &who, id, req).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AccountsQuery {
    /// live | revoked | overdue (live, and its revocation failed at least once)
    pub status: Option<String>,
}

/// The just-in-time accounts, newest first; `attempts` > 0 on a live account: revocation is
/// failing and being retried.
#[utoipa::path(get, path = "/api/v1/database-accounts", tag = "database access", operation_id = "database_account.list",
    params(AccountsQuery), security(("bearer" = ["credential.manage"])),
    responses((status = 200, body = Vec<Account>), (status = 422, body = Problem, description = "invalid_status")))]
pub async fn accounts(
    State(app): State<App>,
    Query(q): Query<AccountsQuery>,
) -> ApiResult<Json<Vec<Account>>> {
    Ok(Json(dbaccess::accounts(&app, q.status.as_deref()).await?))
}
