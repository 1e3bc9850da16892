//! Change requests: filing, reading, the life cycle.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Serialize};

use crate::App;
use crate::changes::rules::Status;
use crate::changes::{
    self, AmendChange, ChangeView, Command, Comment, Completion, FileChange, FileStandardChange,
    Reason, Rejection, Review,
};
use crate::db::changes::{self as db, ChangeFilter, ChangeOrder, Event};
use crate::error::Error;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};

/// Files a change request. The notice date is today (bank time) by the server's clock; a start
/// before the earliest permitted start is refused with 422 `insufficient_notice`.
#[utoipa::path(post, path = "/api/v1/changes", tag = "changes", operation_id = "change.create",
    request_body = FileChange, security(("bearer" = ["change.create"])),
    responses((status = 201, body = ChangeView),
              (status = 422, body = Problem, description = "insufficient_notice (with notified_on, earliest_start), calendar_year_missing, freeze_window, unknown_system, invalid_window, …")))]
pub async fn file(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<FileChange>,
) -> ApiResult<(StatusCode, Json<ChangeView>)> {
    Ok((
        StatusCode::CREATED,
        Json(changes::file(&app, &who, req).await?),
    ))
}

/// A standard change the caller may file.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StandardChange {
    pub key: String,
    #[serde(flatten)]
    pub template: crate::policy::Template,
}

/// The standard changes (pre-approved templates of `policies/standard-changes.toml`) the caller
/// may file.
#[utoipa::path(get, path = "/api/v1/standard-changes", tag = "changes", operation_id = "change.standard_list",
    security(("bearer" = ["change.create"])), responses((status = 200, body = [StandardChange])))]
pub async fn standard_changes(
    State(app): State<App>,
    Auth(who): Auth,
) -> ApiResult<Json<Vec<StandardChange>>> {
    Ok(Json(
        app.policies
            .standard
            .templates
            .iter()
            .filter(|(_, t)| who.roles.iter().any(|r| t.roles.contains(r)))
            .map(|(key, t)| StandardChange {
                key: key.clone(),
                template: t.clone(),
            })
            .collect(),
    ))
}

/// Files a change from a standard-change template: approved at filing by the template (recorded
/// as such), still refused for a late notice or a freeze window.
#[utoipa::path(post, path = "/api/v1/standard-changes/{key}/changes", tag = "changes", operation_id = "change.create_standard",
    params(("key" = String, Path)), request_body = FileStandardChange, security(("bearer" = ["change.create"])),
    responses((status = 201, body = ChangeView),
              (status = 403, body = Problem, description = "template_not_allowed"),
              (status = 404, body = Problem, description = "no such standard change"),
              (status = 422, body = Problem, description = "insufficient_notice, freeze_window, invalid_systems, unknown_system, invalid_window, invalid_assignee, …")))]
pub async fn file_standard(
    State(app): State<App>,
    Auth(who): Auth,
    Path(key): Path<String>,
    Json(req): Json<FileStandardChange>,
) -> ApiResult<(StatusCode, Json<ChangeView>)> {
    Ok((
        StatusCode::CREATED,
        Json(changes::file_standard(&app, &who, &key, req).await?),
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub status: Option<String>,
    pub category: Option<String>,
    pub system: Option<String>,
    /// The requester's username.
    pub requester: Option<String>,
    /// The assignee's username.
    pub assignee: Option<String>,
    #[param(inline)]
    pub risk: Option<changes::Risk>,
    pub emergency: Option<bool>,
    /// Words in the title or the description (case-insensitive, taken literally).
    pub q: Option<String>,
    /// Windows ending after this instant (RFC 3339).
    pub from: Option<DateTime<FixedOffset>>,
    /// Windows starting before this instant (RFC 3339).
    pub to: Option<DateTime<FixedOffset>>,
    /// `start` (default), `start_desc`, `filed` (newest first), `updated` (newest first).
    #[param(inline)]
    pub sort: Option<ChangeOrder>,
    /// 1 to 1000, default 200.
    pub limit: Option<i64>,
    /// Rows to skip (paging), default 0.
    pub offset: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/changes", tag = "changes", operation_id = "change.list",
    params(ListQuery), security(("bearer" = ["change.read"])), responses((status = 200, body = Vec<ChangeView>)))]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<ChangeView>>> {
    if let Some(s) = &q.status
        && Status::parse(s).is_none()
    {
        return Err(Error::BadRequest {
            code: "invalid_query",
            message: format!("未知状态 / unknown status {s}"),
        }
        .into());
    }
    for (field, v) in [
        ("category", &q.category),
        ("system", &q.system),
        ("requester", &q.requester),
        ("assignee", &q.assignee),
        ("q", &q.q),
    ] {
        crate::text::optional(field, v.as_deref(), 200, crate::text::Lines::One)?;
    }
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(Error::BadRequest {
            code: "invalid_query",
            message: "limit 须在 1 到 1000 之间 / limit must be 1 to 1000".into(),
        }
        .into());
    }
    let filter = ChangeFilter {
        status: q.status.as_deref(),
        category: q.category.as_deref(),
        system: q.system.as_deref(),
        requester: q.requester.as_deref(),
        assignee: q.assignee.as_deref(),
        risk: q.risk.map(changes::Risk::as_str),
        emergency: q.emergency,
        text: q.q.as_deref(),
        from: q.from.map(|t| t.with_timezone(&Utc)),
        to: q.to.map(|t| t.with_timezone(&Utc)),
        start_after: None,
        sort: q.sort.unwrap_or_default(),
        limit,
        offset: i64::from(q.offset.unwrap_or(0)),
    };
    let out = changes::list(&app, &filter).await?;
    Ok(Json(out))
}

