//! The email outbox as managers see it, and the retry of a dead message.

use axum::extract::State;
use serde::Deserialize;

use crate::App;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};
use crate::notify::{self, Notice};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct NoticeQuery {
    /// Messages about this change.
    pub change_id: Option<i64>,
    /// pending | sending | sent | failed | dead
    pub status: Option<String>,
}

/// Email notices, newest first (at most 500): recipients, subject, status, attempts, last error.
#[utoipa::path(get, path = "/api/v1/notifications", tag = "notifications", operation_id = "notification.list",
    params(NoticeQuery), security(("bearer" = ["notification.read"])),
    responses((status = 200, body = Vec<Notice>), (status = 422, body = Problem, description = "invalid_status")))]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<NoticeQuery>,
) -> ApiResult<Json<Vec<Notice>>> {
    Ok(Json(
        notify::list(&app, q.change_id, q.status.as_deref()).await?,
    ))
}

/// Puts a dead message back in the queue (audited); the sender tries again at once.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/retry", tag = "notifications", operation_id = "notification.retry",
    params(("id" = i64, Path)), security(("bearer" = ["notification.retry"])),
    responses((status = 200, body = Notice), (status = 404, body = Problem),
        (status = 409, body = Problem, description = "not_dead")))]
pub async fn retry(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<Notice>> {
    Ok(Json(notify::retry(&app, &who, id).await?))
}
