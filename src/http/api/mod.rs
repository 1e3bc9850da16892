//! The JSON API under `/api/v1`.

pub mod agenda;
pub mod assets;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod dbaccess;
pub mod delegations;
pub mod gate;
pub mod me;
pub mod notifications;
pub mod password_resets;
pub mod role_grants;
pub mod roles;
pub mod service_accounts;
pub mod systems;
pub mod users;
pub mod vault;
pub mod webhooks;
pub mod workdays;

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::App;

/// Every API route; each declares its access in its `#[utoipa::path]`.
pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(auth::login))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::me))
        .routes(routes!(me::change_password))
        .routes(routes!(me::sessions))
        .routes(routes!(me::end_session))
        .routes(routes!(users::create, users::list))
        .routes(routes!(users::get, users::update))
        .routes(routes!(users::grant))
        .routes(routes!(users::revoke))
        .routes(routes!(users::sessions))
        .routes(routes!(users::end_session))
        .routes(routes!(role_grants::list))
        .routes(routes!(role_grants::approve))
        .routes(routes!(role_grants::refuse))
        .routes(routes!(password_resets::list))
        .routes(routes!(password_resets::approve))
        .routes(routes!(password_resets::refuse))
        .routes(routes!(roles::list))
        .routes(routes!(roles::check))
        .routes(routes!(roles::holders))
        .routes(routes!(roles::user_permissions))
        .routes(routes!(audit::list))
        .routes(routes!(audit::verify))
        .routes(routes!(audit::checkpoint))
        .routes(routes!(workdays::earliest_start))
        .routes(routes!(workdays::days))
        .routes(routes!(workdays::status))
        .routes(routes!(workdays::load_year))
        .routes(routes!(systems::create, systems::list))
        .routes(routes!(systems::update))
        .routes(routes!(changes::file, changes::list))
        .routes(routes!(changes::get, changes::amend))
        .routes(routes!(changes::approve))
        .routes(routes!(changes::reject))
        .routes(routes!(changes::start))
        .routes(routes!(changes::complete))
        .routes(routes!(changes::cancel))
        .routes(routes!(changes::review))
        .routes(routes!(changes::standard_changes))
        .routes(routes!(changes::file_standard))
        .routes(routes!(delegations::create, delegations::list))
        .routes(routes!(delegations::revoke))
        .routes(routes!(agenda::view))
        .routes(routes!(agenda::create_feed, agenda::revoke_feed))
        .routes(routes!(agenda::feed))
        .routes(routes!(agenda::changes_report))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::retry))
        .routes(routes!(vault::create, vault::list))
        .routes(routes!(vault::get))
        .routes(routes!(vault::reveal))
        .routes(routes!(vault::rotate))
        .routes(routes!(vault::access_log))
        .routes(routes!(vault::revealers))
        .routes(routes!(vault::revealable))
        .routes(routes!(vault::create_grant, vault::grants))
        .routes(routes!(vault::approve_grant))
        .routes(routes!(vault::revoke_grant))
        .routes(routes!(vault::reminders))
        .routes(routes!(vault::totp_enrol))
        .routes(routes!(vault::totp_confirm))
        .routes(routes!(vault::recovery_codes))
        .routes(routes!(assets::create, assets::list))
        .routes(routes!(assets::request, assets::list_disclosures))
        .routes(routes!(assets::approve))
        .routes(routes!(assets::refuse))
        .routes(routes!(service_accounts::create))
        .routes(routes!(
            service_accounts::create_token,
            service_accounts::tokens
        ))
        .routes(routes!(service_accounts::revoke_token))
        .routes(routes!(gate::check))
        .routes(routes!(gate::windows))
        .routes(routes!(gate::jwks))
        .routes(routes!(gate::report, gate::list_events))
        .routes(routes!(webhooks::create, webhooks::list))
        .routes(routes!(webhooks::update, webhooks::delete))
        .routes(routes!(dbaccess::create, dbaccess::list))
        .routes(routes!(dbaccess::delete))
        .routes(routes!(dbaccess::grant))
        .routes(routes!(dbaccess::accounts))
}
