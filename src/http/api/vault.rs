//! The credential vault and the second factor.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::App;
use crate::audit::Record;
use crate::db::vault::CredentialGrant;
use crate::http::guard::Auth;
use crate::http::problem::{ApiError, ApiResult, Json, Path, Problem};
use crate::vault::{
    self, CreateCredential, CreateGrant, CredentialView, RecoveryCodes, RevealAccess,
    RevealRequest, Revealed, RevokeGrant, RotateCredential, TotpEnrolment,
};

/// Stores a credential; the answer carries metadata only.
#[utoipa::path(post, path = "/api/v1/credentials", tag = "vault", operation_id = "credential.create",
    request_body = CreateCredential, security(("bearer" = ["credential.manage"])),
    responses((status = 201, body = CredentialView), (status = 409, body = Problem, description = "credential_exists"),
               (status = 422, body = Problem, description = "unknown_system, invalid_kind, invalid_secret, invalid_field, invalid_target")))]
pub async fn create(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<CreateCredential>,
) -> ApiResult<(StatusCode, Json<CredentialView>)> {
    Ok((
        StatusCode::CREATED,
        Json(vault::create(&app, &who, req).await?),
    ))
}

/// Credentials: metadata, the last reveal and the rotation state; never a secret.
#[utoipa::path(get, path = "/api/v1/credentials", tag = "vault", operation_id = "credential.list",
    security(("bearer" = ["credential.read"])), responses((status = 200, body = Vec<CredentialView>)))]
pub async fn list(State(app): State<App>) -> ApiResult<Json<Vec<CredentialView>>> {
    Ok(Json(vault::list(&app).await?))
}

#[utoipa::path(get, path = "/api/v1/credentials/{id}", tag = "vault", operation_id = "credential.get",
    params(("id" = i64, Path)), security(("bearer" = ["credential.read"])),
    responses((status = 200, body = CredentialView), (status = 404, body = Problem)))]
pub async fn get(State(app): State<App>, Path(id): Path<i64>) -> ApiResult<Json<CredentialView>> {
    Ok(Json(vault::get(&app, id).await?))
}

/// Reveals the secret when the policies allow it (a change in progress on its system assigned
/// to the caller, or an approved standing grant) and a fresh TOTP code is given. Every attempt
/// is audited; the secret leaves only after its audit entry committed.
#[utoipa::path(post, path = "/api/v1/credentials/{id}/reveal", tag = "vault", operation_id = "credential.reveal",
    params(("id" = i64, Path)), request_body = RevealRequest, security(("bearer" = ["credential.reveal"])),
    responses((status = 200, body = Revealed),
               (status = 403, body = Problem, description = "no_change_window, change_not_for_system, change_not_in_progress, not_assignee, totp_required, totp_invalid, totp_replayed, totp_not_enrolled, forbidden"),
               (status = 404, body = Problem), (status = 429, body = Problem, description = "too many wrong TOTP codes"),
               (status = 500, body = Problem, description = "credential_undecryptable, vault_key_unavailable")))]
pub async fn reveal(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<RevealRequest>,
) -> Response {
    match vault::reveal(&app, &who, id, req).await {
        Ok(r) => Json(r).into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Stores a new secret (after changing it on the target system). Admins rotate any
/// credential; the assignee of the change it was revealed for rotates that one.
#[utoipa::path(post, path = "/api/v1/credentials/{id}/rotate", tag = "vault", operation_id = "credential.rotate",
    params(("id" = i64, Path)), request_body = RotateCredential, security(("bearer" = ["credential.read"])),
    responses((status = 200, body = CredentialView, description = "the new version is stored (with `generate`: set on the database target too)"),
               (status = 403, body = Problem, description = "not_rotator"),
               (status = 404, body = Problem),
               (status = 409, body = Problem, description = "rotation_pending"),
               (status = 422, body = Problem, description = "invalid_field, invalid_secret, no_target"),
               (status = 500, body = Problem, description = "database_target_unavailable: the target did not take the new password; changeguard retries by itself")))]
