//! Directory accounts and the role grants that came from the directory's groups.

use chrono::{DateTime, Utc};

use super::users::User;
use super::{Db, Result, Tx};
use crate::{on_pool, on_tx};

const COLS: &str = "id, username, display_name, department, email, active, kind, created_at, \
     updated_at, password_temporary_until";

/// The account with this username, of any kind.
pub async fn by_username(db: &Db, username: &str) -> Result<Option<User>> {
    let sql = format!("SELECT {COLS} FROM users WHERE username = $1");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, User>(
        sqlx::AssertSqlSafe(sql.as_str())
    )
    .bind(username)
    .fetch_optional(p)
    .await)?)
}

/// The active directory accounts, for the sync.
pub async fn active_accounts(db: &Db) -> Result<Vec<User>> {
    let sql = format!("SELECT {COLS} FROM users WHERE kind = 'directory' AND active ORDER BY id");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, User>(
        sqlx::AssertSqlSafe(sql.as_str())
    )
    .fetch_all(p)
    .await)?)
}

/// Which directory entry an account belongs to.
#[derive(Debug, sqlx::FromRow)]
pub struct Identity {
    #[sqlx(rename = "directory_dn")]
    pub dn: Option<String>,
    #[sqlx(rename = "directory_id")]
    pub id: Option<String>,
}

/// The entry account `user_id` was made for.
pub async fn identity(tx: &mut Tx, user_id: i64) -> Result<Identity> {
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Identity>(
        "SELECT directory_dn, directory_id FROM users WHERE id = $1"
    )
    .bind(user_id)
    .fetch_one(c)
    .await)?)
}

/// The username of the account made for the entry with lasting identifier `id`, if any.
pub async fn username_of_entry(tx: &mut Tx, id: &str) -> Result<Option<String>> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
        "SELECT username FROM users WHERE directory_id = $1"
    )
    .bind(id)
    .fetch_optional(c)
    .await)?)
}

/// What the directory says of a person.
pub struct Attributes<'a> {
    pub dn: &'a str,
    /// The entry's lasting identifier, when the directory gives one.
    pub id: &'a str,
    pub display_name: &'a str,
    pub department: &'a str,
    pub email: &'a str,
}

/// A directory account: no local password (the marker is no PHC string, so no hash verifies).
pub async fn insert(
    tx: &mut Tx,
    username: &str,
    a: &Attributes<'_>,
    now: DateTime<Utc>,
) -> Result<User> {
    let sql = format!(
        "INSERT INTO users (username, display_name, department, email, password_hash, active, \
         kind, created_at, updated_at, directory_dn, directory_id) \
         VALUES ($1, $2, $3, $4, '!directory', TRUE, 'directory', $5, $5, $6, $7) RETURNING {COLS}"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, User>(
        sqlx::AssertSqlSafe(sql.as_str())
    )
    .bind(username)
    .bind(a.display_name)
    .bind(a.department)
    .bind(a.email)
    .bind(now)
    .bind(a.dn)
    .bind(a.id)
    .fetch_one(c)
    .await)?)
}

/// Brings a directory account's attributes up to date (its identifier is kept once known).
pub async fn update(tx: &mut Tx, id: i64, a: &Attributes<'_>, now: DateTime<Utc>) -> Result<User> {
    let sql = format!(
        "UPDATE users SET display_name = $2, department = $3, email = $4, directory_dn = $5, \
         directory_id = COALESCE(directory_id, $7), updated_at = $6 \
         WHERE id = $1 AND kind = 'directory' RETURNING {COLS}"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, User>(
        sqlx::AssertSqlSafe(sql.as_str())
    )
    .bind(id)
    .bind(a.display_name)
    .bind(a.department)
    .bind(a.email)
    .bind(a.dn)
    .bind(now)
    .bind(a.id)
    .fetch_one(c)
    .await)?)
}

/// The roles a user holds from the directory.
pub async fn directory_roles(tx: &mut Tx, user_id: i64) -> Result<Vec<String>> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
        "SELECT role FROM role_grants WHERE user_id = $1 AND source = 'directory' ORDER BY role"
    )
    .bind(user_id)
    .fetch_all(c)
    .await)?)
}

/// Grants a role from the directory; a grant already there (an admin's) stays as it is.
pub async fn add_grant(tx: &mut Tx, user_id: i64, role: &str, now: DateTime<Utc>) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "INSERT INTO role_grants (user_id, role, granted_by, granted_at, expires_at, source) \
         VALUES ($1, $2, NULL, $3, NULL, 'directory') ON CONFLICT (user_id, role) DO NOTHING"
    )
    .bind(user_id)
    .bind(role)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Removes a grant that came from the directory (never an admin's).
pub async fn remove_grant(tx: &mut Tx, user_id: i64, role: &str) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "DELETE FROM role_grants WHERE user_id = $1 AND role = $2 AND source = 'directory'"
    )
    .bind(user_id)
    .bind(role)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

/// Disables a directory account.
pub async fn disable(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE users SET active = FALSE, updated_at = $2 WHERE id = $1 AND kind = 'directory'"
    )
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// [`by_username`] inside a write transaction.
pub async fn by_username_tx(tx: &mut Tx, username: &str) -> Result<Option<User>> {
    let sql = format!("SELECT {COLS} FROM users WHERE username = $1");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, User>(
        sqlx::AssertSqlSafe(sql.as_str())
    )
    .bind(username)
    .fetch_optional(c)
    .await)?)
}
