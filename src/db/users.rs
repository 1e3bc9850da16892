//! Users, sessions, role grants and login throttling.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, Tx};
use crate::{on_pool, on_tx};

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub department: String,
    pub email: String,
    pub active: bool,
    /// `person` (signs in with a password), `service` (a machine: API tokens only) or
    /// `directory` (a person who signs in through the bank's LDAP / Active Directory).
    #[sqlx(try_from = "String")]
    pub kind: AccountKind,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set when an admin chose the password (creation or reset): until then it signs in only to
    /// be changed (`must_change_password`), and not at all afterwards.
    pub password_temporary_until: Option<DateTime<Utc>>,
}

/// Who an account is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountKind {
    Person,
    Service,
    Directory,
}

impl AccountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Person => "person",
            AccountKind::Service => "service",
            AccountKind::Directory => "directory",
        }
    }
}

impl TryFrom<String> for AccountKind {
    type Error = super::CorruptValue;
    fn try_from(s: String) -> std::result::Result<Self, Self::Error> {
        match s.as_str() {
            "person" => Ok(AccountKind::Person),
            "service" => Ok(AccountKind::Service),
            "directory" => Ok(AccountKind::Directory),
            _ => Err(super::CorruptValue::new("users.kind", s)),
        }
    }
}

macro_rules! user_cols {
    () => {
        "id, username, display_name, department, email, active, kind, created_at, updated_at, \
         password_temporary_until"
    };
}

pub struct NewUser<'a> {
    pub kind: AccountKind,
    pub username: &'a str,
    pub display_name: &'a str,
    pub department: &'a str,
    pub email: &'a str,
    pub password_hash: &'a str,
    /// An admin chose the password: it is temporary until then.
    pub password_temporary_until: Option<DateTime<Utc>>,
}

pub async fn insert(tx: &mut Tx, u: &NewUser<'_>, now: DateTime<Utc>) -> Result<User> {
    let sql = concat!(
        "INSERT INTO users (username, display_name, department, email, password_hash, active, \
         kind, created_at, updated_at, password_temporary_until) \
         VALUES ($1, $2, $3, $4, $5, TRUE, $7, $6, $6, $8) RETURNING ",
        user_cols!()
    );
    let user = on_tx!(tx, |c| sqlx::query_as::<_, User>(sql)
        .bind(u.username)
        .bind(u.display_name)
        .bind(u.department)
        .bind(u.email)
        .bind(u.password_hash)
        .bind(now)
        .bind(u.kind.as_str())
        .bind(u.password_temporary_until)
        .fetch_one(c)
        .await)?;
    Ok(user)
}

pub async fn count(db: &Db) -> Result<i64> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM users"
    )
    .fetch_one(p)
    .await)?)
}

pub async fn get(db: &Db, id: i64) -> Result<User> {
    let sql = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, User>(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

pub async fn get_tx(tx: &mut Tx, id: i64) -> Result<User> {
    let sql = concat!("SELECT ", user_cols!(), " FROM users WHERE id = $1");
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, User>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

pub async fn list(db: &Db) -> Result<Vec<User>> {
    let sql = concat!("SELECT ", user_cols!(), " FROM users ORDER BY id");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, User>(sql)
        .fetch_all(p)
        .await)?)
}

/// The user and password hash for a login; `None` when no such user exists.
pub async fn credentials(db: &Db, username: &str) -> Result<Option<(User, String)>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        password_hash: String,
    }
    let sql = concat!(
        "SELECT ",
        user_cols!(),
        ", password_hash FROM users WHERE username = $1 AND kind = 'person'"
    );
    let row = on_pool!(db, |p| sqlx::query_as::<_, Row>(sql)
        .bind(username)
        .fetch_optional(p)
        .await)?;
    Ok(row.map(|r| (r.user, r.password_hash)))
}

/// A service account's description.
pub async fn set_description(tx: &mut Tx, id: i64, description: &str) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE users SET description = $2 WHERE id = $1"
    )
    .bind(id)
    .bind(description)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Fields a PATCH may change; `None` keeps the value.
