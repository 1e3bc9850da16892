//! Requests for privileged roles, decided by a second person.

use axum::extract::State;
use serde::Deserialize;

use crate::App;
use crate::accounts::requests::{self, RefuseRequest};
use crate::db::role_requests::{RequestStatus, RoleRequest};
use crate::error::Error;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `pending`, `active`, `refused` or `expired`; none: all.
    pub status: Option<String>,
}

/// Requests for privileged roles, newest first (at most 500).
#[utoipa::path(get, path = "/api/v1/role-grants", tag = "users", operation_id = "role_request.list",
    params(ListQuery), security(("bearer" = ["role.grant"])),
    responses((status = 200, body = Vec<RoleRequest>), (status = 422, body = Problem, description = "invalid_status")))]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Json<Vec<RoleRequest>>> {
    Ok(Json(requests::list(&app, q.status()?).await?))
}

impl ListQuery {
    /// The status asked for, if any.
    pub fn status(&self) -> Result<Option<RequestStatus>, Error> {
        self.status
            .as_deref()
            .map(|s| {
                RequestStatus::parse(s).ok_or_else(|| {
                    Error::invalid(
                        "invalid_status",
                        "status 须为 pending、active、refused 或 expired / status must be pending, active, refused or expired",
                    )
                })
            })
            .transpose()
    }
}

/// A second person (neither the one who asked nor the grantee) approves: the role is in force.
#[utoipa::path(post, path = "/api/v1/role-grants/{id}/approve", tag = "users", operation_id = "role_request.approve",
    params(("id" = i64, Path)), security(("bearer" = ["role.grant"])),
    responses((status = 200, body = RoleRequest, description = "`status` is `active`"),
               (status = 403, body = Problem, description = "self_approval, self_grant, role_not_grantable, incompatible_roles, last_admin"),
               (status = 404, body = Problem),
               (status = 409, body = Problem, description = "request_decided, request_expired, user_disabled")))]
pub async fn approve(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<RoleRequest>> {
    Ok(Json(requests::approve(&app, &who, id).await?))
}

/// Refuses a request, with the reason (the one who asked may withdraw it this way).
#[utoipa::path(post, path = "/api/v1/role-grants/{id}/refuse", tag = "users", operation_id = "role_request.refuse",
    params(("id" = i64, Path)), request_body = RefuseRequest, security(("bearer" = ["role.grant"])),
    responses((status = 200, body = RoleRequest, description = "`status` is `refused`"),
               (status = 403, body = Problem, description = "role_not_grantable"),
               (status = 404, body = Problem),
               (status = 409, body = Problem, description = "request_decided, request_expired"),
               (status = 422, body = Problem, description = "invalid_field, invalid_text")))]
pub async fn refuse(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<RefuseRequest>,
) -> ApiResult<Json<RoleRequest>> {
    Ok(Json(requests::refuse(&app, &who, id, req).await?))
}
