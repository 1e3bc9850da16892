//! The admission gate for pipelines and tools, and its public keys.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::App;
use crate::calendar::parse_date;
use crate::db::gate::GateEvent;
use crate::error::Error;
use crate::gate::admission::Jwks;
use crate::gate::events::{self, ReportEvent, Reported};
use crate::gate::{self, Admitted, GateCheck, Windows};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Problem, Query};

/// May a tool act on the system now? 200 with a signed admission only while an approved
/// change of the system is in progress inside its window; else 403 saying what would pass.
#[utoipa::path(post, path = "/api/v1/gate/check", tag = "gate", operation_id = "gate.check",
    request_body = GateCheck, security(("bearer" = ["gate.check"])),
    responses((status = 200, body = Admitted),
               (status = 403, body = Problem, description = "no_open_change, change_not_approved, change_not_started, outside_window, freeze_window, wrong_category, wrong_action")))]
pub async fn check(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<GateCheck>,
) -> ApiResult<Json<Admitted>> {
    Ok(Json(gate::check(&app, &who, req).await?))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct WindowsQuery {
    pub system: String,
    /// YYYY-MM-DD, bank time
    pub from: String,
    /// YYYY-MM-DD, inclusive
    pub to: String,
}

fn date(field: &str, s: &str) -> Result<chrono::NaiveDate, Error> {
    parse_date(s).ok_or_else(|| Error::BadRequest {
        code: "invalid_date",
        message: format!("{field} 须为 YYYY-MM-DD 格式的日期 / {field} must be a date YYYY-MM-DD"),
    })
}

/// The open change windows, freeze windows and working-day kinds of a range, for a CD tool's
/// sync windows and deploy freezes.
#[utoipa::path(get, path = "/api/v1/gate/windows", tag = "gate", operation_id = "gate.windows",
    params(WindowsQuery), security(("bearer" = ["gate.check"])),
    responses((status = 200, body = Windows), (status = 400, body = Problem, description = "invalid_date, invalid_range"),
               (status = 422, body = Problem, description = "calendar_year_missing")))]
pub async fn windows(
    State(app): State<App>,
    Query(q): Query<WindowsQuery>,
) -> ApiResult<Json<Windows>> {
    let (from, to) = (date("from", &q.from)?, date("to", &q.to)?);
    Ok(Json(gate::windows(&app, &q.system, from, to).await?))
}

/// The admission gate's public keys (JWK Set, Ed25519), for offline verification.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "gate", operation_id = "gate.jwks",
    security(()), responses((status = 200, body = Jwks)))]
pub async fn jwks(State(app): State<App>) -> Json<Jwks> {
    Json(app.admission.jwks().clone())
}

/// A tool reports a change it saw or made: matched to the change running on the system then
/// (recorded on its timeline), or recorded as an unauthorized change (违规变更), e-mailed to
/// management and compliance.
#[utoipa::path(post, path = "/api/v1/gate/events", tag = "gate", operation_id = "gate.report",
    request_body = ReportEvent, security(("bearer" = ["gate.report"])),
    responses((status = 201, body = Reported),
               (status = 422, body = Problem, description = "unknown_system, occurred_in_future, invalid_field")))]
pub async fn report(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<ReportEvent>,
) -> ApiResult<(StatusCode, Json<Reported>)> {
    Ok((
        StatusCode::CREATED,
        Json(events::report(&app, &who, req).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// YYYY-MM-DD, bank time
    pub from: String,
    /// YYYY-MM-DD, inclusive
    pub to: String,
    /// Only the unauthorized changes.
    pub unauthorized: Option<bool>,
}

/// Reported events, oldest first.
#[utoipa::path(get, path = "/api/v1/gate/events", tag = "gate", operation_id = "gate.events",
    params(EventsQuery), security(("bearer" = ["change.read"])),
    responses((status = 200, body = Vec<GateEvent>), (status = 400, body = Problem, description = "invalid_date, invalid_range")))]
pub async fn list_events(
    State(app): State<App>,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<Vec<GateEvent>>> {
    let (from, to) = (date("from", &q.from)?, date("to", &q.to)?);
    Ok(Json(
        events::list(&app, from, to, q.unauthorized.unwrap_or(false)).await?,
    ))
}
