//! Delegations of approval: `/api/v1/me/delegations`.

use axum::extract::State;
use axum::http::StatusCode;

use crate::App;
use crate::changes::delegations::{self, Delegate, DelegationView, MyDelegations};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};

/// Names a substitute who may decide approval stages in the caller's place during a period
/// (at most 90 days), never for a change the substitute requested or carries out, and never in
/// a role incompatible with the substitute's own. The delegate is told by e-mail.
#[utoipa::path(post, path = "/api/v1/me/delegations", tag = "changes", operation_id = "delegation.create",
    request_body = Delegate, security(("bearer" = [])),
    responses((status = 201, body = DelegationView),
              (status = 409, body = Problem, description = "delegation_overlaps"),
              (status = 422, body = Problem, description = "invalid_period, nothing_to_delegate, invalid_delegate, incompatible_delegate, invalid_text")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<Delegate>,
) -> ApiResult<(StatusCode, Json<DelegationView>)> {
    Ok((
        StatusCode::CREATED,
        Json(delegations::delegate(&app, &who, req).await?),
    ))
}

/// The caller's delegations: given, and received.
#[utoipa::path(get, path = "/api/v1/me/delegations", tag = "changes", operation_id = "delegation.list",
    security(("bearer" = [])), responses((status = 200, body = MyDelegations)))]
pub async fn list(State(app): State<App>, Auth(who): Auth) -> ApiResult<Json<MyDelegations>> {
    Ok(Json(delegations::mine(&app, &who).await?))
}

/// Ends a delegation the caller gave, at once.
#[utoipa::path(delete, path = "/api/v1/me/delegations/{id}", tag = "changes", operation_id = "delegation.revoke",
    params(("id" = i64, Path)), security(("bearer" = [])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    delegations::revoke(&app, &who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