pub async fn rotate(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<RotateCredential>,
) -> ApiResult<Json<CredentialView>> {
    Ok(Json(vault::rotate(&app, &who, id, req).await?))
}

/// Every audit entry about this credential (reveals allowed and refused, rotations, grants).
#[utoipa::path(get, path = "/api/v1/credentials/{id}/access-log", tag = "vault", operation_id = "credential.access_log",
    params(("id" = i64, Path)), security(("bearer" = ["audit.read"])),
    responses((status = 200, body = Vec<Record>), (status = 404, body = Problem)))]
pub async fn access_log(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<Record>>> {
    Ok(Json(vault::access_log(&app, id).await?))
}

/// Who can reveal this credential now, decided by the same policies as a reveal.
#[utoipa::path(get, path = "/api/v1/credentials/{id}/revealers", tag = "vault", operation_id = "credential.revealers",
    params(("id" = i64, Path)), security(("bearer" = ["credential.read"])),
    responses((status = 200, body = Vec<RevealAccess>), (status = 404, body = Problem)))]
pub async fn revealers(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<RevealAccess>>> {
    Ok(Json(vault::revealers(&app, id).await?))
}

/// Which credentials this user can reveal now.
#[utoipa::path(get, path = "/api/v1/users/{id}/revealable-credentials", tag = "vault", operation_id = "credential.revealable",
    params(("id" = i64, Path)), security(("bearer" = ["credential.read"])),
    responses((status = 200, body = Vec<RevealAccess>)))]
pub async fn revealable(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<RevealAccess>>> {
    Ok(Json(vault::revealable_by(&app, id).await?))
}

/// Gives a standing grant for one credential (expiry and reason mandatory); it counts only
/// once a second person approves it.
#[utoipa::path(post, path = "/api/v1/credentials/{id}/grants", tag = "vault", operation_id = "credential.grant",
    params(("id" = i64, Path)), request_body = CreateGrant, security(("bearer" = ["credential.grant"])),
    responses((status = 201, body = CredentialGrant), (status = 403, body = Problem, description = "self_grant"),
               (status = 422, body = Problem, description = "invalid_expiry, unknown_user, invalid_field")))]
pub async fn create_grant(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<CreateGrant>,
) -> ApiResult<(StatusCode, Json<CredentialGrant>)> {
    Ok((
        StatusCode::CREATED,
        Json(vault::create_grant(&app, &who, id, req).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/credentials/{id}/grants", tag = "vault", operation_id = "credential.grants",
    params(("id" = i64, Path)), security(("bearer" = ["credential.read"])),
    responses((status = 200, body = Vec<CredentialGrant>), (status = 404, body = Problem)))]
pub async fn grants(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<Vec<CredentialGrant>>> {
    Ok(Json(vault::grants(&app, id).await?))
}

/// Approves a standing grant: a second person, neither the granter nor the grantee.
#[utoipa::path(post, path = "/api/v1/credential-grants/{id}/approve", tag = "vault", operation_id = "credential.grant_approve",
    params(("id" = i64, Path)), security(("bearer" = ["credential.grant_approve"])),
    responses((status = 200, body = CredentialGrant), (status = 403, body = Problem, description = "self_approval"),
               (status = 409, body = Problem, description = "already_approved, grant_expired"), (status = 404, body = Problem)))]
pub async fn approve_grant(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
) -> ApiResult<Json<CredentialGrant>> {
    Ok(Json(vault::approve_grant(&app, &who, id).await?))
}

/// Ends a standing grant before its expiry (reason mandatory); the next reveal under it is
/// refused. Audited and notified to the granter and the grantee.
#[utoipa::path(post, path = "/api/v1/credential-grants/{id}/revoke", tag = "vault", operation_id = "credential.grant_revoke",
    params(("id" = i64, Path)), request_body = RevokeGrant, security(("bearer" = ["credential.grant"])),
    responses((status = 200, body = CredentialGrant), (status = 409, body = Problem, description = "already_revoked, grant_expired"),
               (status = 422, body = Problem, description = "invalid_field"), (status = 404, body = Problem)))]
