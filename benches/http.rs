//! `cargo bench --bench http` (issues 2 and 3): the real server in-process over loopback.
//!
//! Per backend (SQLite file, fresh PostgreSQL database): req/s of a bare axum route (the ceiling
//! of this machine's HTTP stack, same run), of `GET /healthz` through the service's middleware,
//! of `GET /api/v1/authz/check` (with the session cache, and without it on a second instance),
//! of `GET /api/v1/me`
//! and of `GET /api/v1/working-days/earliest-start`; the latency of authz/check while 16 logins
//! hash passwords at once (target p99 < 20 ms); resident memory idle and under that load.
//!
//! `BENCH_SECS` (default 5) per measurement, `BENCH_CONNS` (default 16) connections,
//! `BENCH_BACKENDS=sqlite|postgres` to run one backend only.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Backend, USER_PASSWORD};
use reqwest::StatusCode;
use serde_json::json;

const LOGINS: usize = 16;

fn conns() -> usize {
    std::env::var("BENCH_CONNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

async fn bench(backend: Backend, dur: Duration) {
    let conns = conns();
    println!(
        "\n== {} ({conns} connections, {dur:?} each)",
        common::name(backend)
    );
    let srv = common::start(backend).await;
    let admin = srv.admin().await;
    let (_, token) = srv.user_with(&admin, "op.bench", &["tech_operator"]).await;
    // Users for the concurrent logins: one per login, so the per-account delay never applies.
    let mut login_users = Vec::new();
    for i in 0..LOGINS {
        let name = format!("login.{i:02}");
        srv.user_with(&admin, &name, &["viewer"]).await;
        login_users.push(name);
    }
    let (bare, stop_bare) = common::bare_route().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = common::rss_mib();

    let base = common::run(conns, dur, StatusCode::OK, move |c, _| c.get(&bare)).await;
    println!("{}", base.line("bare axum route (baseline)"));

    // The service's whole middleware stack (request id, metrics, access log, security headers,
    // the gate) on a public route without authentication or a database: what is left between
    // it and authz/check is the token, the session read and the decision.
    let health = srv.url("/healthz");
    let stack = common::run(conns, dur, StatusCode::OK, move |c, _| c.get(&health)).await;
    println!(
        "{}  = {:.2}x bare",
        stack.line("GET /healthz (full middleware stack, no auth)"),
        stack.rps() / base.rps()
    );

    let check = srv.url("/api/v1/authz/check?permission=change.read");
    let t = token.clone();
    let authz = common::run(conns, dur, StatusCode::OK, move |c, _| {
        c.get(&check).bearer_auth(&t)
    })
    .await;
    println!(
        "{}  = {:.2}x bare",
        authz.line("GET /api/v1/authz/check?permission=change.read"),
        authz.rps() / base.rps()
    );

    // The same, on a second instance over the same database with the session cache off: every
    // request reads its session, user and roles (the behaviour before the cache).
    let uncached = srv
        .second_instance_with(common::Options {
            session_cache: false,
            hash_concurrency: None,
            ..common::Options::default()
        })
        .await;
    let check = uncached.url("/api/v1/authz/check?permission=change.read");
    let t = token.clone();
    let authz_off = common::run(conns, dur, StatusCode::OK, move |c, _| {
        c.get(&check).bearer_auth(&t)
    })
    .await;
    println!(
        "{}  = {:.2}x bare",
        authz_off.line("GET /api/v1/authz/check, session cache off"),
        authz_off.rps() / base.rps()
    );
    uncached.stop().await;

    let me = srv.url("/api/v1/me");
    let t = token.clone();
    let me = common::run(conns, dur, StatusCode::OK, move |c, _| {
        c.get(&me).bearer_auth(&t)
    })
    .await;
    println!(
        "{}  = {:.2}x bare",
        me.line("GET /api/v1/me"),
        me.rps() / base.rps()
    );

    let es = srv.url("/api/v1/working-days/earliest-start?notified_on=2026-11-23");
    let t = token.clone();
    let es = common::run(conns, dur, StatusCode::OK, move |c, _| {
        c.get(&es).bearer_auth(&t)
    })
    .await;
    println!(
        "{}  = {:.2}x bare",
        es.line("GET /api/v1/working-days/earliest-start"),
        es.rps() / base.rps()
    );

    // authz/check while LOGINS logins hash passwords at once, round after round: with the
    // service's own bound on concurrent hashes (half the cores), then on a second instance that
    // lets all 16 hash at the same time (what the bound protects against).
    let users = Arc::new(login_users);
    let (under, logins, rounds, peak) = under_logins(&srv, &token, users.clone(), conns, dur).await;
    println!(
        "{}  (target p99 < 20 ms)",
        under.line(&format!("authz/check while {LOGINS} logins hash at once"))
    );
    println!(
        "  logins meanwhile: {logins} succeeded in {rounds} rounds of {LOGINS} ({:.1}/s)",
        logins as f64 / under.elapsed.as_secs_f64()
    );
    println!(
        "  resident memory (whole bench process: server + load generator): idle {rss_idle:.1} MiB, \
         peak under load {peak:.1} MiB"
    );
    let unbounded = srv
        .second_instance_with(common::Options {
            hash_concurrency: Some(LOGINS),
            ..common::Options::default()
        })
        .await;
    let (under, logins, rounds, peak) = under_logins(&unbounded, &token, users, conns, dur).await;
    println!(
        "{}",
        under.line(&format!(
            "  same, {LOGINS} hashes allowed at once (no bound)"
        ))
    );
    println!(
        "  logins meanwhile: {logins} in {rounds} rounds ({:.1}/s); peak memory {peak:.1} MiB",
        logins as f64 / under.elapsed.as_secs_f64()
    );
    unbounded.stop().await;

    let _ = stop_bare.send(());
    srv.stop().await;
}

/// authz/check on `srv` while rounds of logins (one per user, all at once) run; returns the
/// latency figures, the logins that succeeded, the rounds and the peak resident memory (MiB).
async fn under_logins(
    srv: &common::BenchServer,
    token: &str,
    users: Arc<Vec<String>>,
    conns: usize,
    dur: Duration,
) -> (common::Load, u64, u64, f64) {
    let login_url = srv.url("/api/v1/auth/login");
    let peak_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let peak = peak_rss.clone();
        tokio::spawn(async move {
            loop {
                let kib = (common::rss_mib() * 1024.0) as u64;
                peak.fetch_max(kib, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let logins_ok = Arc::new(AtomicU64::new(0));
    let check = srv.url("/api/v1/authz/check?permission=change.read");
    let t = token.to_string();
    let main = common::run(conns, dur, StatusCode::OK, move |c, _| {
        c.get(&check).bearer_auth(&t)
    });
    let ok = logins_ok.clone();
    let (under, rounds) = common::while_running(main, move || {
        let (users, url, ok) = (users.clone(), login_url.clone(), ok.clone());
        async move {
            let mut set = tokio::task::JoinSet::new();
            for u in users.iter() {
                let (url, u, ok) = (url.clone(), u.clone(), ok.clone());
                set.spawn(async move {
                    let r = reqwest::Client::new()
                        .post(&url)
                        .json(&json!({"username": u, "password": USER_PASSWORD}))
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status() == StatusCode::OK) {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
            set.join_all().await;
            true
        }
    })
    .await;
    sampler.abort();
    let peak = peak_rss.load(Ordering::Relaxed) as f64 / 1024.0;
    (under, logins_ok.load(Ordering::Relaxed), rounds, peak)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", common::machine_line());
    let dur = common::secs(5);
    rt.block_on(async {
        for b in common::backends() {
            bench(b, dur).await;
        }
    });
    println!("\n{}", common::machine_line());
}
