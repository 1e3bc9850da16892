//! Reading and verifying the audit trail.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::App;
use crate::audit::checkpoint::Written;
use crate::audit::{Record, Verification};
use crate::db::audit as audit_db;
use crate::error::Error;
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Problem, Query};

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

/// Walks the whole chain, reports entries beyond its head, and compares it with every signed
/// checkpoint of the server's checkpoint file (`CHANGEGUARD_AUDIT_CHECKPOINTS`): a trail
/// shorter than a checkpoint or different from it, and a checkpoint whose signature does not
/// verify, are findings (`ok` false).
#[utoipa::path(get, path = "/api/v1/audit/verify", tag = "audit", operation_id = "audit.verify",
    security(("bearer" = ["audit.read"])), responses((status = 200, body = Verification)))]
pub async fn verify(State(app): State<App>) -> ApiResult<Json<Verification>> {
    Ok(Json(app.verify_audit().await?))
}

/// Verifies the trail as `GET /api/v1/audit/verify` does and, intact, appends a signed
/// checkpoint of its head (seq and MAC) to the checkpoint file (audited as `audit.checkpoint`).
/// A checkpoint only witnesses what a reader of the trail can see, so reading it is enough.
#[utoipa::path(post, path = "/api/v1/audit/checkpoints", tag = "audit", operation_id = "audit.checkpoint",
    security(("bearer" = ["audit.read"])),
    responses((status = 201, body = Written),
        (status = 409, body = Problem, description = "audit_chain_broken: 审计轨迹未通过校验，未写入检查点 / the trail does not verify; nothing written")))]
pub async fn checkpoint(
    State(app): State<App>,
    Auth(who): Auth,
) -> ApiResult<(StatusCode, Json<Written>)> {
    Ok((
        StatusCode::CREATED,
        Json(crate::audit::checkpoint::on_demand(&app, &who).await?),
    ))
}
