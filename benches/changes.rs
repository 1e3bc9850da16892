//! `cargo bench --bench changes` (issue 4): the real server in-process over loopback.
//!
//! Per backend (SQLite file, fresh PostgreSQL database):
//! - filing throughput, `POST /api/v1/changes` (notice rule, conflicts, audit entry, event, one
//!   transaction) against a plain INSERT of the same row (`db::changes::insert_change` + commit
//!   through the server's own pool) in the same run, same concurrency;
//! - `GET /api/v1/calendar` for one month with 100,000 changes stored (seeded in bulk with SQL,
//!   spread over 2022–2026, realistic statuses and systems): p50/p99 with 1 and 4 connections
//!   (target p99 < 50 ms).
//!
//! `BENCH_SECS` (default 5) per measurement, `BENCH_BACKENDS=sqlite|postgres`.

mod common;

use std::time::{Duration, Instant};

use changeguard::db::changes::{NewChange, insert_change};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use common::{Backend, BenchServer};
use reqwest::StatusCode;
use serde_json::json;

const SYSTEMS: [(&str, &str); 12] = [
    ("core-banking", "核心业务系统"),
    ("core-db", "核心数据库"),
    ("cs-platform", "客户服务平台"),
    ("e-bank", "网上银行"),
    ("mobile-bank", "手机银行"),
    ("branch-terminals", "网点终端"),
    ("atm", "ATM 前置"),
    ("payments", "支付系统"),
    ("credit", "信贷管理系统"),
    ("accounting", "会计核算系统"),
    ("network", "网络设备"),
    ("office", "办公系统"),
];
const CATEGORIES: [(&str, Option<&str>); 4] = [
    ("software_upgrade", None),
    ("hardware", Some("replace")),
    ("database", Some("update")),
    ("debugging", None),
];
const SEED: u64 = 100_000;
const FILING_CONNS: usize = 16;

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// First day of the filed windows: after the earliest start of any notice given today.
fn filing_base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 3, 16, 0, 0).unwrap() // 2026-12-04 00:00 Asia/Shanghai
}

/// The window of the n-th filing: 12 systems round-robin, 5-minute windows 10 minutes apart,
/// so filings do not pile up into one ever-growing conflict.
fn filing_window(n: u64) -> (usize, DateTime<Utc>, DateTime<Utc>) {
    let sys = (n % SYSTEMS.len() as u64) as usize;
    let slot = (n / SYSTEMS.len() as u64) % (27 * 144);
    let start = filing_base() + TimeDelta::minutes(10 * slot as i64);
    (sys, start, start + TimeDelta::minutes(5))
}

