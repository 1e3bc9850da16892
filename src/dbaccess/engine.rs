//! The statements run on a target database, PostgreSQL or MariaDB/MySQL. Every identifier and
//! literal is checked against a strict pattern AND quoted; nothing from a request is spliced in
//! unquoted. Generated names and passwords are ASCII letters and digits only.

use chrono::{DateTime, Utc};
use std::time::Duration;

use rand::Rng;
use rand::distr::Alphanumeric;
use secrecy::{ExposeSecret, SecretString};
use sqlx::{ConnectOptions, Connection};

/// The longest a statement batch on a target may take (an unreachable target must not stall
/// a request or the minute job).
pub const TIMEOUT: Duration = Duration::from_secs(15);

async fn bounded<T>(f: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err("the target did not answer in time".into()))
}

/// Where and as whom the server connects to create and drop accounts.
pub struct Admin<'a> {
    pub engine: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub database: &'a str,
    pub user: &'a str,
    pub password: &'a SecretString,
}

impl<'a> Admin<'a> {
    /// The admin account `user` with `password` on target `t`.
    pub fn of(
        t: &'a crate::db::dbaccess::Target,
        user: &'a str,
        password: &'a SecretString,
    ) -> Self {
        Admin {
            engine: &t.engine,
            host: &t.host,
            port: u16::try_from(t.port).unwrap_or(0),
            database: &t.database_name,
            user,
            password,
        }
    }
}

/// A role (PostgreSQL), database or user name: letters, digits and `_`, not starting with a
/// digit, at most 63 characters.
pub fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A PostgreSQL role a temporary account may join: a valid name, and none of the built-in
/// roles (`pg_*`, `postgres`), which reach the server's files and programs.
pub fn grantable_pg_role(s: &str) -> bool {
    valid_ident(s) && !s.starts_with("pg_") && s != "postgres"
}

/// The privileges a MariaDB account may be given on the target database.
pub const MYSQL_PRIVILEGES: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "CREATE",
    "ALTER",
    "DROP",
    "INDEX",
    "CREATE VIEW",
    "SHOW VIEW",
    "TRIGGER",
    "REFERENCES",
];

fn pg_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn sql_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''").replace('\\', "\\\\"))
}

fn my_ident(s: &str) -> String {
    format!("`{}`", s.replace('`', "``"))
}

/// A new account's name and password.
pub fn new_credentials() -> (String, SecretString) {
    let mut rng = rand::rng();
    let suffix: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(12)
        .map(|b| char::from(b).to_ascii_lowercase())
        .collect();
    let password: String = (&mut rng)
        .sample_iter(Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    (format!("cg_{suffix}"), SecretString::from(password))
}

fn err(e: impl std::fmt::Display) -> String {
    // Driver errors name the server and the statement, never a password (none is bound in
    // an error path: the CREATE statements are not echoed).
    let s = e.to_string();
    s.chars().take(300).collect()
}

/// The MariaDB/MySQL sessions of `user` (CAST: MariaDB answers BIGINT, MySQL 8 BIGINT
/// UNSIGNED).
async fn sessions_of(c: &mut sqlx::MySqlConnection, user: &str) -> Result<Vec<i64>, String> {
    sqlx::query_scalar(
        "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST WHERE USER = ?",
    )
    .bind(user)
    .fetch_all(c)
    .await
    .map_err(err)
}

/// Whether the admin account may see every session (PROCESS; SUPER alone does not show
/// them): without it `PROCESSLIST` shows only its own, and a dropped account's open sessions
/// would survive unseen. No account is issued, and none counts as revoked, without it.
async fn sees_all_sessions(c: &mut sqlx::MySqlConnection) -> Result<(), String> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES \
         WHERE PRIVILEGE_TYPE = 'PROCESS' AND GRANTEE = CONCAT(\
         QUOTE(SUBSTRING_INDEX(CURRENT_USER(), '@', 1)), '@', \
         QUOTE(SUBSTRING_INDEX(CURRENT_USER(), '@', -1)))",
    )
    .fetch_one(c)
    .await
    .map_err(err)?;
    if n == 0 {
        return Err("the target's admin account lacks the PROCESS privilege: it cannot see (nor end) the sessions of the accounts it would issue".into());
    }
    Ok(())
}

/// Runs one statement (already checked and quoted) on a PostgreSQL target.
async fn exec_pg(c: &mut sqlx::PgConnection, sql: String) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(c)
        .await
        .map(|_| ())
        .map_err(err)
}

/// Runs one statement (already checked and quoted) on a MariaDB/MySQL target.
async fn exec_my(c: &mut sqlx::MySqlConnection, sql: String) -> Result<(), String> {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(c)
        .await
        .map(|_| ())
        .map_err(err)
}

