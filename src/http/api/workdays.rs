//! The working-day calendar and the notice rule.

use axum::extract::State;
use chrono::NaiveDate;
use serde::Deserialize;

use crate::App;
use crate::calendar::{DayInfo, EarliestStart, parse_date};
use crate::error::Error;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};
use crate::workdays::{self, Status, YearInput, YearLoaded};

fn date(field: &str, s: &str) -> Result<NaiveDate, Error> {
    parse_date(s).ok_or_else(|| Error::BadRequest {
        code: "invalid_date",
        message: format!(
            "{field} 须为 YYYY-MM-DD 格式的日期 / {field} must be a date YYYY-MM-DD, got {s:?}"
        ),
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EarliestQuery {
    /// YYYY-MM-DD
    pub notified_on: String,
}

/// The earliest start for a notice given on `notified_on` (default notice rule).
#[utoipa::path(get, path = "/api/v1/working-days/earliest-start", tag = "calendar", operation_id = "calendar.earliest_start",
    params(EarliestQuery), security(("bearer" = [])),
    responses((status = 200, body = inline(EarliestStartDoc)), (status = 400, body = Problem, description = "invalid_date"),
               (status = 422, body = Problem, description = "calendar_year_missing, with `year`")))]
pub async fn earliest_start(
    State(app): State<App>,
    Query(q): Query<EarliestQuery>,
) -> ApiResult<Json<EarliestStart>> {
    let d = date("notified_on", &q.notified_on)?;
    Ok(Json(workdays::earliest_start(&app, d).await?))
}

/// Shape of the earliest-start answer, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct EarliestStartDoc {
    #[schema(format = Date)]
    notified_on: String,
    #[schema(format = Date)]
    earliest_start: String,
    working_days_counted: Vec<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// YYYY-MM-DD
    pub from: String,
    /// YYYY-MM-DD (inclusive); at most 3 years after `from`
    pub to: String,
}

/// One entry a day: `{"date","working","kind","name"}`.
#[utoipa::path(get, path = "/api/v1/working-days", tag = "calendar", operation_id = "calendar.days",
    params(RangeQuery), security(("bearer" = [])),
    responses((status = 200, body = Vec<DayDoc>), (status = 400, body = Problem, description = "invalid_date, range_too_long"),
               (status = 422, body = Problem, description = "calendar_year_missing")))]
pub async fn days(
    State(app): State<App>,
    Query(q): Query<RangeQuery>,
) -> ApiResult<Json<Vec<DayInfo>>> {
    let (from, to) = (date("from", &q.from)?, date("to", &q.to)?);
    Ok(Json(workdays::days(&app, from, to).await?))
}

/// Shape of a day, for the OpenAPI document.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DayDoc {
    #[schema(format = Date)]
    date: String,
    working: bool,
    /// workday, weekend, holiday, makeup_workday
    kind: String,
    name: Option<String>,
}

/// Loaded years; warns from 1 November while next year is missing.
#[utoipa::path(get, path = "/api/v1/working-days/status", tag = "calendar", operation_id = "calendar.status",
    security(("bearer" = [])), responses((status = 200, body = Status)))]
pub async fn status(State(app): State<App>) -> ApiResult<Json<Status>> {
    Ok(Json(workdays::status(&app).await?))
}

/// Loads (or replaces) a year from the official notice; in force at once, on every instance.
#[utoipa::path(put, path = "/api/v1/working-days/years/{year}", tag = "calendar", operation_id = "calendar.load_year",
    params(("year" = i32, Path)), request_body = YearInput, security(("bearer" = ["calendar.manage"])),
    responses((status = 200, body = YearLoaded), (status = 422, body = Problem, description = "calendar_invalid")))]
pub async fn load_year(
    State(app): State<App>,
    Auth(who): Auth,
    Path(year): Path<i32>,
    Json(req): Json<YearInput>,
) -> ApiResult<Json<YearLoaded>> {
    Ok(Json(workdays::load_year(&app, &who, year, req).await?))
}
