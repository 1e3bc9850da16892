//! HTTP: the router, the gate, problem+json, OpenAPI and operations endpoints.
//! Handlers are thin: extract, call the domain, map the error.

pub mod api;
pub mod client;
pub mod console;
pub mod contract;
pub mod envelope;
pub mod guard;
pub mod ops;
pub mod problem;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
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

/// The body limit and [`envelope::around`]: what every response goes through.
pub fn with_common_layers(router: Router) -> Router {
    router
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(envelope::around))
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::header;
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