async fn pg(a: &Admin<'_>) -> Result<sqlx::PgConnection, String> {
    let opts = sqlx::postgres::PgConnectOptions::new()
        .host(a.host)
        .port(a.port)
        .database(a.database)
        .username(a.user)
        .password(a.password.expose_secret())
        // The target itself gives up before our timeout does (a CREATE waiting on a lock
        // must not finish after we stopped waiting).
        .options([("statement_timeout", "10s"), ("lock_timeout", "10s")])
        // Statements carry a new account's password: never logged, slow or not.
        .disable_statement_logging();
    sqlx::PgConnection::connect_with(&opts).await.map_err(err)
}

async fn my(a: &Admin<'_>) -> Result<sqlx::MySqlConnection, String> {
    let opts = sqlx::mysql::MySqlConnectOptions::new()
        .host(a.host)
        .port(a.port)
        .database(a.database)
        .username(a.user)
        .password(a.password.expose_secret())
        // Statements carry a new account's password: never logged, slow or not.
        .disable_statement_logging();
    let mut c = sqlx::MySqlConnection::connect_with(&opts)
        .await
        .map_err(err)?;
    // The target itself gives up before our timeout does.
    exec_my(&mut c, "SET SESSION lock_wait_timeout = 10".to_string()).await?;
    Ok(c)
}

/// Creates `user` with `password` and exactly `grants` (PostgreSQL role memberships, or MariaDB
/// privileges on the target database), valid until `until` where the engine supports it.
pub async fn create(
    a: &Admin<'_>,
    user: &str,
    password: &SecretString,
    grants: &[String],
    until: DateTime<Utc>,
) -> Result<(), String> {
    bounded(create_unbounded(a, user, password, grants, until)).await
}

async fn create_unbounded(
    a: &Admin<'_>,
    user: &str,
    password: &SecretString,
    grants: &[String],
    until: DateTime<Utc>,
) -> Result<(), String> {
    if !valid_ident(user) || !valid_ident(a.database) {
        return Err("invalid account or database name".into());
    }
    let pw = password.expose_secret();
    if !pw.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("invalid generated password".into());
    }
    match a.engine {
        "postgres" => {
            let mut c = pg(a).await?;
            let mut sql = format!(
                "CREATE ROLE {} LOGIN PASSWORD {} VALID UNTIL {}",
                pg_ident(user),
                sql_literal(pw),
                sql_literal(&until.to_rfc3339())
            );
            let roles: Vec<String> = grants
                .iter()
                .filter(|g| grantable_pg_role(g))
                .map(|g| pg_ident(g))
                .collect();
            if roles.len() != grants.len() {
                return Err("invalid role name in the target's grants".into());
            }
            if !roles.is_empty() {
                sql.push_str(&format!(" IN ROLE {}", roles.join(", ")));
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map_err(|_| "CREATE ROLE failed on the target".to_string())?;
            let _ = c.close().await;
        }
        "mysql" => {
            if grants
                .iter()
                .any(|g| !MYSQL_PRIVILEGES.contains(&g.as_str()))
            {
                return Err("invalid privilege in the target's grants".into());
            }
            let mut c = my(a).await?;
            sees_all_sessions(&mut c).await?;
            let account = format!("{}@'%'", sql_literal(user));
            let create = format!("CREATE USER {account} IDENTIFIED BY {}", sql_literal(pw));
            sqlx::raw_sql(sqlx::AssertSqlSafe(create))
                .execute(&mut c)
                .await
                .map_err(|_| "CREATE USER failed on the target".to_string())?;
            if !grants.is_empty() {
                let grant = format!(
                    "GRANT {} ON {}.* TO {account}",
                    grants.join(", "),
                    my_ident(a.database)
                );
                exec_my(&mut c, grant).await?;
            }
            let _ = c.close().await;
        }
        other => return Err(format!("unknown engine {other}")),
    }
    Ok(())
}

/// Locks the account (no new login), ends its sessions and drops it (nothing to do if it is
/// gone already).
pub async fn drop_account(a: &Admin<'_>, user: &str) -> Result<(), String> {
    bounded(drop_unbounded(a, user)).await
}

async fn pg_role_exists(c: &mut sqlx::PgConnection, user: &str) -> Result<bool, String> {
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_roles WHERE rolname = $1")
        .bind(user)
        .fetch_optional(&mut *c)
        .await
        .map_err(err)?;
    Ok(found.is_some())
}

