//! Shared by the HTTP benches: a real changeguard started in-process on 127.0.0.1:0 (as the
//! integration tests do), a small load generator (N keep-alive connections over loopback for a
//! fixed time, req/s and p50/p99), and the resident memory of this process.
//!
//! Everything stays on loopback; every loop is bounded in time.

#![allow(dead_code)] // each bench uses part of this module

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use changeguard::Server;
use changeguard::config::Settings;
use reqwest::{Client, RequestBuilder, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

pub const ADMIN_PASSWORD: &str = "bootstrap secret for benches";
pub const USER_PASSWORD: &str = "a long enough password";
const JWT_SECRET_HEX: &str = "4b1d0c6f2e8a9b7c5d3e1f0a2b4c6d8e0f1a3b5c7d9e2f4a6b8c0d1e3f5a7b9c";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }
}

/// The PostgreSQL server to bench against (a fresh database is created per run).
pub fn postgres_admin_url() -> String {
    std::env::var("CHANGEGUARD_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// Which backends to run: `BENCH_BACKENDS=sqlite` or `postgres` narrows it; both by default.
pub fn backends() -> Vec<Backend> {
    match std::env::var("BENCH_BACKENDS").as_deref() {
        Ok("sqlite") => vec![Backend::Sqlite],
        Ok("postgres") => vec![Backend::Postgres],
        _ => vec![Backend::Sqlite, Backend::Postgres],
    }
}

/// Seconds per measurement (`BENCH_SECS`, default `default`).
pub fn secs(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
}

pub struct BenchServer {
    pub app: changeguard::App,
    pub base: String,
    pub backend: Backend,
    pub database_url: String,
    _dir: tempfile::TempDir,
    pg_admin: Option<(String, String)>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

fn policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
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

impl BenchServer {
    /// The real server on a fresh SQLite file or a fresh PostgreSQL database.
    pub async fn start(backend: Backend) -> BenchServer {
        let dir = tempfile::tempdir().unwrap();
        let (database_url, pg_admin) = match backend {
            Backend::Sqlite => (
                format!("sqlite:{}", dir.path().join("bench.db").display()),
                None,
            ),
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = postgres_admin_url();
                let name = format!("cg_bench_{}", uuid::Uuid::new_v4().simple());
                let mut c = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be reachable (CHANGEGUARD_TEST_POSTGRES_URL)");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut c)
                    .await
                    .unwrap();
                (replace_db(&admin, &name), Some((admin, name)))
            }
        };
        let settings = Settings {
            database_url: database_url.clone(),
            listen: "127.0.0.1:0".parse().unwrap(),
            policies_dir: policies(),
            jwt_secret: Some(SecretString::from(JWT_SECRET_HEX)),
            audit_key: None,
            bootstrap_admin_password: Some(SecretString::from(ADMIN_PASSWORD)),
            key_dir: Some(dir.path().to_path_buf()),
            ..Settings::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = Server::build(settings, listener).await.unwrap();
        let addr = server.local_addr().unwrap();
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
        BenchServer {
            app,
            base: format!("http://{addr}"),
            backend,
            database_url,
            _dir: dir,
            pg_admin,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn token(&self, username: &str, password: &str) -> String {
        let r = Client::new()
            .post(self.url("/api/v1/auth/login"))
            .json(&json!({"username": username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "login {username}");
        r.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn admin(&self) -> String {
        self.token("admin", ADMIN_PASSWORD).await
    }

    /// A user holding `roles`; returns (id, token).
    pub async fn user_with(&self, admin: &str, username: &str, roles: &[&str]) -> (i64, String) {
        let c = Client::new();
        let r = c
            .post(self.url("/api/v1/users"))
            .bearer_auth(admin)
            .json(
                &json!({"username": username, "display_name": format!("{username} 压测"),
                "department": "科技部", "email": format!("{username}@bank.example"),
                "password": USER_PASSWORD}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "create {username}");
        let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        for role in roles {
            let r = c
                .post(self.url(&format!("/api/v1/users/{id}/roles")))
                .bearer_auth(admin)
                .json(&json!({"role": role}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::CREATED, "grant {role}");
        }
        (id, self.token(username, USER_PASSWORD).await)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
        if let Some((admin, name)) = self.pg_admin.take() {
            use sqlx::Connection;
            if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut c)
                .await;
            }
        }
    }
}

/// A bare axum route on its own loopback listener: the ceiling of this machine's HTTP stack.
pub async fn bare_route() -> (String, tokio::sync::oneshot::Sender<()>) {
    let router = axum::Router::new().route(
        "/bare",
        axum::routing::get(|| async {
            axum::Json(json!({"permission": "change.read", "allowed": true}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    (format!("http://{addr}/bare"), tx)
}

/// What one load run measured.
#[derive(Debug, Clone)]
pub struct Load {
    pub requests: u64,
    pub failures: u64,
    pub elapsed: Duration,
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Load {
    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    pub fn line(&self, what: &str) -> String {
        format!(
            "{what:<58} {:>9.0} req/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms  ({} requests, {} failed)",
            self.rps(),
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.requests,
            self.failures
        )
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One keep-alive connection per worker: a client that keeps at most one idle connection.
pub fn connection() -> Client {
    Client::builder()
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .unwrap()
}

/// `conns` keep-alive connections, each sending `request(client, n)` one after another for
/// `dur`; a request counts as failed unless its status is `expect`.
pub async fn run<F>(conns: usize, dur: Duration, expect: StatusCode, request: F) -> Load
where
    F: Fn(&Client, u64) -> RequestBuilder + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let start = Instant::now();
    let deadline = start + dur;
    let mut workers = Vec::new();
    for w in 0..conns {
        let request = request.clone();
        workers.push(tokio::spawn(async move {
            let client = connection();
            let mut lat = Vec::with_capacity(4096);
            let mut failures = 0u64;
            let mut n = w as u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = match request(&client, n).send().await {
                    Ok(r) => {
                        let ok = r.status() == expect;
                        ok & r.bytes().await.is_ok()
                    }
                    Err(_) => false,
                };
                lat.push(t.elapsed());
                if !ok {
                    failures += 1;
                }
                n += conns as u64;
            }
            (lat, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (lat, f) = w.await.unwrap();
        all.extend(lat);
        failures += f;
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    Load {
        requests: all.len() as u64,
        failures,
        elapsed,
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        max: all.last().copied().unwrap_or_default(),
    }
}

/// Runs `background` in a loop on its own until `main` is done; returns `main`'s result and how
/// many background rounds completed.
pub async fn while_running<M, B, Fut>(main: M, background: B) -> (Load, u64)
where
    M: Future<Output = Load>,
    B: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bg = {
        let (stop, rounds) = (stop.clone(), rounds.clone());
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if background().await {
                    rounds.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
    };
    let load = main.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = bg.await;
    (load, rounds.load(std::sync::atomic::Ordering::Relaxed))
}

/// Resident memory of this process (VmRSS), in MiB.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// One line about the machine: cores and load average, for the results.
pub fn machine_line() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine: {cores} cores, load average {} (other engineers compile on it)",
        load.join(" ")
    )
}