#[derive(Debug, Default)]
pub struct UserChanges<'a> {
    pub display_name: Option<&'a str>,
    pub department: Option<&'a str>,
    pub email: Option<&'a str>,
    pub active: Option<bool>,
    /// A new password, and until when it is temporary (`None`: the holder chose it).
    pub password: Option<(&'a str, Option<DateTime<Utc>>)>,
}

pub async fn update(
    tx: &mut Tx,
    id: i64,
    ch: &UserChanges<'_>,
    now: DateTime<Utc>,
) -> Result<User> {
    let sql = concat!(
        "UPDATE users SET display_name = COALESCE($2, display_name), \
         department = COALESCE($3, department), email = COALESCE($4, email), \
         active = COALESCE($5, active), password_hash = COALESCE($6, password_hash), \
         password_temporary_until = CASE WHEN $8 THEN $9 ELSE password_temporary_until END, \
         updated_at = $7 WHERE id = $1 RETURNING ",
        user_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, User>(sql)
        .bind(id)
        .bind(ch.display_name)
        .bind(ch.department)
        .bind(ch.email)
        .bind(ch.active)
        .bind(ch.password.map(|(h, _)| h))
        .bind(now)
        .bind(ch.password.is_some())
        .bind(ch.password.and_then(|(_, until)| until))
        .fetch_one(c)
        .await)?)
}

// ---------------------------------------------------------------- sessions

/// The user behind a live session, with the roles in force now.
#[derive(Debug, Clone)]
pub struct SessionUser {
    pub user: User,
    pub roles: Vec<String>,
    /// When this answer runs out by itself: the session's end or the first expiry of a grant
    /// in force, whichever comes first.
    pub valid_until: DateTime<Utc>,
    pub scope: SessionScope,
}

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SessionScope {
    /// Everything the user's roles permit.
    Full,
    /// Signed in with a temporary password: only changing it.
    PasswordChange,
    /// A holder of a role that needs a second factor, without one yet: only enrolling it.
    Enrolment,
}

impl SessionScope {
    fn as_db(self) -> Option<&'static str> {
        match self {
            SessionScope::Full => None,
            SessionScope::PasswordChange => Some("password_change"),
            SessionScope::Enrolment => Some("enrolment"),
        }
    }
}

impl TryFrom<Option<String>> for SessionScope {
    type Error = super::CorruptValue;
    fn try_from(s: Option<String>) -> std::result::Result<Self, Self::Error> {
        match s.as_deref() {
            None => Ok(SessionScope::Full),
            Some("password_change") => Ok(SessionScope::PasswordChange),
            Some("enrolment") => Ok(SessionScope::Enrolment),
            Some(other) => Err(super::CorruptValue::new(
                "sessions.scope",
                other.to_string(),
            )),
        }
    }
}

/// A session as its owner (or an admin) sees it in the list.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct SessionRow {
    pub id: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The client address it signed in from, when known.
    pub address: Option<String>,
    #[sqlx(try_from = "Option<String>")]
    pub scope: SessionScope,
}

/// The live sessions of a user, newest first.
pub async fn sessions_of(db: &Db, user_id: i64, now: DateTime<Utc>) -> Result<Vec<SessionRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, SessionRow>(
        "SELECT id, created_at, expires_at, address, scope FROM sessions \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 \
         ORDER BY created_at DESC, id"
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(p)
    .await)?)
}

/// Ends one live session of `user_id`; false when there is none by that id.
pub async fn revoke_session_of(
    tx: &mut Tx,
    user_id: i64,
    id: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "UPDATE sessions SET revoked_at = $3 WHERE id = $1 AND user_id = $2 \
         AND revoked_at IS NULL AND expires_at > $3"
    )
    .bind(id)
    .bind(user_id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Ends every session of `user_id` but `keep`, and gives `keep` the scope `scope`.
pub async fn end_other_sessions(
    tx: &mut Tx,
    user_id: i64,
    keep: &str,
    scope: SessionScope,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE sessions SET revoked_at = $3 WHERE user_id = $1 AND id <> $2 \
         AND revoked_at IS NULL"
    )
    .bind(user_id)
    .bind(keep)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    set_session_scope(tx, user_id, keep, scope).await
}

