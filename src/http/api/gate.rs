//! The admission gate for pipelines and tools, and its public keys.

use axum::extract::State;
use serde::Deserialize;

use crate::App;
use crate::calendar::parse_date;
use crate::error::Error;
use crate::gate::admission::Jwks;
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
