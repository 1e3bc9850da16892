//! Machine identities: service accounts (a pipeline, a deployment tool, a database executor)
//! and their API tokens. A service account has no password and no console; admins create it
//! and grant it roles for machines like anyone's (same separation of duties); it signs in with
//! `Authorization: Bearer cgt_…`. A token is shown once, stored as its hash, and dies on the
//! next request after it is revoked.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::App;
use crate::accounts::{check_username, not_found};
use crate::audit::Entry;
use crate::auth::{api_token, normalize_username};
use crate::db::StoreError;
use crate::db::tokens::{self as db, ApiToken, NewToken};
use crate::db::users::{self as users_db, AccountKind, NewUser, User};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::Principal;
use crate::text::{self, Lines};

/// The longest a token may live, and its life when none is asked for.
pub const MAX_TOKEN_DAYS: i64 = 366;
pub const DEFAULT_TOKEN_DAYS: i64 = 90;

/// The department recorded for machines.
const DEPARTMENT: &str = "服务账号 / service";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateServiceAccount {
    /// The account's name (its username): 2–64 lowercase letters, digits or . _ -
    pub name: String,
    pub display_name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// Names the token in the audit trail (e.g. `deploy-main`); unique per account.
    pub name: String,
    /// RFC 3339; default 90 days from now, at most 366.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new token: `token` is shown this once and never again (and never in `Debug` output).
#[derive(Serialize, utoipa::ToSchema)]
pub struct NewTokenView {
    pub id: i64,
    pub name: String,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for NewTokenView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewTokenView")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("token", &"[redacted]")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

pub async fn create(app: &App, who: &Principal, req: CreateServiceAccount) -> Result<User> {
    let name = normalize_username(&req.name);
    check_username(&name)?;
    text::required("display_name", &req.display_name, 100, Lines::One)?;
    text::optional("description", Some(&req.description), 1000, Lines::Many)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let user = users_db::insert(
        &mut tx,
        &NewUser {
            kind: AccountKind::Service,
            username: &name,
            display_name: req.display_name.trim(),
            department: DEPARTMENT,
            email: "",
            // Not a password hash: nothing verifies against it (and login never reads it).
            password_hash: "!service-account",
            password_temporary_until: None,
        },
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "username_taken",
            "该名称已被使用 / This name is already taken",
        ),
        other => other.into(),
    })?;
    users_db::set_description(&mut tx, user.id, req.description.trim()).await?;
    let entry = Entry::by(who, "service_account.create", format!("user:{}", user.id))
        .with_details(json!({"name": user.username}));
    tx.commit(&entry, now).await?;
    Ok(user)
}

/// The service account `id` (404 for a person's account: tokens are for machines only).
async fn service_account(app: &App, id: i64) -> Result<User> {
    let user = users_db::get(&app.db, id).await.map_err(not_found)?;
    if user.kind != AccountKind::Service {
        return Err(Error::NotFound {
            what: "service account",
        });
    }
    Ok(user)
}

pub async fn create_token(
    app: &App,
    who: &Principal,
    id: i64,
    req: CreateToken,
) -> Result<NewTokenView> {
    text::required("name", &req.name, 64, Lines::One)?;
    let now = app.now();
    let expires_at = req
        .expires_at
        .unwrap_or(now + TimeDelta::days(DEFAULT_TOKEN_DAYS));
    if expires_at <= now || expires_at > now + TimeDelta::days(MAX_TOKEN_DAYS) {
        return Err(Error::invalid(
            "invalid_expiry",
            format!(
                "到期时间须在将来且不超过 {MAX_TOKEN_DAYS} 天 / expires_at must be in the future and at most {MAX_TOKEN_DAYS} days away"
            ),
        ));
    }
    let account = service_account(app, id).await?;
    let (token, hash) = api_token::generate();
    let mut tx = Deed::open(app).await?;
    let row = db::insert(
        &mut tx,
        &NewToken {
            user_id: account.id,
            name: req.name.trim(),
            token_hash: &hash,
            created_by: who.user_id,
            expires_at,
        },
        now,
    )
    .await
    .map_err(|e| match e {
        StoreError::Unique => Error::conflict(
            "token_name_taken",
            "该账号已有同名令牌 / This account already has a token of that name",
        ),
        other => other.into(),
    })?;
    // The token itself never reaches the audit trail: its name and id do.
    let entry = Entry::by(who, "service_token.create", format!("user:{}", account.id))
        .with_details(json!({
            "account": account.username, "token_id": row.id, "token": row.name,
            "expires_at": row.expires_at,
        }));
    tx.commit(&entry, now).await?;
    Ok(NewTokenView {
        id: row.id,
        name: row.name,
        token,
        expires_at: row.expires_at,
    })
}

pub async fn tokens(app: &App, id: i64) -> Result<Vec<ApiToken>> {
    let account = service_account(app, id).await?;
    Ok(db::list(&app.db, account.id).await?)
}

pub async fn revoke_token(app: &App, who: &Principal, id: i64, token_id: i64) -> Result<()> {
    let account = service_account(app, id).await?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let row = db::revoke(&mut tx, account.id, token_id, now)
        .await
        .map_err(|e| match e {
            StoreError::NotFound => Error::NotFound { what: "token" },
            other => other.into(),
        })?;
    let entry = Entry::by(who, "service_token.revoke", format!("user:{}", account.id))
        .with_details(json!({"account": account.username, "token_id": row.id, "token": row.name}));
    tx.commit(&entry, now).await?;
    Ok(())
}