/// Gives a session of `user_id` another scope (its limit lifted once the reason is gone).
pub async fn set_session_scope(
    tx: &mut Tx,
    user_id: i64,
    session: &str,
    scope: SessionScope,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE sessions SET scope = $3 WHERE id = $1 AND user_id = $2"
    )
    .bind(session)
    .bind(user_id)
    .bind(scope.as_db())
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// A session about to be opened.
pub struct NewSession<'a> {
    pub id: &'a str,
    pub user_id: i64,
    pub expires_at: DateTime<Utc>,
    pub scope: SessionScope,
    pub address: Option<&'a str>,
}

pub async fn insert_session(tx: &mut Tx, s: &NewSession<'_>, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO sessions (id, user_id, created_at, expires_at, scope, address) \
         VALUES ($1, $2, $3, $4, $5, $6)"
    )
    .bind(s.id)
    .bind(s.user_id)
    .bind(now)
    .bind(s.expires_at)
    .bind(s.scope.as_db())
    .bind(s.address)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The active user of a session that is neither revoked nor expired, with the roles in force
/// at `now`: one statement (one row per role in force, or one row with no role).
pub async fn session_user(
    db: &Db,
    session_id: &str,
    now: DateTime<Utc>,
) -> Result<Option<SessionUser>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: User,
        role: Option<String>,
        #[sqlx(try_from = "Option<String>")]
        scope: SessionScope,
        session_expires_at: DateTime<Utc>,
        grant_expires_at: Option<DateTime<Utc>>,
    }
    let sql = "SELECT u.id, u.username, u.display_name, u.department, u.email, u.active, \
               u.kind, u.created_at, u.updated_at, u.password_temporary_until, g.role, \
               s.scope, s.expires_at AS session_expires_at, \
               g.expires_at AS grant_expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
               LEFT JOIN role_grants g ON g.user_id = u.id \
               AND (g.expires_at IS NULL OR g.expires_at > $2) \
               WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.active \
               ORDER BY g.role";
    let rows = on_pool!(db, |p| sqlx::query_as::<_, Row>(sql)
        .bind(session_id)
        .bind(now)
        .fetch_all(p)
        .await)?;
    let valid_until = rows
        .iter()
        .filter_map(|r| r.grant_expires_at)
        .fold(rows.first().map(|r| r.session_expires_at), |until, g| {
            until.map(|u| u.min(g))
        });
    let mut rows = rows.into_iter();
    let (Some(first), Some(valid_until)) = (rows.next(), valid_until) else {
        return Ok(None);
    };
    let scope = first.scope;
    let roles = std::iter::once(first.role)
        .chain(rows.map(|r| r.role))
        .flatten()
        .collect();
    Ok(Some(SessionUser {
        user: first.user,
        roles,
        valid_until,
        scope,
    }))
}