pub async fn revoke_grant(
    State(app): State<App>,
    Auth(who): Auth,
    Path(id): Path<i64>,
    Json(req): Json<RevokeGrant>,
) -> ApiResult<Json<CredentialGrant>> {
    Ok(Json(vault::revoke_grant(&app, &who, id, req).await?))
}

/// Credentials revealed for the caller's changes that still wait for rotation.
#[utoipa::path(get, path = "/api/v1/me/credential-reminders", tag = "vault", operation_id = "me.credential_reminders",
    security(("bearer" = [])), responses((status = 200, body = Vec<CredentialView>)))]
pub async fn reminders(
    State(app): State<App>,
    Auth(who): Auth,
) -> ApiResult<Json<Vec<CredentialView>>> {
    Ok(Json(vault::reminders(&app, who.user_id).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpReEnrol {
    /// A current code or a recovery code of the confirmed second factor being replaced; not
    /// needed for a first enrolment.
    pub code: Option<String>,
}

/// Starts TOTP enrolment: the secret, its otpauth URI and a QR code of it. Replacing a
/// confirmed second factor needs a current code or recovery code (`{"code"}`); a first
/// enrolment needs no body. A replacement waits for `/confirm`: until then the confirmed
/// factor stays in force.
#[utoipa::path(post, path = "/api/v1/me/totp", tag = "vault", operation_id = "me.totp_enrol",
    request_body(content = Option<TotpReEnrol>), security(("bearer" = [])),
    responses((status = 200, body = TotpEnrolment),
               (status = 403, body = Problem, description = "totp_required, totp_invalid, totp_replayed (replacing a confirmed factor)"),
               (status = 429, body = Problem)))]
pub async fn totp_enrol(
    State(app): State<App>,
    Auth(who): Auth,
    body: Option<Json<TotpReEnrol>>,
) -> ApiResult<Json<TotpEnrolment>> {
    let code = body.and_then(|Json(b)| b.code);
    Ok(Json(vault::enrol_totp(&app, &who, code.as_deref()).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    pub code: String,
}

/// Confirms enrolment (or a pending replacement, which then takes the old factor's place)
/// with a current code of the new secret.
#[utoipa::path(post, path = "/api/v1/me/totp/confirm", tag = "vault", operation_id = "me.totp_confirm",
    request_body = TotpCode, security(("bearer" = [])),
    responses((status = 204), (status = 403, body = Problem, description = "totp_invalid, totp_replayed, totp_not_enrolled"),
               (status = 409, body = Problem, description = "totp_already_confirmed"), (status = 429, body = Problem)))]
pub async fn totp_confirm(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<TotpCode>,
) -> ApiResult<StatusCode> {
    vault::confirm_totp(&app, &who, &req.code).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ten new single-use recovery codes (older ones stop working); needs a current code.
#[utoipa::path(post, path = "/api/v1/me/totp/recovery-codes", tag = "vault", operation_id = "me.totp_recovery_codes",
    request_body = TotpCode, security(("bearer" = [])),
    responses((status = 201, body = RecoveryCodes), (status = 403, body = Problem, description = "totp_invalid, totp_replayed, totp_not_enrolled")))]
pub async fn recovery_codes(
    State(app): State<App>,
    Auth(who): Auth,
    Json(req): Json<TotpCode>,
) -> ApiResult<(StatusCode, Json<RecoveryCodes>)> {
    Ok((
        StatusCode::CREATED,
        Json(vault::recovery_codes(&app, &who, &req.code).await?),
    ))
}
