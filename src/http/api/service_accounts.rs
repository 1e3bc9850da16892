//! Machine identities and their API tokens.

use axum::extract::State;
use axum::http::StatusCode;

use crate::App;
use crate::db::tokens::ApiToken;
use crate::db::users::User;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};
use crate::service_accounts::{self, CreateServiceAccount, CreateToken, NewTokenView};

/// Creates a service account (no password, no console; roles for machines only).
#[utoipa::path(post, path = "/api/v1/service-accounts", tag = "gate", operation_id = "service_account.create",
    request_body = CreateServiceAccount, security(("bearer" = ["user.manage"])),
    responses((status = 201, body = User), (status = 409, body = Problem, description = "username_taken"),
               (status = 422, body = Problem, description = "invalid_username, invalid_field, invalid_text")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<CreateServiceAccount>,
) -> ApiResult<(StatusCode, Json<User>)> {
    let user = service_accounts::create(&app, &who, req).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// Issues an API token; the token is in this answer only and never again.
#[utoipa::path(post, path = "/api/v1/service-accounts/{id}/tokens", tag = "gate", operation_id = "service_token.create",
    params(("id" = i64, Path)), request_body = CreateToken, security(("bearer" = ["user.manage"])),
    responses((status = 201, body = NewTokenView), (status = 404, body = Problem, description = "no such service account"),
               (status = 409, body = Problem, description = "token_name_taken"),
               (status = 422, body = Problem, description = "invalid_expiry, invalid_field")))]
pub async fn create_token(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<CreateToken>,
) -> ApiResult<(StatusCode, Json<NewTokenView>)> {
    let t = service_accounts::create_token(&app, &who, id, req).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// The account's tokens: names, expiry, last use; never the tokens.
#[utoipa::path(get, path = "/api/v1/service-accounts/{id}/tokens", tag = "gate", operation_id = "service_token.list",
    params(("id" = i64, Path)), security(("bearer" = ["user.read"])),
    responses((status = 200, body = Vec<ApiToken>), (status = 404, body = Problem)))]
pub async fn tokens(State(app): State<App>, Path(id): Path<i64>) -> ApiResult<Json<Vec<ApiToken>>> {
    Ok(Json(service_accounts::tokens(&app, id).await?))
}

/// Revokes a token: refused from the next request on, on every instance.
#[utoipa::path(delete, path = "/api/v1/service-accounts/{id}/tokens/{token_id}", tag = "gate", operation_id = "service_token.revoke",
    params(("id" = i64, Path), ("token_id" = i64, Path)), security(("bearer" = ["user.manage"])),
    responses((status = 204), (status = 404, body = Problem, description = "no such live token")))]
pub async fn revoke_token(
    State(app): State<App>,
    Auth(who): Auth,
    Path((id, token_id)): Path<(i64, i64)>,
) -> ApiResult<StatusCode> {
    service_accounts::revoke_token(&app, &who, id, token_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
