//! Outbound webhook subscriptions.

use axum::extract::State;
use axum::http::StatusCode;

use crate::App;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem};
use crate::webhooks::{self, CreateWebhook, UpdateWebhook, WebhookView};

/// Subscribes a URL to events (delivered through the outbox with retries and dead letters).
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "webhook.create",
    request_body = CreateWebhook, security(("bearer" = ["system.manage"])),
    responses((status = 201, body = WebhookView),
               (status = 422, body = Problem, description = "invalid_url, invalid_events, invalid_format, invalid_secret")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<CreateWebhook>,
) -> ApiResult<(StatusCode, Json<WebhookView>)> {
    Ok((
        StatusCode::CREATED,
        Json(webhooks::create(&app, &who, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "webhooks", operation_id = "webhook.list",
    security(("bearer" = ["system.manage"])), responses((status = 200, body = Vec<WebhookView>)))]
pub async fn list(State(app): State<App>) -> ApiResult<Json<Vec<WebhookView>>> {
    Ok(Json(webhooks::list(&app).await?))
}

/// Changes a subscription; `{"active": false}` pauses it, `{"secret": ""}` stops signing.
#[utoipa::path(patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "webhook.update",
    params(("id" = i64, Path)), request_body = UpdateWebhook, security(("bearer" = ["system.manage"])),
    responses((status = 200, body = WebhookView), (status = 404, body = Problem),
               (status = 422, body = Problem, description = "invalid_url, invalid_events, invalid_format, invalid_secret")))]
pub async fn update(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<UpdateWebhook>,
) -> ApiResult<Json<WebhookView>> {
    Ok(Json(webhooks::update(&app, &who, id, req).await?))
}

/// Deletes a subscription; its undelivered events become dead letters.
#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", operation_id = "webhook.delete",
    params(("id" = i64, Path)), security(("bearer" = ["system.manage"])),
    responses((status = 204), (status = 404, body = Problem)))]
pub async fn delete(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<StatusCode> {
    webhooks::delete(&app, &who, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
