//! Issue 15: just-in-time database accounts, measured from outside the server.
//!
//! A separate process that drives an already running `changeguard serve` (release build,
//! shipped defaults, a fresh database) over HTTP on loopback, and watches the target databases
//! directly. It measures, per account:
//! - the latency of `POST /api/v1/changes/{id}/database-access`, and the time from before that
//!   request until a fresh connection with the returned account has run `SELECT 1`;
//! - after the change's planned end: when the account left the catalog (`pg_roles`,
//!   `mysql.user`) and when a session held open with it was ended, minus the planned end;
//! - at `POST …/complete`: the request's latency and when the account left the catalog.
//!
//! Settings (environment): `CG_URL` (default `http://127.0.0.1:18515`),
//! `CG_ADMIN_PASSWORD` (the bootstrap admin's), `CG_ADMIN2` and `CG_ADMIN2_PASSWORD` (a second
//! admin made with `changeguard user create --role admin`, to approve the manager's grant),
//! `JIT_TARGETS` (`postgres,mysql`), `JIT_OPERATORS` (50), `JIT_PER_CHANGE` (2),
//! `JIT_PG_URL` (`postgres://postgres@127.0.0.1:5432/jit_bench`: the target and the watcher),
//! `JIT_MY_URL` (`mysql://root@127.0.0.1:3306/jit_bench`: the watcher),
//! `JIT_MY_ADMIN`/`JIT_MY_ADMIN_PASSWORD` (the MariaDB account changeguard is given),
//! `JIT_OUT` (raw CSV files, default `/tmp/jit-bench`). Needs a fresh changeguard database.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, TimeDelta, Utc};
use reqwest::{Client, Method};
use serde_json::{Value, json};
use sqlx::Connection;

use changeguard::vault::totp;

const TEMP: &str = "temporary password of the bench";
const PASSWORD: &str = "a long password of the bench";

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One person of the service: password, TOTP secret, the last step spent, a token.
struct Person {
    name: String,
    password: String,
    secret: Vec<u8>,
    last_step: i64,
    token: String,
    token_at: Instant,
}

struct Api {
    http: Client,
    base: String,
}

