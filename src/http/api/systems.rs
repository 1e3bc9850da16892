//! The systems register.

use axum::extract::State;
use axum::http::StatusCode;

use crate::App;
use crate::changes::systems::{self, NewSystem, SystemPatch};
use crate::db::changes::{System, list_systems};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};

#[utoipa::path(post, path = "/api/v1/systems", tag = "changes", operation_id = "system.create",
    request_body = NewSystem, security(("bearer" = ["system.manage"])),
    responses((status = 201, body = System), (status = 409, body = Problem, description = "system_exists")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<NewSystem>,
) -> ApiResult<(StatusCode, Json<System>)> {
    Ok((
        StatusCode::CREATED,
        Json(systems::create(&app, &who, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/systems", tag = "changes", operation_id = "system.list",
    security(("bearer" = ["change.read"])), responses((status = 200, body = Vec<System>)))]
pub async fn list(State(app): State<App>) -> ApiResult<Json<Vec<System>>> {
    Ok(Json(list_systems(&app.db).await?))
}

#[utoipa::path(patch, path = "/api/v1/systems/{key}", tag = "changes", operation_id = "system.update",
    params(("key" = String, Path)), request_body = SystemPatch, security(("bearer" = ["system.manage"])),
    responses((status = 200, body = System), (status = 404, body = Problem)))]
pub async fn update(
    State(app): State<App>,
    Auth(who): Auth,
    Path(key): Path<String>,
    Json(req): Json<SystemPatch>,
) -> ApiResult<Json<System>> {
    Ok(Json(systems::update(&app, &who, &key, req).await?))
}
