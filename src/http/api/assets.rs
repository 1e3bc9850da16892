//! Confidential assets (Art. 21) and their disclosures.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::App;
use crate::assets::{self, CreateAsset, RequestDisclosure};
use crate::db::assets::{Asset, Disclosure};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};

#[utoipa::path(post, path = "/api/v1/assets", tag = "assets", operation_id = "asset.create",
    request_body = CreateAsset, security(("bearer" = ["asset.manage"])),
    responses((status = 201, body = Asset), (status = 409, body = Problem, description = "asset_exists"),
               (status = 422, body = Problem, description = "invalid_kind, unknown_user, invalid_field")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<CreateAsset>,
) -> ApiResult<(StatusCode, Json<Asset>)> {
    Ok((
        StatusCode::CREATED,
        Json(assets::create(&app, &who, req).await?),
    ))
}

/// The register of development documents and source-code repositories.
#[utoipa::path(get, path = "/api/v1/assets", tag = "assets", operation_id = "asset.list",
    security(("bearer" = ["asset.read"])), responses((status = 200, body = Vec<Asset>)))]
pub async fn list(State(app): State<App>) -> ApiResult<Json<Vec<Asset>>> {
    Ok(Json(assets::list(&app).await?))
}

/// Requests to hand the asset to a third party; needs a manager and a compliance approval.
#[utoipa::path(post, path = "/api/v1/assets/{id}/disclosures", tag = "assets", operation_id = "disclosure.request",
    params(("id" = i64, Path)), request_body = RequestDisclosure, security(("bearer" = ["disclosure.request"])),
    responses((status = 201, body = Disclosure), (status = 404, body = Problem), (status = 422, body = Problem)))]
pub async fn request(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<RequestDisclosure>,
) -> ApiResult<(StatusCode, Json<Disclosure>)> {
    Ok((
        StatusCode::CREATED,
        Json(assets::request(&app, &who, id, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/assets/{id}/disclosures", tag = "assets", operation_id = "disclosure.list",
    params(("id" = i64, Path)), security(("bearer" = ["asset.read"])),
    responses((status = 200, body = Vec<Disclosure>), (status = 404, body = Problem)))]
pub async fn list_disclosures(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Disclosure>>> {
    Ok(Json(assets::disclosures(&app, id).await?))
}

/// Approves as manager or as compliance officer (whichever approval the caller's roles give
/// and is still missing); approved once both are there.
#[utoipa::path(post, path = "/api/v1/disclosures/{id}/approve", tag = "assets", operation_id = "disclosure.approve",
    params(("id" = i64, Path)), security(("bearer" = ["disclosure.approve"])),
    responses((status = 200, body = Disclosure),
               (status = 403, body = Problem, description = "self_approval, second_approver_required, approver_role_required"),
               (status = 409, body = Problem, description = "invalid_transition"), (status = 404, body = Problem)))]
pub async fn approve(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<Disclosure>> {
    Ok(Json(assets::approve(&app, &who, id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refusal {
    pub reason: String,
}

#[utoipa::path(post, path = "/api/v1/disclosures/{id}/refuse", tag = "assets", operation_id = "disclosure.refuse",
    params(("id" = i64, Path)), request_body = Refusal, security(("bearer" = ["disclosure.approve"])),
    responses((status = 200, body = Disclosure), (status = 403, body = Problem, description = "self_approval"),
               (status = 409, body = Problem, description = "invalid_transition"), (status = 404, body = Problem)))]
pub async fn refuse(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<Refusal>,
) -> ApiResult<Json<Disclosure>> {
    Ok(Json(assets::refuse(&app, &who, id, &req.reason).await?))
}