/// The console's sliding renewal: moves the end of a live session of an active user to
/// `expires_at`, unless the session was opened at or before `opened_after` (its longest life).
/// False: the session is over (logout, disabled user, changed password, expired or too old)
/// and stays over.
pub async fn extend_session(
    db: &Db,
    id: &str,
    user_id: i64,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    opened_after: DateTime<Utc>,
) -> Result<bool> {
    let _turn = db.write_turn().await?;
    let sql = "UPDATE sessions SET expires_at = $3 WHERE id = $1 AND user_id = $2 \
               AND revoked_at IS NULL AND expires_at > $4 AND created_at > $5 \
               AND EXISTS (SELECT 1 FROM users u WHERE u.id = sessions.user_id AND u.active)";
    let n = on_pool!(db, |p| sqlx::query(sql)
        .bind(id)
        .bind(user_id)
        .bind(expires_at)
        .bind(now)
        .bind(opened_after)
        .execute(p)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

pub async fn revoke_session(tx: &mut Tx, id: &str, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"
    )
    .bind(id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn revoke_sessions_of(tx: &mut Tx, user_id: i64, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL"
    )
    .bind(user_id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Ends a temporary password an admin chose that its holder has not changed yet (it answers
/// `temporary_password_expired` from now on). True when there was one.
pub async fn void_temporary_password(
    tx: &mut Tx,
    user_id: i64,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "UPDATE users SET password_temporary_until = $2 WHERE id = $1 \
         AND password_temporary_until IS NOT NULL AND password_temporary_until > $2"
    )
    .bind(user_id)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n > 0)
}

// ---------------------------------------------------------------- role grants

#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Grant {
    pub user_id: i64,
    pub role: String,
    pub granted_by: Option<i64>,
    pub granted_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Roles in force for a user at `now` (expired grants excluded), sorted.
const ROLES_IN_FORCE: &str = "SELECT role FROM role_grants WHERE user_id = $1 \
     AND (expires_at IS NULL OR expires_at > $2) ORDER BY role";

pub async fn roles_of(db: &Db, user_id: i64, now: DateTime<Utc>) -> Result<Vec<String>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, String>(
        ROLES_IN_FORCE
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(p)
    .await)?)
}

/// [`roles_of`] inside a write transaction (never the pool while one is open). On PostgreSQL
/// the user's row is held until the transaction ends, so two grants deciding on one person's
/// roles (incompatible roles, the last admin) run one after the other; SQLite's write
/// transaction already does.
pub async fn roles_of_tx(tx: &mut Tx, user_id: i64, now: DateTime<Utc>) -> Result<Vec<String>> {
    if let Tx::Postgres(t, _) = tx {
        sqlx::query("SELECT id FROM users WHERE id = $1 FOR UPDATE")
            .bind(user_id)
            .fetch_optional(&mut **t)
            .await?;
    }
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
        ROLES_IN_FORCE
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

pub async fn grants_of(db: &Db, user_id: i64) -> Result<Vec<Grant>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Grant>(
        "SELECT user_id, role, granted_by, granted_at, expires_at FROM role_grants \
         WHERE user_id = $1 ORDER BY role"
    )
    .bind(user_id)
    .fetch_all(p)
    .await)?)
}

/// Grants (or renews) a role.
pub async fn upsert_grant(
    tx: &mut Tx,
    user_id: i64,
    role: &str,
    granted_by: Option<i64>,
    now: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<Grant> {
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Grant>(
        "INSERT INTO role_grants (user_id, role, granted_by, granted_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, role) DO UPDATE SET \
         granted_by = excluded.granted_by, granted_at = excluded.granted_at, \
         expires_at = excluded.expires_at, source = 'changeguard' \
         RETURNING user_id, role, granted_by, granted_at, expires_at"
    )
    .bind(user_id)
    .bind(role)
    .bind(granted_by)
    .bind(now)
    .bind(expires_at)
    .fetch_one(c)
    .await)?)
}

/// Removes a grant; false when there was none.
pub async fn delete_grant(tx: &mut Tx, user_id: i64, role: &str) -> Result<bool> {
    let done = on_tx!(tx, |c| sqlx::query(
        "DELETE FROM role_grants WHERE user_id = $1 AND role = $2"
    )
    .bind(user_id)
    .bind(role)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(done > 0)
}

/// Serializes changes that could remove the last admin (PostgreSQL: a transaction-scoped
/// advisory lock; SQLite: the write transaction already excludes other writers).
pub async fn lock_admins(tx: &mut Tx) -> Result<()> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, |c| sqlx::query("SELECT pg_advisory_xact_lock(7206001)")
            .execute(c)
            .await
            .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Active users other than `except` holding `role` without an expiry (a grant that runs out
/// cannot be what keeps the service administered).
pub async fn count_permanent_holders(tx: &mut Tx, role: &str, except: i64) -> Result<i64> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM role_grants g JOIN users u ON u.id = g.user_id \
         WHERE g.role = $1 AND u.active AND u.id <> $2 AND g.expires_at IS NULL"
    )
    .bind(role)
    .bind(except)
    .fetch_one(c)
    .await)?)
}

