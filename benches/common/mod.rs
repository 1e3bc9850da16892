//! Shared by the HTTP benches: a real changeguard started in-process on 127.0.0.1:0 (as the
//! integration tests do), a small load generator (N keep-alive connections over loopback for a
//! fixed time, req/s and p50/p99), and the resident memory of this process.
//!
//! Everything stays on loopback; every loop is bounded in time.

#![allow(dead_code, unused_imports)] // each bench uses part of this module

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Client, RequestBuilder, StatusCode};
use serde_json::json;

// The integration tests' harness: the same real server, fresh SQLite file or PostgreSQL database.
#[allow(dead_code, unused_imports)]
#[path = "../../tests/api/harness.rs"]
mod harness;

pub use harness::{Backend, Options, TestServer as BenchServer, USER_PASSWORD, postgres_url};

pub fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "SQLite",
        Backend::Postgres => "PostgreSQL",
    }
}

/// The real server in-process on 127.0.0.1:0 with the service's own hashing concurrency.
pub async fn start(backend: Backend) -> BenchServer {
    BenchServer::start_with(
        backend,
        Options {
            hash_concurrency: None,
            ..Options::default()
        },
    )
    .await
}

/// Which backends to run: `BENCH_BACKENDS=sqlite` or `postgres` narrows it; both by default
/// (PostgreSQL only when `CHANGEGUARD_TEST_POSTGRES_URL` is set).
pub fn backends() -> Vec<Backend> {
    let pg = || postgres_url().is_some();
    match std::env::var("BENCH_BACKENDS").as_deref() {
        Ok("sqlite") => vec![Backend::Sqlite],
        Ok("postgres") if pg() => vec![Backend::Postgres],
        _ if pg() => vec![Backend::Sqlite, Backend::Postgres],
        _ => vec![Backend::Sqlite],
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

/// Commits a raw store transaction, bypassing the deed ON PURPOSE: the baselines and the
/// seeding of benchmark data measure or prepare the database without the service's audit.
#[allow(dead_code)]
pub async fn commit_raw(tx: changeguard::db::Tx) {
    match tx {
        changeguard::db::Tx::Sqlite(t, ..) => t.commit().await.unwrap(),
        changeguard::db::Tx::Postgres(t, _) => t.commit().await.unwrap(),
    }
}
