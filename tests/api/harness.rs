//! Starting a real changeguard for a test.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use changeguard::clock::{Clock, SystemClock};
use chrono::{DateTime, TimeDelta, Utc};

use changeguard::Server;
use changeguard::config::Settings;
use reqwest::{Client, Method, Response, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};
use tempfile::TempDir;

pub const ADMIN_PASSWORD: &str = "bootstrap secret for tests";
/// The password of every user made by [`TestServer::user_with`].
pub const USER_PASSWORD: &str = "a long enough password";
/// The password an admin gives a new user: temporary, changed at the first login.
pub const TEMP_PASSWORD: &str = "temporary password from the admin";
/// The second admin, made from the server's console (`changeguard user create --role admin`):
/// the second person of dual control.
pub const SECOND_ADMIN: &str = "admin.li";
/// The test server's token key, so tests can forge tokens the way an attacker would try to.
pub const JWT_SECRET_HEX: &str = "9f3c1f0e5a7b2d4c6e8f0a1b3c5d7e9f1a2b3c4d5e6f708192a3b4c5d6e7f809";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The clock a test server runs on: the system's, moved forward by what the test asked for
/// ([`TestServer::advance`]), so a test waits for a delay, an expiry or a window's end without
/// sleeping. Instances of one test share it.
#[derive(Default)]
pub struct TestClock {
    ahead_micros: AtomicI64,
}

impl TestClock {
    pub fn advance(&self, by: TimeDelta) {
        let micros = by
            .num_microseconds()
            .expect("a test moves time by less than 290,000 years");
        self.ahead_micros.fetch_add(micros, Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + TimeDelta::microseconds(self.ahead_micros.load(Ordering::SeqCst))
    }
}

pub struct TestServer {
    /// The running instance's state, for invoking scheduled jobs directly.
    pub app: changeguard::App,
    pub clock: Arc<TestClock>,
    pub base: String,
    /// Where `/metrics` is served without a token ([`Options::metrics_listen`]).
    pub metrics_base: Option<String>,
    pub client: Client,
    pub backend: Backend,
    pub database_url: String,
    pub dir: TempDir,
    pg_admin: Option<(String, String)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
    second_admin_made: tokio::sync::OnceCell<()>,
}

/// The MariaDB/MySQL server the just-in-time database tests make accounts on. In CI its
/// absence is a failure, not a skip.
pub fn mysql_url() -> Option<String> {
    match std::env::var("CHANGEGUARD_TEST_MYSQL_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but CHANGEGUARD_TEST_MYSQL_URL is not: MariaDB tests must run in CI"
            );
            eprintln!("CHANGEGUARD_TEST_MYSQL_URL unset: skipped the MariaDB half of this test");
            None
        }
    }
}

/// The PostgreSQL server to test against. In CI its absence is a failure, not a skip.
pub fn postgres_url() -> Option<String> {
    match std::env::var("CHANGEGUARD_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but CHANGEGUARD_TEST_POSTGRES_URL is not: PostgreSQL tests must run in CI"
            );
            eprintln!(
                "CHANGEGUARD_TEST_POSTGRES_URL unset: skipped the PostgreSQL half of this test"
            );
            None
        }
    }
}

pub fn shipped_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

/// A change the test makes to the server's settings before it starts.
pub type SettingsEdit = Arc<dyn Fn(&mut Settings) + Send + Sync>;

