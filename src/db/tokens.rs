//! Service accounts' API tokens: only the SHA-256 of a token is stored.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;

use super::users::User;
use super::{Db, Result, Tx};
use crate::{on_pool, on_tx};

/// A token as its owner's admins see it: never the token itself.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub created_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

macro_rules! token_cols {
    () => {
        "id, user_id, name, created_by, created_at, expires_at, last_used_at, revoked_at"
    };
}

pub struct NewToken<'a> {
    pub user_id: i64,
    pub name: &'a str,
    pub token_hash: &'a str,
    pub created_by: i64,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert(tx: &mut Tx, t: &NewToken<'_>, now: DateTime<Utc>) -> Result<ApiToken> {
    let sql = concat!(
        "INSERT INTO api_tokens (user_id, name, token_hash, created_by, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ",
        token_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, ApiToken>(sql)
        .bind(t.user_id)
        .bind(t.name)
        .bind(t.token_hash)
        .bind(t.created_by)
        .bind(now)
        .bind(t.expires_at)
        .fetch_one(c)
        .await)?)
}

pub async fn list(db: &Db, user_id: i64) -> Result<Vec<ApiToken>> {
    let sql = concat!(
        "SELECT ",
        token_cols!(),
        " FROM api_tokens WHERE user_id = $1 ORDER BY id"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, ApiToken>(sql)
        .bind(user_id)
        .fetch_all(p)
        .await)?)
}

/// Revokes a live token of `user_id`; `NotFound` if there is none by that id.
pub async fn revoke(tx: &mut Tx, user_id: i64, id: i64, now: DateTime<Utc>) -> Result<ApiToken> {
    let sql = concat!(
        "UPDATE api_tokens SET revoked_at = $3 WHERE id = $1 AND user_id = $2 \
         AND revoked_at IS NULL RETURNING ",
        token_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, ApiToken>(sql)
        .bind(id)
        .bind(user_id)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

/// The service account behind a live token, with its roles in force at `now`.
pub struct TokenUser {
    pub user: User,
    pub roles: Vec<String>,
    pub token_id: i64,
    pub token_name: String,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn token_user(
    db: &Db,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<Option<TokenUser>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        role: Option<String>,
        token_id: i64,
        token_name: String,
        last_used_at: Option<DateTime<Utc>>,
    }
    let sql = "SELECT u.id, u.username, u.display_name, u.department, u.email, u.active, \
               u.kind, u.created_at, u.updated_at, u.password_temporary_until, g.role, t.id AS token_id, \
               t.name AS token_name, t.last_used_at FROM api_tokens t \
               JOIN users u ON u.id = t.user_id \
               LEFT JOIN role_grants g ON g.user_id = u.id \
               AND (g.expires_at IS NULL OR g.expires_at > $2) \
               WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2 \
               AND u.active AND u.kind = 'service' ORDER BY g.role";
    let rows = on_pool!(db, |p| sqlx::query_as::<_, Row>(sql)
        .bind(token_hash)
        .bind(now)
        .fetch_all(p)
        .await)?;
    let mut rows = rows.into_iter();
    let Some(first) = rows.next() else {
        return Ok(None);
    };
    let roles = std::iter::once(first.role)
        .chain(rows.map(|r| r.role))
        .flatten()
        .collect();
    Ok(Some(TokenUser {
        user: first.user,
        roles,
        token_id: first.token_id,
        token_name: first.token_name,
        last_used_at: first.last_used_at,
    }))
}

/// How stale "last used" may get: a token used all day is written once a minute, not on
/// every request.
pub const LAST_USED_RESOLUTION: TimeDelta = TimeDelta::seconds(60);

/// Notes a token's use (a single UPDATE outside any deed: it changes nobody's rights).
pub async fn touch(db: &Db, id: i64, now: DateTime<Utc>) -> Result<()> {
    let _turn = db.write_turn().await?;
    on_pool!(db, |p| sqlx::query(
        "UPDATE api_tokens SET last_used_at = $2 WHERE id = $1 \
         AND (last_used_at IS NULL OR last_used_at < $3)"
    )
    .bind(id)
    .bind(now)
    .bind(now - LAST_USED_RESOLUTION)
    .execute(p)
    .await
    .map(|_| ()))?;
    Ok(())
}