impl Api {
    async fn call(&self, method: Method, path: &str, token: &str, body: Value) -> Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let r = req.json(&body).send().await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{path}: {status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Result<Value> {
        self.call(Method::POST, path, token, body).await
    }

    /// Signs in (with a code when enrolled); a person without a factor enrols one.
    async fn login(&self, p: &mut Person) -> Result<()> {
        let mut body = json!({"username": p.name, "password": p.password});
        if !p.secret.is_empty() {
            body["totp"] = json!(next_code(p).await);
        }
        let doc = self.post("/api/v1/auth/login", "", body).await?;
        p.token = doc["access_token"].as_str().context("token")?.to_string();
        p.token_at = Instant::now();
        if doc["enrolment_required"] == true {
            let e = self.post("/api/v1/me/totp", &p.token, json!({})).await?;
            p.secret = totp::decode(e["secret"].as_str().context("secret")?).context("base32")?;
            let code = next_code(p).await;
            self.post("/api/v1/me/totp/confirm", &p.token, json!({"code": code}))
                .await?;
        }
        Ok(())
    }

    /// A token younger than 10 minutes (they live 15).
    async fn token(&self, p: &mut Person) -> Result<String> {
        if p.token_at.elapsed() > Duration::from_secs(600) {
            self.login(p).await?;
        }
        Ok(p.token.clone())
    }
}

/// The code of the current step, waiting for the next step if this person spent this one (a
/// code works once per person and step).
async fn next_code(p: &mut Person) -> String {
    loop {
        let step = totp::step_of(Utc::now().timestamp());
        if step > p.last_step {
            p.last_step = step;
            return totp::code_at(&p.secret, step);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn person(name: &str, password: &str) -> Person {
    Person {
        name: name.into(),
        password: password.into(),
        secret: Vec::new(),
        last_step: 0,
        token: String::new(),
        token_at: Instant::now(),
    }
}

/// A user as a bank makes one: temporary password, changed at the first login, then the role
/// (a privileged one approved by the second admin), then the second factor.
async fn make_user(api: &Api, admin: &str, admin2: &str, name: &str, role: &str) -> Result<Person> {
    let u = api
        .post(
            "/api/v1/users",
            admin,
            json!({"username": name, "display_name": name, "department": "科技部",
                   "email": format!("{name}@bank.example"), "password": TEMP}),
        )
        .await?;
    let first = api
        .post(
            "/api/v1/auth/login",
            "",
            json!({"username": name, "password": TEMP}),
        )
        .await?;
    let t = first["access_token"].as_str().context("token")?;
    api.post(
        "/api/v1/me/password",
        t,
        json!({"current_password": TEMP, "new_password": PASSWORD}),
    )
    .await?;
    let g = api
        .post(
            &format!("/api/v1/users/{}/roles", u["id"]),
            admin,
            json!({"role": role}),
        )
        .await?;
    if g["status"] == "pending" {
        api.post(
            &format!("/api/v1/role-grants/{}/approve", g["id"]),
            admin2,
            json!({}),
        )
        .await?;
    }
    let mut p = person(name, PASSWORD);
    api.login(&mut p).await?;
    Ok(p)
}

/// A target database: how changeguard reaches it, and the bench's own watcher connection.
struct Target {
    engine: &'static str,
    name: &'static str,
    port: u16,
    database: String,
    admin: String,
    admin_password: String,
    grants: Value,
    watch_url: String,
}

enum Conn {
    Pg(sqlx::PgConnection),
    My(sqlx::MySqlConnection),
}

impl Conn {
    async fn open(t: &Target, user: &str, password: &str) -> Result<Conn, sqlx::Error> {
        Ok(match t.engine {
            "postgres" => Conn::Pg(
                sqlx::PgConnection::connect_with(
                    &sqlx::postgres::PgConnectOptions::new()
                        .host("127.0.0.1")
                        .port(t.port)
                        .database(&t.database)
                        .username(user)
                        .password(password),
                )
                .await?,
            ),
            _ => Conn::My(
                sqlx::MySqlConnection::connect_with(
                    &sqlx::mysql::MySqlConnectOptions::new()
                        .host("127.0.0.1")
                        .port(t.port)
                        .database(&t.database)
                        .username(user)
                        .password(password),
                )
                .await?,
            ),
        })
    }

    async fn watcher(t: &Target) -> Result<Conn> {
        Ok(match t.engine {
            "postgres" => Conn::Pg(sqlx::PgConnection::connect(&t.watch_url).await?),
            _ => Conn::My(sqlx::MySqlConnection::connect(&t.watch_url).await?),
        })
    }

    async fn select1(&mut self) -> bool {
        match self {
            Conn::Pg(c) => sqlx::query("SELECT 1").execute(c).await.is_ok(),
            Conn::My(c) => sqlx::query("SELECT 1").execute(c).await.is_ok(),
        }
    }

    /// The `cg_…` accounts the target's catalog holds now.
    async fn accounts(&mut self) -> Result<Vec<String>> {
        Ok(match self {
            Conn::Pg(c) => {
                sqlx::query_scalar("SELECT rolname::text FROM pg_roles WHERE rolname LIKE 'cg\\_%'")
                    .fetch_all(c)
                    .await?
            }
            Conn::My(c) => {
                sqlx::query_scalar(
                    "SELECT CAST(User AS CHAR) FROM mysql.user WHERE User LIKE 'cg\\_%'",
                )
                .fetch_all(c)
                .await?
            }
        })
    }
}

fn targets() -> Vec<Target> {
    let wanted = env("JIT_TARGETS", "postgres,mysql");
    let mut out = Vec::new();
    if wanted.contains("postgres") {
        out.push(Target {
            engine: "postgres",
            name: "pg",
            port: 5432,
            database: "jit_bench".into(),
            // Trust authentication on this machine: the password is not checked.
            admin: "postgres".into(),
            admin_password: "unused-with-trust-auth".into(),
            grants: json!({"update": ["jit_writer"], "read": ["jit_reader"]}),
            watch_url: env("JIT_PG_URL", "postgres://postgres@127.0.0.1:5432/jit_bench"),
        });
    }
    if wanted.contains("mysql") {
        out.push(Target {
            engine: "mysql",
            name: "maria",
            port: 3306,
            database: "jit_bench".into(),
            admin: env("JIT_MY_ADMIN", "jit_admin"),
            admin_password: env("JIT_MY_ADMIN_PASSWORD", "JitAdmin2026bench"),
            grants: json!({"update": ["UPDATE"], "read": ["SELECT"]}),
            watch_url: env("JIT_MY_URL", "mysql://root@127.0.0.1:3306/jit_bench"),
        });
    }
    out
}

/// An emergency `database`/`update` change on core-db from a minute ago to `end`, approved by
/// the manager and started by its assignee. Returns its id.
async fn change(api: &Api, op: &mut Person, mgr: &mut Person, end: DateTime<Utc>) -> Result<i64> {
    let t = api.token(op).await?;
    let c = api
        .post(
            "/api/v1/changes",
            &t,
            json!({"title": "核心库紧急修复 / core-db hotfix", "category": "database",
                   "action": "update", "systems": ["core-db"], "description": "修复数据",
                   "risk": "high", "rollback_plan": "从备份恢复", "emergency": true,
                   "justification": "生产故障 / production outage",
                   "planned_start": (Utc::now() - TimeDelta::minutes(1)).to_rfc3339(),
                   "planned_end": end.to_rfc3339()}),
        )
        .await?;
    let id = c["id"].as_i64().context("change id")?;
    let m = api.token(mgr).await?;
    api.post(&format!("/api/v1/changes/{id}/approve"), &m, json!({}))
        .await?;
    api.post(&format!("/api/v1/changes/{id}/start"), &t, json!({}))
        .await?;
    Ok(id)
}

struct Issued {
    user: String,
    password: String,
    change: usize,
    post_ms: f64,
    usable_ms: f64,
}

/// Asks for an account (the assignee's current code) and connects with it until `SELECT 1` runs.
async fn issue(api: &Api, t: &Target, op: &mut Person, change: i64) -> Result<(Issued, Conn)> {
    let token = api.token(op).await?;
    let code = next_code(op).await;
    let t0 = Instant::now();
    let a = api
        .post(
            &format!("/api/v1/changes/{change}/database-access"),
            &token,
            json!({"database": t.name, "totp": code}),
        )
        .await?;
    let post_ms = ms(t0.elapsed());
    let user = a["username"].as_str().context("username")?.to_string();
    let password = a["password"].as_str().context("password")?.to_string();
    // Retried (every 5 ms, at most 5 s) in case the account were not usable at once.
    let conn = loop {
        if let Ok(mut c) = Conn::open(t, &user, &password).await
            && c.select1().await
        {
            break c;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            bail!("{user}: not usable 5 s after the request");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let usable_ms = ms(t0.elapsed());
    let issued = Issued {
        user,
        password,
        change: 0,
        post_ms,
        usable_ms,
    };
    Ok((issued, conn))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// "n=… p50 p99 min max" by nearest rank.
fn summary(label: &str, xs: &[f64]) -> String {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return format!("{label}: no samples");
    }
    let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "| {label} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
        v.len(),
        rank(0.50),
        rank(0.99),
        v[0],
        v[v.len() - 1]
    )
}

fn write_csv(name: &str, header: &str, rows: &[String]) -> Result<()> {
    let dir = env("JIT_OUT", "/tmp/jit-bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        format!("{dir}/{name}.csv"),
        format!("{header}\n{}\n", rows.join("\n")),
    )?;
    Ok(())
}

async fn run_target(
    api: &Api,
    admin: &mut Person,
    mgr: &mut Person,
    ops: &mut [Person],
    t: &Target,
) -> Result<()> {
    let per_change: usize = env("JIT_PER_CHANGE", "2").parse()?;
    let a = api.token(admin).await?;
    let cred = api
        .post(
            "/api/v1/credentials",
            &a,
            json!({"name": format!("{} admin", t.name), "system": "core-db", "account": t.admin,
                   "kind": "password", "secret": t.admin_password}),
        )
        .await?;
    api.post(
        "/api/v1/systems/core-db/databases",
        &a,
        json!({"name": t.name, "engine": t.engine, "host": "127.0.0.1", "port": t.port,
               "database": t.database, "admin_credential_id": cred["id"], "grants": t.grants}),
    )
    .await?;
    let mut watch = Conn::watcher(t).await?;
    // Accounts of other users of the shared server (the tests' `cg_admin_…`) may be there: only
    // the accounts this run is issued are watched.
    let before = watch.accounts().await?.len();
    if before > 0 {
        eprintln!(
            "{}: {before} cg_ accounts of others on the target, not watched",
            t.engine
        );
    }

    // One change per operator whose window ends at a staggered time (3 s apart, from 3 min on),
    // and one per operator for the completion.
    let base = Utc::now() + TimeDelta::minutes(3);
    let mut ends = Vec::new();
    let mut windows = Vec::new();
    let mut completions = Vec::new();
    for (i, op) in ops.iter_mut().enumerate() {
        let end = base + TimeDelta::seconds(3 * i as i64);
        windows.push(change(api, op, mgr, end).await?);
        ends.push(end);
        completions.push(change(api, op, mgr, Utc::now() + TimeDelta::hours(2)).await?);
    }
    eprintln!(
        "{}: {} changes filed, approved, started",
        t.engine,
        2 * ops.len()
    );

    // Time to a usable account: rounds over the operators, one request at a time.
    let mut issued = Vec::new();
    let mut held = Vec::new();
    for round in 0..per_change {
        for (i, op) in ops.iter_mut().enumerate() {
            let (mut a, conn) = issue(api, t, op, windows[i]).await?;
            a.change = i;
            // A session of every other change stays open, to see when it is ended (few enough
            // for the shared PostgreSQL's 100 connections).
            if round == 0 && i % 2 == 0 {
                held.push((i, conn));
            }
            issued.push(a);
        }
        eprintln!("{}: round {} issued", t.engine, round + 1);
    }
    if Utc::now() >= base {
        bail!("issuing took past the first window's end; raise the offset");
    }

    // Revocation after the window's end: watch the catalog and the held sessions every 100 ms.
    let mut gone: HashMap<String, DateTime<Utc>> = HashMap::new();
    let mut ended: HashMap<usize, DateTime<Utc>> = HashMap::new();
    let deadline = *ends.last().context("no change")? + TimeDelta::minutes(3);
    let mut last_live = 0;
    while gone.len() < issued.len() || ended.len() < held.len() {
        if Utc::now() > deadline {
            eprintln!(
                "{}: deadline reached before every account was gone",
                t.engine
            );
            break;
        }
        let live = watch.accounts().await?;
        let now = Utc::now();
        for a in &issued {
            if !live.contains(&a.user) {
                gone.entry(a.user.clone()).or_insert(now);
            }
        }
        for (i, conn) in held.iter_mut() {
            if !ended.contains_key(i) && !conn.select1().await {
                ended.insert(*i, Utc::now());
            }
        }
        if live.len() != last_live {
            eprintln!("{}: {} {} live", t.engine, now.format("%T%.3f"), live.len());
            last_live = live.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Tidy up: complete the expired changes.
    for (i, op) in ops.iter_mut().enumerate() {
        let token = api.token(op).await?;
        api.post(
            &format!("/api/v1/changes/{}/complete", windows[i]),
            &token,
            json!({"outcome": "succeeded", "notes": "完成 / done"}),
        )
        .await?;
    }

    // Revocation at completion: one account per operator in its second change, a session held,
    // then the assignee completes the change.
    let mut completion = Vec::new();
    for (i, op) in ops.iter_mut().enumerate() {
        let (a, mut conn) = issue(api, t, op, completions[i]).await?;
        let token = api.token(op).await?;
        let t0 = Instant::now();
        api.post(
            &format!("/api/v1/changes/{}/complete", completions[i]),
            &token,
            json!({"outcome": "succeeded", "notes": "完成 / done"}),
        )
        .await?;
        let post_ms = ms(t0.elapsed());
        let gone_ms = loop {
            if !watch.accounts().await?.contains(&a.user) {
                break ms(t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(120) {
                bail!("{}: still there 120 s after completion", a.user);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let session_ended = !conn.select1().await;
        let relogin = Conn::open(t, &a.user, &a.password).await.is_ok();
        completion.push((a, post_ms, gone_ms, session_ended, relogin));
    }

    let delay = |at: Option<&DateTime<Utc>>, i: usize| {
        at.map(|at| (*at - ends[i]).num_milliseconds() as f64 / 1000.0)
    };
    let gone_s: Vec<f64> = issued
        .iter()
        .filter_map(|a| delay(gone.get(&a.user), a.change))
        .collect();
    let ended_s: Vec<f64> = held
        .iter()
        .filter_map(|(i, _)| delay(ended.get(i), *i))
        .collect();
    let post: Vec<f64> = issued.iter().map(|a| a.post_ms).collect();
    let usable: Vec<f64> = issued.iter().map(|a| a.usable_ms).collect();
    println!(
        "\n### {} ({} accounts, {} operators)\n",
        t.engine,
        issued.len(),
        ops.len()
    );
    println!("| measure | n | p50 | p99 | min | max |\n|---|---:|---:|---:|---:|---:|");
    println!("{}", summary("POST database-access (ms)", &post));
    println!("{}", summary("request → first SELECT 1 (ms)", &usable));
    println!(
        "{}",
        summary("window end → account gone from catalog (s)", &gone_s)
    );
    println!(
        "{}",
        summary("window end → held session ended (s)", &ended_s)
    );
    let c_post: Vec<f64> = completion.iter().map(|c| c.1).collect();
    let c_gone: Vec<f64> = completion.iter().map(|c| c.2).collect();
    println!("{}", summary("POST complete (ms)", &c_post));
    println!("{}", summary("POST complete → account gone (ms)", &c_gone));
    println!(
        "\nnot gone by the deadline: {}; sessions not ended: {}; completion: sessions ended {}/{}, re-login refused {}/{}",
        issued.len() - gone_s.len(),
        held.len() - ended_s.len(),
        completion.iter().filter(|c| c.3).count(),
        completion.len(),
        completion.iter().filter(|c| !c.4).count(),
        completion.len()
    );

    let rows: Vec<String> = issued
        .iter()
        .map(|a| {
            format!(
                "{},{},{},{:.3},{:.3},{}",
                a.user,
                a.change,
                ends[a.change].to_rfc3339(),
                a.post_ms,
                a.usable_ms,
                delay(gone.get(&a.user), a.change).map_or("".into(), |d| d.to_string())
            )
        })
        .collect();
    write_csv(
        &format!("{}-window", t.engine),
        "user,change,planned_end,post_ms,usable_ms,gone_after_end_s",
        &rows,
    )?;
    let rows: Vec<String> = held
        .iter()
        .map(|(i, _)| {
            format!(
                "{i},{}",
                delay(ended.get(i), *i).map_or("".into(), |d| d.to_string())
            )
        })
        .collect();
    write_csv(
        &format!("{}-sessions", t.engine),
        "change,ended_after_end_s",
        &rows,
    )?;
    let rows: Vec<String> = completion
        .iter()
        .map(|(a, p, g, e, r)| format!("{},{p:.3},{g:.3},{e},{r}", a.user))
        .collect();
    write_csv(
        &format!("{}-completion", t.engine),
        "user,post_complete_ms,gone_ms,session_ended,relogin_ok",
        &rows,
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let api = Api {
        http: Client::builder().no_proxy().build()?,
        base: env("CG_URL", "http://127.0.0.1:18515"),
    };
    if !(api.base.starts_with("http://127.0.0.1") || api.base.starts_with("http://localhost")) {
        bail!("CG_URL must be on loopback");
    }
    let mut admin = person("admin", &std::env::var("CG_ADMIN_PASSWORD")?);
    api.login(&mut admin).await?;
    let mut admin2 = person(
        &env("CG_ADMIN2", "admin.li"),
        &std::env::var("CG_ADMIN2_PASSWORD")?,
    );
    api.login(&mut admin2).await?;
    let a = admin.token.clone();
    api.post(
        "/api/v1/systems",
        &a,
        json!({"key": "core-db", "name": "核心数据库", "owner_department": "科技部"}),
    )
    .await?;
    let started = Instant::now();
    let mut mgr = make_user(&api, &a, &admin2.token, "mgr.bench", "manager").await?;
    let n: usize = env("JIT_OPERATORS", "50").parse()?;
    let mut ops = Vec::new();
    for i in 0..n {
        ops.push(
            make_user(
                &api,
                &a,
                &admin2.token,
                &format!("op{i:02}"),
                "tech_operator",
            )
            .await?,
        );
    }
    eprintln!(
        "{} people made in {:.1} s",
        n + 1,
        started.elapsed().as_secs_f64()
    );
    for t in targets() {
        run_target(&api, &mut admin, &mut mgr, &mut ops, &t).await?;
    }
    Ok(())
}