pub struct Options {
    pub policies: PathBuf,
    /// Join an existing database and key directory (a second instance) instead of a fresh one.
    pub join: Option<(String, PathBuf)>,
    /// `CHANGEGUARD_SMTP_URL`; none: `.eml` files in the test's own folder.
    pub smtp_url: Option<String>,
    /// Concurrent password hashes: 2 for tests (many servers share the cores); `None` is the
    /// service's own default (the benches measure that).
    pub hash_concurrency: Option<usize>,
    /// `CHANGEGUARD_SESSION_CACHE` (on by default, as in the service).
    pub session_cache: bool,
    /// The clock to run on; none: a new one (a second instance shares the first's).
    pub clock: Option<Arc<TestClock>>,
    /// `CHANGEGUARD_TRUSTED_PROXIES`.
    pub trusted_proxies: Option<String>,
    /// Keep the shipped `totp_required_roles` (a second factor at login for admins, managers,
    /// compliance and operators). Off by default: the tests of everything else sign people in
    /// with the password alone, as a bank that emptied the list would; the second-factor tests
    /// (tests/api/enrolment.rs) turn it on. A policies directory whose `security.toml` is not
    /// the shipped one is used as it is.
    pub second_factor_at_login: bool,
    /// `CHANGEGUARD_PUBLIC_URL` (https makes the console's cookies `Secure` and `__Host-`).
    pub public_url: Option<String>,
    /// `CHANGEGUARD_METRICS_LISTEN` on a loopback port of its own ([`TestServer::metrics_base`]).
    pub metrics_listen: bool,
    /// Any other settings (e.g. `CHANGEGUARD_LDAP_*`), applied last.
    pub settings: Option<SettingsEdit>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            policies: shipped_policies(),
            join: None,
            smtp_url: None,
            hash_concurrency: Some(2),
            session_cache: true,
            clock: None,
            trusted_proxies: None,
            second_factor_at_login: false,
            public_url: None,
            metrics_listen: false,
            settings: None,
        }
    }
}

/// `from`, or a copy of it in `dir` without the shipped second factor at login (see
/// [`Options::second_factor_at_login`]).
fn policies_for(from: PathBuf, second_factor_at_login: bool, dir: &Path) -> PathBuf {
    let shipped = std::fs::read_to_string(shipped_policies().join("security.toml")).unwrap();
    let security = std::fs::read_to_string(from.join("security.toml")).unwrap_or_default();
    if second_factor_at_login || security != shipped {
        return from;
    }
    without_second_factor_at_login(&from, dir)
}

/// Copies the directory `from` (a policies directory) to `to`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A copy of the policies in `from`, in `dir`, whose `security.toml` asks no role for a second
/// factor at login.
pub fn without_second_factor_at_login(from: &Path, dir: &Path) -> PathBuf {
    let to = dir.join("policies");
    copy_dir(from, &to);
    ask_no_second_factor_at_login(&to);
    to
}

