//! The JSON API under `/api/v1`.

pub mod audit;
pub mod auth;
pub mod roles;
pub mod users;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::App;

/// Every API route; each declares its access in its `#[utoipa::path]`.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::grant))
        .routes(routes!(users::revoke))
        .routes(routes!(roles::list))
        .routes(routes!(roles::check))
        .routes(routes!(roles::holders))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
}
