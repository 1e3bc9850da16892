//! The role catalogue and questions about permissions.

use axum::extract::State;
use serde::{Deserialize, Serialize};

use crate::App;
use crate::accounts::{self, HolderView, UserPermissions};
use crate::http::guard::Auth;
use crate::http::problem::{ApiResult, Json, Path, Problem, Query};
use crate::rbac::{Facts, Resource};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RoleView {
    pub name: String,
    pub title_zh: String,
    pub title_en: String,
    pub description: String,
    /// Permissions this role carries, as decided by the Cedar policies.
    pub permissions: Vec<String>,
    /// Roles a holder may grant to others.
    pub grantable: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/roles", tag = "roles", operation_id = "role.list",
    security(("bearer" = [])), responses((status = 200, body = Vec<RoleView>)))]
pub async fn list(State(app): State<App>) -> Json<Vec<RoleView>> {
    let perms = app.policies.authorizer.role_permissions();
    Json(
        app.policies
            .roles
            .iter()
            .map(|(name, r)| RoleView {
                name: name.clone(),
                title_zh: r.title_zh.clone(),
                title_en: r.title_en.clone(),
                description: r.description.clone(),
                permissions: perms.get(name).cloned().unwrap_or_default(),
                grantable: r.grantable.clone(),
            })
            .collect(),
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct CheckQuery {
    pub permission: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CheckResult {
    pub permission: String,
    pub allowed: bool,
}

/// May the caller use `permission`?
#[utoipa::path(get, path = "/api/v1/authz/check", tag = "roles", operation_id = "authz.check",
    params(CheckQuery), security(("bearer" = [])), responses((status = 200, body = CheckResult)))]
pub async fn check(
    State(app): State<App>,
    Auth(who): Auth,
    Query(q): Query<CheckQuery>,
) -> Json<CheckResult> {
    let allowed = app
        .policies
        .authorizer
        .decide(&who, &q.permission, &Resource::Api, &Facts::default())
        .allowed;
    Json(CheckResult {
        permission: q.permission,
        allowed,
    })
}

/// Who holds `permission`, and through which role.
#[utoipa::path(get, path = "/api/v1/permissions/{permission}/holders", tag = "roles", operation_id = "permission.holders",
    params(("permission" = String, Path)), security(("bearer" = ["user.read"])),
    responses((status = 200, body = Vec<HolderView>), (status = 404, body = Problem)))]
pub async fn holders(
    State(app): State<App>,
    Path(permission): Path<String>,
) -> ApiResult<Json<Vec<HolderView>>> {
    Ok(Json(accounts::holders(&app, &permission).await?))
}

/// What a user may do now: their roles in force and the permissions these give (none while the
/// user is disabled).
#[utoipa::path(get, path = "/api/v1/users/{id}/permissions", tag = "roles", operation_id = "user.permissions",
    params(("id" = i64, Path)), security(("bearer" = ["user.read"])),
    responses((status = 200, body = UserPermissions), (status = 404, body = Problem)))]
pub async fn user_permissions(
    State(app): State<App>,
    Path(id): Path<i64>,
) -> ApiResult<Json<UserPermissions>> {
    Ok(Json(accounts::permissions_of(&app, id).await?))
}