/// A user and the roles (among `roles`) through which they hold something.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Holder {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub department: String,
    pub role: String,
    pub expires_at: Option<DateTime<Utc>>,
}

pub async fn holders(db: &Db, roles: &[String], now: DateTime<Utc>) -> Result<Vec<Holder>> {
    let mut out = Vec::new();
    for role in roles {
        let rows = on_pool!(db, |p| sqlx::query_as::<_, Holder>(
            "SELECT u.id, u.username, u.display_name, u.department, g.role, g.expires_at \
             FROM role_grants g JOIN users u ON u.id = g.user_id \
             WHERE g.role = $1 AND u.active AND (g.expires_at IS NULL OR g.expires_at > $2) \
             ORDER BY u.id"
        )
        .bind(role)
        .bind(now)
        .fetch_all(p)
        .await)?;
        out.extend(rows);
    }
    Ok(out)
}

// ---------------------------------------------------------------- login throttling

/// (failures so far, blocked until) for a throttle key, locking the row on PostgreSQL.
pub async fn throttle_for_update(tx: &mut Tx, key: &str) -> Result<Option<(i64, DateTime<Utc>)>> {
    // SQLite: the transaction is BEGIN IMMEDIATE, already serialized. PostgreSQL: a row lock
    // cannot cover a key's first attempt (no row yet), so lock the key itself.
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, |c| sqlx::query(
            "SELECT pg_advisory_xact_lock(7206002, hashtext($1))"
        )
        .bind(key)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, (i64, DateTime<Utc>)>(
        "SELECT failures, blocked_until FROM login_throttle WHERE username = $1"
    )
    .bind(key)
    .fetch_optional(c)
    .await)?)
}

/// Whether `username` signed in successfully from `address` since `since`.
pub async fn known_address(
    db: &Db,
    username: &str,
    address: &str,
    since: DateTime<Utc>,
) -> Result<bool> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM login_known_addresses \
         WHERE username = $1 AND address = $2 AND last_success > $3)"
    )
    .bind(username)
    .bind(address)
    .bind(since)
    .fetch_one(p)
    .await)?)
}

/// `username` signed in from `address` at `now`.
pub async fn remember_address(
    db: &Db,
    username: &str,
    address: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let _turn = db.write_turn().await?;
    on_pool!(db, |p| sqlx::query(
        "INSERT INTO login_known_addresses (username, address, last_success) VALUES ($1, $2, $3) \
         ON CONFLICT (username, address) DO UPDATE SET last_success = excluded.last_success"
    )
    .bind(username)
    .bind(address)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Records the attempts so far and the delay (idle keys are pruned by [`prune_logins`]).
pub async fn set_throttle(
    tx: &mut Tx,
    key: &str,
    failures: i64,
    blocked_until: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO login_throttle (username, failures, blocked_until) VALUES ($1, $2, $3) \
         ON CONFLICT (username) DO UPDATE SET failures = excluded.failures, \
         blocked_until = excluded.blocked_until"
    )
    .bind(key)
    .bind(failures)
    .bind(blocked_until)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Forgets throttle keys idle since `idle_since` and addresses not used since `known_since`.
/// Run by the scheduler, outside any login's transaction: deleting other keys' rows there
/// could deadlock two logins on PostgreSQL.
pub async fn prune_logins(
    db: &Db,
    idle_since: DateTime<Utc>,
    known_since: DateTime<Utc>,
) -> Result<()> {
    let _turn = db.write_turn().await?;
    on_pool!(db, |p| sqlx::query(
        "DELETE FROM login_throttle WHERE blocked_until < $1"
    )
    .bind(idle_since)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    on_pool!(db, |p| sqlx::query(
        "DELETE FROM login_known_addresses WHERE last_success < $1"
    )
    .bind(known_since)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn clear_throttle(db: &Db, username: &str) -> Result<()> {
    let _turn = db.write_turn().await?;
    on_pool!(db, |p| sqlx::query(
        "DELETE FROM login_throttle WHERE username = $1"
    )
    .bind(username)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}
