//! HTTP: the router, the gate, problem+json, OpenAPI and operations endpoints.
//! Handlers are thin: extract, call the domain, map the error.

pub mod api;
pub mod client;
pub mod console;
pub mod contract;
pub mod guard;
pub mod ops;
pub mod problem;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_swagger_ui::SwaggerUi;

use crate::App;
use guard::{Gate, RouteTable};
use problem::problem;

/// Largest request body accepted.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// The OpenAPI document and the API router, before the gate is applied.
pub fn api() -> (Router<App>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = api::routes().merge(ops::routes()).split_for_parts();
    doc.info.title = "changeguard".into();
    doc.info.description = Some(
        "变更管控服务 API / changeguard API: accounts, RBAC, audit trail, working-day calendar, change requests, credential vault, confidential assets. \
         Errors are application/problem+json with a stable `code`. Each operation's security scope is the \
         permission it requires."
            .into(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .build(),
        ),
    );
    (router, completed(doc))
}

/// The document with every error of every route stated ([`contract::complete`]).
fn completed(doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let Ok(mut json) = serde_json::to_value(&doc) else {
        return doc;
    };
    contract::complete(&mut json);
    serde_json::from_value(json).unwrap_or_else(|e| {
        tracing::error!(error = %e, "the completed OpenAPI document does not read back; serving it as generated");
        doc
    })
}

/// The whole application router.
pub fn router(app: App) -> anyhow::Result<Router> {
    let (api_router, doc) = api();
    let doc_json = serde_json::to_value(&doc)?;
    let table = RouteTable::from_openapi(&doc_json).map_err(anyhow::Error::msg)?;
    let gate = Gate {
        app: app.clone(),
        table: Arc::new(table),
    };
    let api_router = api_router
        .route_layer(middleware::from_fn_with_state(gate, guard::gate))
        .with_state(app.clone());

    console::Templates::get().map_err(anyhow::Error::msg)?;
    let router = Router::new()
        .merge(api_router)
        .merge(console::router(app))
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Redirect::to("/console") }),
        )
        .merge(SwaggerUi::new("/docs").url("/api/v1/openapi.json", doc))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not_found",
                "未找到 / Not found",
                Default::default(),
            )
        });
    Ok(with_common_layers(router))
}

/// What `metrics_listen` serves: `GET /metrics` without a token, and nothing else.
pub fn metrics_router() -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(ops::metrics_text))
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not_found",
                "未找到 / Not found",
                Default::default(),
            )
        })
}

/// Body limit, problem documents for bare errors, metrics, request ids, access log, security
/// headers, panic catching and a timeout: what every response goes through.
pub fn with_common_layers(router: Router) -> Router {
    let x_request_id = HeaderName::from_static("x-request-id");
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(problem_for_bare_errors))
        .layer(middleware::from_fn(ops::track))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(x_request_id.clone(), MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    // The URI's path only: query strings may carry feed tokens.
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
                })
                // One line per request is the access log, at debug (`CHANGEGUARD_LOG=info,tower_http=debug`):
                // at info it cost more than the request itself under load, and every deed is
                // in the audit trail and every request in the metrics. Server errors are logged
                // at error by the layer's failure hook whatever the level.
                .on_response(tower_http::trace::DefaultOnResponse::new().level(tracing::Level::DEBUG)))
                .layer(PropagateRequestIdLayer::new(x_request_id))
                .layer(security_header("x-content-type-options", "nosniff"))
                .layer(security_header("x-frame-options", "DENY"))
                .layer(security_header("referrer-policy", "no-referrer"))
                .layer(security_header(
                    "content-security-policy",
                    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
                ))
                .layer(security_header("cache-control", "no-store"))
                .layer(CatchPanicLayer::custom(|_panic| {
                    tracing::error!("a request handler panicked; the process lives on");
                    problem(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal_error",
                        "服务器内部错误 / Internal server error",
                        Default::default(),
                    )
                }))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Duration::from_secs(30),
                )),
        )
}

fn security_header(name: &'static str, value: &'static str) -> SetResponseHeaderLayer<HeaderValue> {
    SetResponseHeaderLayer::if_not_present(
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

/// Turns error responses that are not problem documents yet (405 from the router, 413 from a
/// body limit, …) into problem documents, so clients only ever see one error shape.
async fn problem_for_bare_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    // Problem documents, and the console's own HTML error pages, pass as they are.
    let is_problem = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes().starts_with(b"application/problem+json")
            || v.as_bytes().starts_with(b"text/html")
    });
    if is_problem {
        return resp;
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal_error",
        _ => "bad_request",
    };
    let reason = status.canonical_reason().unwrap_or("Error");
    let mut out = problem(status, code, reason, Default::default());
    for name in [header::ALLOW, header::RETRY_AFTER] {
        if let Some(v) = resp.headers().get(&name) {
            out.headers_mut().insert(name, v.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::routing::get;
    use tower::ServiceExt;

    use super::*;

    async fn boom() -> &'static str {
        panic!("boom")
    }

    #[tokio::test]
    async fn a_panic_becomes_a_500_problem_and_the_service_lives_on() {
        let router = with_common_layers(
            Router::new()
                .route("/boom", get(boom))
                .route("/fine", get(|| async { "fine" })),
        );
        let resp = router
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
        let resp = router
            .oneshot(Request::get("/fine").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }
}