/// A change with its conflicts and its timeline.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangeDetail {
    #[serde(flatten)]
    pub change: ChangeView,
    pub events: Vec<Event>,
}

#[utoipa::path(get, path = "/api/v1/changes/{id}", tag = "changes", operation_id = "change.get",
    params(("id" = i64, Path)), security(("bearer" = ["change.read"])),
    responses((status = 200, body = ChangeDetail), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Path(id): Path<i64>) -> ApiResult<Json<ChangeDetail>> {
    let change = changes::get(&app, id).await?;
    let events = db::events(&app.db, id).await?;
    Ok(Json(ChangeDetail { change, events }))
}

/// Reschedules or amends (requester only). The new start is checked against the original
/// notice date; an approved change goes back to `submitted`. Category and systems are fixed.
#[utoipa::path(patch, path = "/api/v1/changes/{id}", tag = "changes", operation_id = "change.reschedule",
    params(("id" = i64, Path)), request_body = AmendChange, security(("bearer" = ["change.create"])),
    responses((status = 200, body = ChangeView), (status = 403, body = Problem, description = "not_requester"),
              (status = 409, body = Problem, description = "invalid_transition"),
              (status = 422, body = Problem, description = "insufficient_notice, immutable_field, …")))]
pub async fn amend(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<AmendChange>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(changes::amend(&app, &who, id, req).await?))
}

/// Approves the change's current approval stage (分级审批). Who may is decided by the stage (its
/// roles and department, the category's approve permission, one person once across the stages)
/// or by a delegation in force to the caller; the last stage approved approves the change.
#[utoipa::path(post, path = "/api/v1/changes/{id}/approve", tag = "changes", operation_id = "change.approve",
    params(("id" = i64, Path)), request_body = Comment, security(("bearer" = ["change.read"])),
    responses((status = 200, body = ChangeView),
              (status = 403, body = Problem, description = "not_an_approver_of_this_stage, self_approval, emergency_approval_required, no_delegation, incompatible_duties"),
              (status = 409, body = Problem, description = "invalid_transition")))]
pub async fn approve(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<Comment>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(
        changes::transition(&app, &who, id, Command::Approve(req)).await?,
    ))
}

/// Rejects the change at its current approval stage (who may: as for approving).
#[utoipa::path(post, path = "/api/v1/changes/{id}/reject", tag = "changes", operation_id = "change.reject",
    params(("id" = i64, Path)), request_body = Rejection, security(("bearer" = ["change.read"])),
    responses((status = 200, body = ChangeView),
              (status = 403, body = Problem, description = "not_an_approver_of_this_stage, self_approval, emergency_approval_required, no_delegation, incompatible_duties"),
              (status = 409, body = Problem, description = "invalid_transition")))]
pub async fn reject(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<Rejection>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(
        changes::transition(&app, &who, id, Command::Reject(req)).await?,
    ))
}

/// Starts an approved change: by its assignee, only inside the planned window.
#[utoipa::path(post, path = "/api/v1/changes/{id}/start", tag = "changes", operation_id = "change.start",
    params(("id" = i64, Path)), security(("bearer" = ["change.execute"])),
    responses((status = 200, body = ChangeView), (status = 403, body = Problem, description = "not_assignee"),
              (status = 409, body = Problem, description = "invalid_transition, outside_window")))]
pub async fn start(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(
        changes::transition(&app, &who, id, Command::Start).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/changes/{id}/complete", tag = "changes", operation_id = "change.complete",
    params(("id" = i64, Path)), request_body = Completion, security(("bearer" = ["change.execute"])),
    responses((status = 200, body = ChangeView), (status = 403, body = Problem, description = "not_assignee"),
              (status = 409, body = Problem, description = "invalid_transition")))]
pub async fn complete(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<Completion>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(
        changes::transition(&app, &who, id, Command::Complete(req)).await?,
    ))
}

/// Cancels a submitted or approved change (requester only).
#[utoipa::path(post, path = "/api/v1/changes/{id}/cancel", tag = "changes", operation_id = "change.cancel",
    params(("id" = i64, Path)), request_body = Reason, security(("bearer" = ["change.create"])),
    responses((status = 200, body = ChangeView), (status = 403, body = Problem, description = "not_requester"),
              (status = 409, body = Problem, description = "invalid_transition")))]
pub async fn cancel(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<Reason>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(
        changes::transition(&app, &who, id, Command::Cancel(req)).await?,
    ))
}

/// Post-implementation review of a completed emergency change (management).
#[utoipa::path(post, path = "/api/v1/changes/{id}/review", tag = "changes", operation_id = "change.review",
    params(("id" = i64, Path)), request_body = Review, security(("bearer" = ["change.approve_emergency"])),
    responses((status = 200, body = ChangeView), (status = 409, body = Problem, description = "invalid_transition")))]
pub async fn review(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<Review>,
) -> ApiResult<Json<ChangeView>> {
    Ok(Json(changes::review(&app, &who, id, req).await?))
}