/// Rewrites `security.toml` in the policies directory `dir` so that no role needs a second
/// factor at login.
pub fn ask_no_second_factor_at_login(dir: &Path) {
    let file = dir.join("security.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("totp_required_roles"))
        .expect("security.toml names totp_required_roles");
    std::fs::write(&file, text.replace(line, "totp_required_roles = []")).unwrap();
}

impl TestServer {
    pub async fn start(backend: Backend) -> TestServer {
        Self::start_with(backend, Options::default()).await
    }

    pub async fn start_with(backend: Backend, opts: Options) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let key_dir = opts
            .join
            .as_ref()
            .map_or_else(|| dir.path().to_path_buf(), |(_, k)| k.clone());
        let (database_url, pg_admin) = match (&opts.join, backend) {
            (Some((url, _)), _) => (url.clone(), None),
            (None, backend) => match backend {
                Backend::Sqlite => (
                    format!("sqlite:{}", dir.path().join("cg.db").display()),
                    None,
                ),
                Backend::Postgres => {
                    let admin_url = postgres_url().expect("postgres url");
                    let name = format!("cg_test_{}", uuid::Uuid::new_v4().simple());
                    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
                        .await
                        .expect("PostgreSQL must be reachable at CHANGEGUARD_TEST_POSTGRES_URL");
                    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                        .execute(&mut conn)
                        .await
                        .unwrap();
                    (replace_db(&admin_url, &name), Some((admin_url, name)))
                }
            },
        };
        let mut settings = Settings {
            database_url: database_url.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            policies_dir: policies_for(opts.policies, opts.second_factor_at_login, dir.path()),
            templates_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates")),
            jwt_secret: Some(SecretString::from(JWT_SECRET_HEX)),
            audit_key: None,
            bootstrap_admin_password: Some(SecretString::from(ADMIN_PASSWORD)),
            key_dir: Some(key_dir),
            hash_concurrency: opts.hash_concurrency,
            session_cache: opts.session_cache,
            smtp_url: opts.smtp_url.map(SecretString::from),
            outbox_dir: dir.path().join("outbox"),
            trusted_proxies: opts.trusted_proxies,
            public_url: opts.public_url,
            metrics_listen: opts.metrics_listen.then(|| "127.0.0.1:0".parse().unwrap()),
            ..Settings::default()
        };
        if let Some(adjust) = &opts.settings {
            adjust(&mut settings);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = opts.clock.unwrap_or_default();
        let server = Server::build_with_clock(settings, listener, clock.clone())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let metrics_base = server.metrics_addr().map(|a| format!("http://{a}"));
        let app = server.app.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            server
                .run(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        TestServer {
            app,
            clock,
            base: format!("http://{addr}"),
            metrics_base,
            client: Client::new(),
            backend,
            database_url,
            dir,
            pg_admin,
            shutdown: Some(tx),
            handle: Some(handle),
            second_admin_made: tokio::sync::OnceCell::new(),
        }
    }

    /// Another instance on the same database and keys (several instances behind a balancer).
    pub async fn second_instance(&self) -> TestServer {
        let opts = Options {
            join: Some((self.database_url.clone(), self.dir.path().to_path_buf())),
            clock: Some(self.clock.clone()),
            ..Options::default()
        };
        TestServer::start_with(self.backend, opts).await
    }

    /// Another instance on the same database and keys, with its own options (policies, SMTP).
    pub async fn second_instance_with(&self, mut opts: Options) -> TestServer {
        opts.join = Some((self.database_url.clone(), self.dir.path().to_path_buf()));
        opts.clock.get_or_insert_with(|| self.clock.clone());
        TestServer::start_with(self.backend, opts).await
    }

    /// Moves this server's time (and its other instances') forward.
    pub fn advance(&self, by: TimeDelta) {
        self.clock.advance(by);
    }

    /// This server's time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> Response {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Response {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    pub async fn token(&self, username: &str, password: &str) -> String {
        let r = self.login(username, password).await;
        assert_eq!(r.status(), StatusCode::OK, "login {username}");
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn admin(&self) -> String {
        self.token("admin", ADMIN_PASSWORD).await
    }

    /// Creates a user with the given roles, as a bank would: the admin creates the account with
    /// a temporary password and grants the roles, the second admin approves the privileged ones,
    /// and the person changes the password to [`USER_PASSWORD`] at the first login. Returns
    /// (id, token).
    pub async fn user_with(&self, admin: &str, username: &str, roles: &[&str]) -> (i64, String) {
        let r = self
            .post(
                "/api/v1/users",
                admin,
                json!({"username": username, "display_name": format!("{username} 测试"), "department": "科技部",
                       "email": format!("{username}@bank.example"), "password": TEMP_PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "create {username}");
        let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        // As a bank does: the person changes the temporary password before privilege is
        // granted (a privileged grant voids a temporary password nobody changed).
        self.change_temporary_password(username).await;
        self.grant(admin, id, roles).await;
        (id, self.token(username, USER_PASSWORD).await)
    }

    /// A person holding `roles` although some are incompatible: the grants are written straight
    /// into the database (as before the rule existed), since the service refuses them.
    pub async fn user_holding_by_hand(
        &self,
        admin: &str,
        username: &str,
        roles: &[&str],
    ) -> (i64, String) {
        let (id, _) = self.user_with(admin, username, &[]).await;
        let at = self.now().to_rfc3339();
        for role in roles {
            self.sql(&[&format!(
                "INSERT INTO role_grants (user_id, role, granted_at) VALUES ({id}, '{role}', '{at}')"
            )])
            .await
            .unwrap();
        }
        (id, self.token(username, USER_PASSWORD).await)
    }

    /// Grants `roles` to user `id`; the second admin approves those that wait for a second person.
    pub async fn grant(&self, admin: &str, id: i64, roles: &[&str]) {
        for role in roles {
            let r = self
                .post(
                    &format!("/api/v1/users/{id}/roles"),
                    admin,
                    json!({"role": role}),
                )
                .await;
            match r.status() {
                StatusCode::CREATED => {}
                StatusCode::ACCEPTED => {
                    let request = body(r).await;
                    assert_eq!(request["status"], "pending", "{request}");
                    let second = self.second_admin().await;
                    let r = self
                        .post(
                            &format!("/api/v1/role-grants/{}/approve", request["id"]),
                            &second,
                            json!({}),
                        )
                        .await;
                    assert_eq!(r.status(), StatusCode::OK, "approve {role}");
                }
                other => panic!("grant {role}: {other} {}", body(r).await),
            }
        }
    }

    /// The first login with the admin's temporary password, which the person changes.
    pub async fn change_temporary_password(&self, username: &str) {
        let r = self.login(username, TEMP_PASSWORD).await;
        assert_eq!(r.status(), StatusCode::OK, "first login of {username}");
        let doc = body(r).await;
        assert_eq!(doc["must_change_password"], true, "{doc}");
        let token = doc["access_token"].as_str().unwrap().to_string();
        let r = self
            .post(
                "/api/v1/me/password",
                &token,
                json!({"current_password": TEMP_PASSWORD, "new_password": USER_PASSWORD}),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::NO_CONTENT,
            "password change of {username}"
        );
    }

    /// A token of the second admin, created from the server's console on first use.
    pub async fn second_admin(&self) -> String {
        self.second_admin_made
            .get_or_init(|| async {
                let app = &self.app;
                let created = changeguard::accounts::create_user(
                    app,
                    None,
                    changeguard::accounts::CreateUser {
                        username: SECOND_ADMIN.into(),
                        display_name: "李管理员".into(),
                        department: "科技部".into(),
                        email: "admin.li@bank.example".into(),
                        password: SecretString::from(ADMIN_PASSWORD),
                    },
                )
                .await;
                match created {
                    Ok(user) => {
                        changeguard::accounts::grant_role_unattended(app, user.id, "admin")
                            .await
                            .unwrap();
                    }
                    // Another instance on the same database made it.
                    Err(changeguard::error::Error::Conflict { .. }) => {}
                    Err(e) => panic!("second admin: {e}"),
                }
            })
            .await;
        self.token(SECOND_ADMIN, ADMIN_PASSWORD).await
    }

    /// Runs SQL directly against the database, as an intruder with database access would.
    pub async fn sql(&self, statements: &[&str]) -> Result<(), sqlx::Error> {
        use sqlx::Connection;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await?;
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(*s)).execute(&mut c).await?;
                }
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await?;
                for s in statements {
                    sqlx::query(sqlx::AssertSqlSafe(*s)).execute(&mut c).await?;
                }
            }
        }
        Ok(())
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        if let Some((admin_url, name)) = self.pg_admin.take() {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        }
    }
}

