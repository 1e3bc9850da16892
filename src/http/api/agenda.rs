//! The change calendar, the iCalendar feed and reports.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::App;
use crate::calendar::parse_date;
use crate::changes::agenda::{self, CalendarDay, Feed};
use crate::changes::report::{self, ChangeReport};
use crate::error::Error;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Problem, Query};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    /// YYYY-MM-DD (bank time)
    pub from: String,
    /// YYYY-MM-DD, inclusive
    pub to: String,
}

fn range(q: &DateRange) -> Result<(chrono::NaiveDate, chrono::NaiveDate), Error> {
    let parse = |field: &str, s: &str| {
        parse_date(s).ok_or_else(|| Error::BadRequest {
            code: "invalid_date",
            message: format!("{field} 须为 YYYY-MM-DD / {field} must be YYYY-MM-DD, got {s:?}"),
        })
    };
    Ok((parse("from", &q.from)?, parse("to", &q.to)?))
}

/// One entry a day: its working-day kind and name, and the changes overlapping it.
#[utoipa::path(get, path = "/api/v1/calendar", tag = "calendar", operation_id = "calendar.view",
    params(DateRange), security(("bearer" = ["calendar.read"])),
    responses((status = 200, body = Vec<CalendarDay>), (status = 400, body = Problem)))]
pub async fn view(
    State(app): State<App>,
    Query(q): Query<DateRange>,
) -> ApiResult<Json<Vec<CalendarDay>>> {
    let (from, to) = range(&q)?;
    Ok(Json(agenda::view(&app, from, to).await?))
}

/// Creates or rotates the caller's personal feed token; the token is shown once.
#[utoipa::path(post, path = "/api/v1/me/calendar-feed", tag = "calendar", operation_id = "calendar.feed_create",
    security(("bearer" = ["calendar.read"])), responses((status = 201, body = Feed)))]
pub async fn create_feed(
    State(app): State<App>,
    Auth(who): Auth,
) -> ApiResult<(StatusCode, Json<Feed>)> {
    Ok((
        StatusCode::CREATED,
        Json(agenda::create_feed(&app, &who).await?),
    ))
}

#[utoipa::path(delete, path = "/api/v1/me/calendar-feed", tag = "calendar", operation_id = "calendar.feed_revoke",
    security(("bearer" = [])), responses((status = 204), (status = 404, body = Problem)))]
pub async fn revoke_feed(State(app): State<App>, Auth(who): Auth) -> ApiResult<StatusCode> {
    agenda::revoke_feed(&app, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    pub token: String,
}

/// RFC 5545 feed for calendar clients; authenticated by the personal token in the URL.
#[utoipa::path(get, path = "/api/v1/calendar.ics", tag = "calendar", operation_id = "calendar.feed",
    params(FeedQuery), security(()),
    responses((status = 200, content_type = "text/calendar"), (status = 401, body = Problem, description = "invalid_feed_token")))]
pub async fn feed(State(app): State<App>, Query(q): Query<FeedQuery>) -> ApiResult<Response> {
    let body = agenda::feed_ics(&app, &q.token).await?;
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    Ok(resp)
}

/// Counts by category, status and outcome; emergencies; refusals for late notice; success rate.
#[utoipa::path(get, path = "/api/v1/reports/changes", tag = "changes", operation_id = "report.changes",
    params(DateRange), security(("bearer" = ["change.read"])), responses((status = 200, body = ChangeReport)))]
pub async fn changes_report(
    State(app): State<App>,
    Query(q): Query<DateRange>,
) -> ApiResult<Json<ChangeReport>> {
    let (from, to) = range(&q)?;
    Ok(Json(report::changes(&app, from, to).await?))
}
