//! Operations endpoints: liveness, readiness, Prometheus metrics; and request metrics.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::problem::{Json, problem};
use crate::App;

/// The process's one metrics recorder (metrics are process-wide by nature).
pub(super) fn recorder() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics_text))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok`, `ready`, or `degraded` (ready, but a dependency such as the directory is down).
    pub status: &'static str,
    /// With directory sign-in configured: `ok` or `unavailable` (only directory users are
    /// affected).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub directory: Option<&'static str>,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "ops.healthz",
    security(()), responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        directory: None,
    })
}

/// The database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "ops.readyz",
    security(()), responses((status = 200, body = Health), (status = 503, body = super::problem::Problem)))]
pub async fn readyz(State(app): State<App>) -> Response {
    match app.db.ping().await {
        Ok(()) => {
            let directory = crate::directory::reachable(&app).await;
            let status = if directory == Some(false) {
                "degraded"
            } else {
                "ready"
            };
            Json(Health {
                status,
                directory: directory.map(|up| if up { "ok" } else { "unavailable" }),
            })
            .into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "数据库不可用 / The database is unreachable",
                Default::default(),
            )
        }
    }
}

/// Prometheus text format, to a bearer of `ops.metrics` (an admin, or a service account of the
/// `monitoring` role). With `CHANGEGUARD_METRICS_LISTEN` set, also served there without a token.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "ops.metrics",
    security(("bearer" = ["ops.metrics"])), responses((status = 200, content_type = "text/plain")))]
pub async fn metrics_text() -> Response {
    let body = recorder().map(|h| h.render()).unwrap_or_default();
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}