fn replace_db(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let prefix = match base.rfind('/') {
        Some(i) if i > "postgres://".len() => &base[..i],
        _ => base,
    };
    match query {
        Some(q) => format!("{prefix}/{name}?{q}"),
        None => format!("{prefix}/{name}"),
    }
}

pub async fn body(r: Response) -> Value {
    r.json::<Value>().await.unwrap()
}

/// Asserts a problem+json answer with `status` and `code`; returns the document.
pub async fn problem(r: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(r.status(), status, "status for expected {code}");
    let ct = r
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        ct.starts_with("application/problem+json"),
        "content-type {ct}"
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        // Every 503 tells a machine when to ask again.
        assert_eq!(
            r.headers().get("retry-after").map(|v| v.to_str().unwrap()),
            Some("2"),
            "retry-after for {code}"
        );
    }
    let doc = body(r).await;
    assert_eq!(doc["code"], code, "{doc}");
    assert_eq!(doc["status"], status.as_u16());
    doc
}

/// Defines `sqlite` and `postgres` tests running the same async body, on servers started with
/// the default [`Options`] or with `options = …`.
#[macro_export]
macro_rules! both_backends {
    ($(#[$meta:meta])* $name:ident, |$srv:ident| $body:block) => {
        $crate::both_backends!($name, options = $crate::harness::Options::default(), |$srv| $body);
    };
    ($(#[$meta:meta])* $name:ident, options = $opts:expr, |$srv:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            async fn run($srv: &$crate::harness::TestServer) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let srv = $crate::harness::TestServer::start_with(
                    $crate::harness::Backend::Sqlite,
                    $opts,
                )
                .await;
                run(&srv).await;
                srv.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::harness::postgres_url().is_none() {
                    return;
                }
                let srv = $crate::harness::TestServer::start_with(
                    $crate::harness::Backend::Postgres,
                    $opts,
                )
                .await;
                run(&srv).await;
                srv.stop().await;
            }
        }
    };
}
