//! Reading and verifying the audit trail.

use axum::extract::State;
use serde::Deserialize;

use crate::App;
use crate::audit::{Record, Verification};
use crate::db::audit as audit_db;
use crate::error::Error;
use crate::http::problem::{ApiResult, Json, Query};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// 1 to 500, default 50.
    pub limit: Option<i64>,
    /// Entries with a sequence number below this one.
    pub before: Option<i64>,
}

/// Newest first.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", operation_id = "audit.list",
    params(AuditQuery), security(("bearer" = ["audit.read"])), responses((status = 200, body = Vec<Record>)))]
pub async fn list(
    State(app): State<App>,
    Query(q): Query<AuditQuery>,
) -> ApiResult<Json<Vec<Record>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(Error::BadRequest {
            code: "invalid_query",
            message: "limit 须在 1 到 500 之间 / limit must be 1 to 500".into(),
        }
        .into());
    }
    Ok(Json(audit_db::list(&app.db, limit, q.before).await?))
}

/// Walks the whole chain.
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", operation_id = "audit.verify",
    security(("bearer" = ["audit.read"])), responses((status = 200, body = Verification)))]
pub async fn verify(State(app): State<App>) -> ApiResult<Json<Verification>> {
    Ok(Json(audit_db::verify(&app.db, &app.sealer).await?))
}