async fn setup(srv: &BenchServer) -> (String, i64, String) {
    let admin = srv.admin().await;
    let c = reqwest::Client::new();
    for (key, name) in SYSTEMS {
        let r = c
            .post(srv.url("/api/v1/systems"))
            .bearer_auth(&admin)
            .json(&json!({"key": key, "name": name, "owner_department": "科技部"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (op_id, op) = srv.user_with(&admin, "op.bench", &["tech_operator"]).await;
    (admin, op_id, op)
}

async fn filing(backend: Backend, dur: Duration) {
    let srv = common::start(backend).await;
    let (_, op_id, op) = setup(&srv).await;

    let url = srv.url("/api/v1/changes");
    let http = common::run(FILING_CONNS, dur, StatusCode::CREATED, move |c, n| {
        let (sys, start, end) = filing_window(n);
        let (category, action) = CATEGORIES[(n % 4) as usize];
        c.post(&url).bearer_auth(&op).json(&json!({
            "title": format!("客户服务平台升级 #{n} / platform upgrade"),
            "category": category,
            "action": action,
            "systems": [SYSTEMS[sys].0],
            "description": "升级到 2.3.0",
            "impact": "服务中断 5 分钟",
            "risk": "medium",
            "rollback_plan": "回退到 2.2.9 镜像",
            "planned_start": rfc(start),
            "planned_end": rfc(end),
        }))
    })
    .await;

    // The same rows, straight into the database through the server's pool: no HTTP, no auth,
    // no rules, no audit entry, no event.
    let app = srv.app.clone();
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::new();
    for w in 0..FILING_CONNS as u64 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = 1_000_000 + w;
            let notified = Utc::now();
            while Instant::now() < deadline {
                let t = Instant::now();
                let (sys, s, e) = filing_window(n);
                let (category, action) = CATEGORIES[(n % 4) as usize];
                let title = format!("客户服务平台升级 #{n} / platform upgrade");
                let systems = vec![SYSTEMS[sys].0.to_string()];
                let mut tx = app.db.begin().await.unwrap();
                insert_change(
                    &mut tx,
                    &NewChange {
                        title: &title,
                        category,
                        action,
                        systems: &systems,
                        description: "升级到 2.3.0",
                        impact: Some("服务中断 5 分钟"),
                        risk: "medium",
                        rollback_plan: "回退到 2.2.9 镜像",
                        planned_start: s,
                        planned_end: e,
                        requester_id: op_id,
                        assignee_id: op_id,
                        emergency: false,
                        justification: None,
                        notified_at: notified,
                        notified_on: "2026-11-27",
                        earliest_start: Some("2026-12-03"),
                        approval_plan: "[]",
                        standard_change: None,
                    },
                )
                .await
                .unwrap();
                common::commit_raw(tx).await;
                lat.push(t.elapsed());
                n += FILING_CONNS as u64;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    all.sort_unstable();
    let plain = common::Load {
        requests: all.len() as u64,
        failures: 0,
        elapsed,
        p50: all.get(all.len() / 2).copied().unwrap_or_default(),
        p99: all
            .get((all.len() as f64 * 0.99) as usize)
            .copied()
            .unwrap_or_default(),
        max: all.last().copied().unwrap_or_default(),
    };
    println!("{}", plain.line("plain INSERT of the same row (baseline)"));
    println!(
        "{}  = {:.2}x plain",
        http.line("POST /api/v1/changes"),
        http.rps() / plain.rps()
    );
    srv.stop().await;
}

/// A small deterministic mixer, so the seed is the same every run.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

/// Inserts `SEED` changes spread over 2022-01-01..2027-01-01 in batches of multi-row INSERTs.
async fn seed(srv: &BenchServer, op_id: i64) -> Duration {
    let t = Instant::now();
    let first = Utc.with_ymd_and_hms(2022, 1, 1, 0, 0, 0).unwrap();
    let span = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() - first;
    let now = Utc::now();
    let step = span.num_seconds() / SEED as i64;
    const BATCH: u64 = 1000;
    let mut id = 10_000_000i64;
    let mut i = 0u64;
    while i < SEED {
        let n = BATCH.min(SEED - i);
        let mut change_sql = String::from(
            "INSERT INTO change_requests (id, title, category, action, systems, description, \
             impact, risk, rollback_plan, planned_start, planned_end, requester_id, assignee_id, \
             emergency, justification, status, notified_at, notified_on, earliest_start, \
             outcome, created_at, updated_at) VALUES ",
        );
        let mut sys_sql =
            String::from("INSERT INTO change_systems (change_id, system_key) VALUES ");
        let mut rows = Vec::new();
        let mut sys_rows = Vec::new();
        for k in 0..n {
            let r = mix(i + k);
            // Mostly at night (22:00–04:00 bank time), some by day.
            let base = first + TimeDelta::seconds(step * (i + k) as i64);
            let start = base + TimeDelta::minutes((r % 120) as i64);
            let end = start + TimeDelta::minutes(30 + ((r >> 8) % 210) as i64);
            let (category, action) = CATEGORIES[((r >> 16) % 4) as usize];
            let s1 = ((r >> 20) % SYSTEMS.len() as u64) as usize;
            let mut systems = vec![SYSTEMS[s1].0];
            if (r >> 24).is_multiple_of(5) {
                let s2 = (s1 + 1 + ((r >> 28) % 11) as usize) % SYSTEMS.len();
                systems.push(SYSTEMS[s2].0);
            }
            let emergency = (r >> 32).is_multiple_of(33);
            let p = (r >> 40) % 100;
            let (status, outcome) = if end < now {
                match p {
                    0..=77 => ("completed", Some("succeeded")),
                    78..=80 => ("completed", Some("rolled_back")),
                    81..=82 => ("completed", Some("failed")),
                    83..=89 => ("cancelled", None),
                    90..=94 => ("rejected", None),
                    _ => ("expired", None),
                }
            } else if p < 55 {
                ("submitted", None)
            } else {
                ("approved", None)
            };
            let notified = start - TimeDelta::days(5 + (p % 10) as i64);
            let cid = id + k as i64;
            rows.push((
                cid,
                category,
                action,
                systems.clone(),
                start,
                end,
                emergency,
                status,
                outcome,
                notified,
            ));
            for s in systems {
                sys_rows.push((cid, s));
            }
        }
        let cols = 22;
        for (j, _) in rows.iter().enumerate() {
            if j > 0 {
                change_sql.push_str(", ");
            }
            let ph: Vec<String> = (1..=cols).map(|c| format!("${}", j * cols + c)).collect();
            change_sql.push_str(&format!("({})", ph.join(", ")));
        }
        for (j, _) in sys_rows.iter().enumerate() {
            if j > 0 {
                sys_sql.push_str(", ");
            }
            sys_sql.push_str(&format!("(${}, ${})", 2 * j + 1, 2 * j + 2));
        }
        let mut tx = srv.app.db.begin().await.unwrap();
        changeguard::on_tx!(&mut tx, |c| {
            let mut q = sqlx::query(sqlx::AssertSqlSafe(change_sql.clone()));
            for (
                cid,
                category,
                action,
                systems,
                start,
                end,
                emergency,
                status,
                outcome,
                notified,
            ) in &rows
            {
                let systems_json = serde_json::to_string(systems).unwrap();
                let notified_on = notified.format("%Y-%m-%d").to_string();
                q = q
                    .bind(*cid)
                    .bind(format!("{} 例行变更 #{cid}", systems[0]))
                    .bind(*category)
                    .bind(*action)
                    .bind(systems_json)
                    .bind("例行变更 / routine change")
                    .bind(Some("夜间窗口，无业务影响"))
                    .bind(["low", "medium", "high"][(*cid % 3) as usize])
                    .bind("回退到上一版本 / roll back to the previous version")
                    .bind(*start)
                    .bind(*end)
                    .bind(op_id)
                    .bind(op_id)
                    .bind(*emergency)
                    .bind(emergency.then_some("紧急修复 / urgent fix"))
                    .bind(*status)
                    .bind(*notified)
                    .bind(notified_on)
                    .bind(None::<String>)
                    .bind(*outcome)
                    .bind(*notified)
                    .bind(*notified);
            }
            q.execute(&mut *c).await.unwrap();
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sys_sql.clone()));
            for (cid, s) in &sys_rows {
                q = q.bind(*cid).bind(*s);
            }
            q.execute(&mut *c).await.unwrap();
        });
        common::commit_raw(tx).await;
        id += n as i64;
        i += n;
    }
    // Fresh statistics, as autovacuum/ANALYZE would have them on a live database.
    let mut tx = srv.app.db.begin().await.unwrap();
    let analyze = "ANALYZE";
    changeguard::on_tx!(&mut tx, |c| {
        sqlx::query(analyze).execute(&mut *c).await.unwrap();
    });
    common::commit_raw(tx).await;
    t.elapsed()
}

async fn calendar(backend: Backend, dur: Duration) {
    let srv = common::start(backend).await;
    let (admin, op_id, _) = setup(&srv).await;
    let (_, mgr) = srv.user_with(&admin, "mgr.bench", &["manager"]).await;
    let took = seed(&srv, op_id).await;
    println!(
        "seeded {SEED} changes (2022–2026, 12 systems) in {:.1} s",
        took.as_secs_f64()
    );

    for (from, to, what) in [
        ("2026-12-01", "2026-12-31", "upcoming month, open changes"),
        ("2025-06-01", "2025-06-30", "past month, closed changes"),
    ] {
        let url = srv.url(&format!("/api/v1/calendar?from={from}&to={to}"));
        let r = reqwest::Client::new()
            .get(&url)
            .bearer_auth(&mgr)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: serde_json::Value = r.json().await.unwrap();
        let days = body.as_array().map_or(0, Vec::len);
        let mut ids = std::collections::BTreeSet::new();
        let mut conflicts = 0;
        for d in body.as_array().into_iter().flatten() {
            for c in d["changes"].as_array().into_iter().flatten() {
                ids.insert(c["id"].as_i64().unwrap_or_default());
                conflicts += c["conflicts"].as_array().map_or(0, Vec::len);
            }
        }
        println!(
            "GET /api/v1/calendar {from}..{to} ({what}): {days} days, {} changes, {conflicts} conflict marks",
            ids.len()
        );
        for conns in [1, 4] {
            let (u, t) = (url.clone(), mgr.clone());
            let l = common::run(conns, dur, StatusCode::OK, move |c, _| {
                c.get(&u).bearer_auth(&t)
            })
            .await;
            println!(
                "{}  (target p99 < 50 ms)",
                l.line(&format!("  calendar one month, {conns} connection(s)"))
            );
        }
    }
    srv.stop().await;
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", common::machine_line());
    let dur = common::secs(5);
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    rt.block_on(async {
        for b in common::backends() {
            println!("\n== {}", common::name(b));
            if only.is_empty() || only == "filing" {
                filing(b, dur).await;
            }
            if only.is_empty() || only == "calendar" {
                calendar(b, dur).await;
            }
        }
    });
    println!("\n{}", common::machine_line());
}