/// Locks the role, ends its sessions, drops it (with what it owns).
async fn drop_pg(c: &mut sqlx::PgConnection, user: &str) -> Result<(), String> {
    // Two instances dropping one account at once would update its catalog row together
    // ("tuple concurrently updated"): one waits for the other here (the lock ends with the
    // connection) and then finds the account gone.
    sqlx::query("SELECT pg_advisory_lock(hashtext('changeguard drop ' || $1))")
        .bind(user)
        .execute(&mut *c)
        .await
        .map_err(err)?;
    let exists = pg_role_exists(c, user).await?;
    if exists {
        // No new login while the sessions are ended.
        let lock = format!("ALTER ROLE {} NOLOGIN", pg_ident(user));
        exec_pg(c, lock).await?;
    }
    sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
        .bind(user)
        .execute(&mut *c)
        .await
        .map_err(err)?;
    if exists {
        let u = pg_ident(user);
        // REASSIGN OWNED needs membership in the role: an admin with CREATEROLE (not a
        // superuser) takes it first (PostgreSQL 15 and older do not give it to the creator).
        // Only then: a superuser's grant would race another instance's drop for nothing.
        let member: bool = sqlx::query_scalar("SELECT pg_has_role(CURRENT_USER, $1, 'MEMBER')")
            .bind(user)
            .fetch_one(&mut *c)
            .await
            .map_err(err)?;
        if !member {
            let _ = exec_pg(c, format!("GRANT {u} TO CURRENT_USER")).await;
        }
        let sql =
            format!("REASSIGN OWNED BY {u} TO CURRENT_USER; DROP OWNED BY {u}; DROP ROLE {u}");
        exec_pg(c, sql).await?;
    }
    Ok(())
}

async fn drop_unbounded(a: &Admin<'_>, user: &str) -> Result<(), String> {
    if !valid_ident(user) {
        return Err("invalid account name".into());
    }
    match a.engine {
        "postgres" => {
            let mut c = pg(a).await?;
            let done = match drop_pg(&mut c, user).await {
                // Another instance dropped it meanwhile (its sessions ended with it).
                Err(_) if !pg_role_exists(&mut c, user).await? => Ok(()),
                other => other,
            };
            let _ = c.close().await;
            done?;
        }
        "mysql" => {
            let mut c = my(a).await?;
            // No new login while the sessions are ended (MariaDB >= 10.4, MySQL >= 5.7.6).
            let lock = format!(
                "ALTER USER IF EXISTS {}@'%' ACCOUNT LOCK",
                sql_literal(user)
            );
            // An older server refuses the syntax: the KILL and DROP below still run.
            let _ = exec_my(&mut c, lock).await;
            if let Err(e) = sees_all_sessions(&mut c).await {
                // The account goes all the same; its sessions cannot be seen, so the drop does
                // not count as done (it stays overdue and reported).
                let drop = format!("DROP USER IF EXISTS {}@'%'", sql_literal(user));
                let _ = exec_my(&mut c, drop).await;
                return Err(e);
            }
            for id in sessions_of(&mut c, user).await? {
                // A session that ended meanwhile is fine; one still there is caught below.
                let _ = exec_my(&mut c, format!("KILL {id}")).await;
            }
            // DROP USER leaves open sessions working: none may remain (an admin without the
            // PROCESS privilege would not even see them; then this fails and is retried).
            if !sessions_of(&mut c, user).await?.is_empty() {
                return Err("sessions of the account remain after KILL".into());
            }
            let drop = format!("DROP USER IF EXISTS {}@'%'", sql_literal(user));
            exec_my(&mut c, drop).await?;
            let _ = c.close().await;
        }
        other => return Err(format!("unknown engine {other}")),
    }
    Ok(())
}

/// Sets `password` on the existing account `user` (rotation by the machine). Setting the same
/// password again is harmless, so a rotation interrupted after this step is finished by doing it
/// again. Sessions opened with the old password are left alone: the account may be an
/// application's, and ending its sessions would be an outage.
pub async fn set_password(
    a: &Admin<'_>,
    user: &str,
    password: &SecretString,
) -> Result<(), String> {
    bounded(set_password_unbounded(a, user, password)).await
}

async fn set_password_unbounded(
    a: &Admin<'_>,
    user: &str,
    password: &SecretString,
) -> Result<(), String> {
    if !valid_ident(user) {
        return Err("invalid account name".into());
    }
    let pw = password.expose_secret();
    if !pw.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("invalid generated password".into());
    }
    match a.engine {
        "postgres" => {
            let mut c = pg(a).await?;
            if !pg_role_exists(&mut c, user).await? {
                return Err("the account does not exist on the target".into());
            }
            let sql = format!("ALTER ROLE {} PASSWORD {}", pg_ident(user), sql_literal(pw));
            // Not through exec_pg: its error would quote the statement, password included.
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map_err(|_| "ALTER ROLE failed on the target".to_string())?;
            let _ = c.close().await;
        }
        "mysql" => {
            let mut c = my(a).await?;
            let sql = format!(
                "ALTER USER {}@'%' IDENTIFIED BY {}",
                sql_literal(user),
                sql_literal(pw)
            );
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .map_err(|_| "ALTER USER failed on the target".to_string())?;
            let _ = c.close().await;
        }
        other => return Err(format!("unknown engine {other}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_quoted() {
        assert!(valid_ident("app_writer"));
        assert!(!valid_ident("app\"; DROP ROLE x; --"));
        assert!(!valid_ident("1abc"));
        assert_eq!(pg_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(sql_literal("it's"), "'it''s'");
        let (u, p) = new_credentials();
        assert!(valid_ident(&u) && u.starts_with("cg_"));
        assert_eq!(p.expose_secret().len(), 32);
    }
}
