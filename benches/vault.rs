//! `cargo bench --bench vault`: reveal latency over HTTP (p50/p99) against `GET /api/v1/me` in
//! the same run, on SQLite and (when `CHANGEGUARD_TEST_POSTGRES_URL` is set) PostgreSQL; plus
//! the in-process cost of the policy decision and the decryption. std::time::Instant only.
//!
//! Every reveal needs a fresh, single-use second factor, so the run signs in many operators and
//! spends their recovery codes (the same transaction, audit entry and decryption as a TOTP code).

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use reqwest::Client;
use secrecy::SecretString;
use serde_json::{Value, json};

use changeguard::Server;
use changeguard::config::Settings;
use changeguard::vault::crypto::{self, Binding, MasterKey};
use changeguard::vault::{RevealFacts, totp};

const OPERATORS: usize = 30;
const PASSWORD: &str = "a long enough password";

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

async fn post(c: &Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut r = c.post(url).json(&body);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status} {v}");
    v
}

async fn run(backend: &str, database_url: String, dir: &std::path::Path) -> String {
    let settings = Settings {
        database_url,
        listen: "127.0.0.1:0".parse().unwrap(),
        policies_dir: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies"),
        bootstrap_admin_password: Some(SecretString::from("vault bench bootstrap secret 7f3a")),
        key_dir: Some(dir.to_path_buf()),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::build(settings, listener).await.unwrap();
    let base = format!("http://{}", server.local_addr().unwrap());
    let app = server.app.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    let c = Client::new();
    let u = |p: &str| format!("{base}{p}");
    let login = |name: &str, pw: &str| {
        let c = c.clone();
        let url = u("/api/v1/auth/login");
        let body = json!({"username": name, "password": pw});
        async move {
            post(&c, url, None, body).await["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let admin = login("admin", "vault bench bootstrap secret 7f3a").await;
    post(
        &c,
        u("/api/v1/systems"),
        Some(&admin),
        json!({"key": "core-db", "name": "核心数据库", "owner_department": "科技部"}),
    )
    .await;
    let cred = post(&c, u("/api/v1/credentials"), Some(&admin),
        json!({"name": "core-db dba", "system": "core-db", "account": "dba", "kind": "password", "secret": "bench-secret"})).await["id"].as_i64().unwrap();
    // People are made as `changeguard user create --role R` makes them (the server's console):
    // their own password, the role in force at once.
    let mk_user = |name: String, role: &'static str| {
        let app = app.clone();
        async move {
            let user = changeguard::accounts::create_user(
                &app,
                None,
                changeguard::accounts::CreateUser {
                    username: name.clone(),
                    display_name: name.clone(),
                    department: "科技部".into(),
                    email: format!("{name}@bank.example"),
                    password: SecretString::from(PASSWORD),
                },
            )
            .await
            .unwrap();
            changeguard::accounts::grant_role_unattended(&app, user.id, role)
                .await
                .unwrap();
        }
    };
    mk_user("mgr.bench".into(), "manager").await;
    let mgr = login("mgr.bench", PASSWORD).await;
    // Operators with approved standing grants, TOTP and recovery codes.
    let mut spend: Vec<(String, String)> = Vec::new();
    for i in 0..OPERATORS {
        let name = format!("op.bench{i}");
        mk_user(name.clone(), "tech_operator").await;
        let token = login(&name, PASSWORD).await;
        let g = post(&c, u(&format!("/api/v1/credentials/{cred}/grants")), Some(&admin),
            json!({"grantee": name, "reason": "bench", "expires_at": (Utc::now() + TimeDelta::days(1)).to_rfc3339()})).await;
        post(
            &c,
            u(&format!("/api/v1/credential-grants/{}/approve", g["id"])),
            Some(&mgr),
            json!({}),
        )
        .await;
        let e = post(&c, u("/api/v1/me/totp"), Some(&token), json!({})).await;
        let secret = totp::decode(e["secret"].as_str().unwrap()).unwrap();
        let step = totp::step_of(Utc::now().timestamp());
        post(
            &c,
            u("/api/v1/me/totp/confirm"),
            Some(&token),
            json!({"code": totp::code_at(&secret, step - 1)}),
        )
        .await;
        let codes = post(
            &c,
            u("/api/v1/me/totp/recovery-codes"),
            Some(&token),
            json!({"code": totp::code_at(&secret, step)}),
        )
        .await;
        for code in codes["codes"].as_array().unwrap() {
            spend.push((token.clone(), code.as_str().unwrap().to_string()));
        }
    }
    // Warm-up, then alternate reveal and /me so both see the same conditions.
    for _ in 0..20 {
        c.get(u("/api/v1/me"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
    }
    let mut me = Vec::new();
    let mut reveal = Vec::new();
    for (token, code) in &spend {
        let t = Instant::now();
        let r = c
            .get(u("/api/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = r.bytes().await.unwrap();
        me.push(t.elapsed());
        let t = Instant::now();
        let r = c
            .post(u(&format!("/api/v1/credentials/{cred}/reveal")))
            .bearer_auth(token)
            .json(&json!({"reason": "bench", "totp": code}))
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap();
        assert!(status.is_success(), "{status} {v}");
        reveal.push(t.elapsed());
    }
    me.sort();
    reveal.sort();

    // In process: the policy decision and the decryption of one reveal.
    let who = changeguard::rbac::Principal {
        user_id: 3,
        username: "op.bench0".into(),
        display_name: String::new(),
        department: "科技部".into(),
        email: String::new(),
        roles: vec!["tech_operator".into()],
        session_id: String::new(),
        token: None,
        permitted_by: Vec::new(),
        scope: changeguard::db::users::SessionScope::Full,
    };
    let credential = changeguard::db::vault::get_credential(&app.db, cred)
        .await
        .unwrap();
    let facts = RevealFacts {
        window: None,
        within_window: false,
        standing_grant: true,
    };
    let n = 20_000u32;
    let t = Instant::now();
    for _ in 0..n {
        assert!(black_box(changeguard::vault::decide(&app, &who, &credential, &facts)).allowed);
    }
    let decide_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    let master = MasterKey::new(crypto::generate_master()).unwrap();
    let b = Binding {
        kind: "credential",
        id: 1,
        version: 1,
    };
    let sealed = crypto::seal(&master, b, b"bench-secret").unwrap();
    let t = Instant::now();
    for _ in 0..n {
        black_box(crypto::open(&[&master], b, black_box(&sealed)).unwrap());
    }
    let open_us = t.elapsed().as_secs_f64() * 1e6 / f64::from(n);

    let _ = tx.send(());
    let _ = handle.await;
    format!(
        "| {backend} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {:.1} | {:.1} |\n",
        reveal.len(),
        pct(&me, 0.5),
        pct(&me, 0.99),
        pct(&reveal, 0.5),
        pct(&reveal, 0.99),
        pct(&reveal, 0.5) - pct(&me, 0.5),
        decide_us,
        open_us,
    )
}

#[tokio::main]
async fn main() {
    let mut out = String::from(
        "| backend | reveals | GET /me p50 / p99 ms | reveal p50 / p99 ms | reveal − /me p50 ms | decide µs | unwrap+decrypt µs |\n|---|---|---|---|---|---|---|\n",
    );
    let dir = tempfile::tempdir().unwrap();
    out.push_str(
        &run(
            "SQLite",
            format!("sqlite:{}", dir.path().join("bench.db").display()),
            dir.path(),
        )
        .await,
    );
    if let Ok(admin_url) = std::env::var("CHANGEGUARD_TEST_POSTGRES_URL") {
        use sqlx::Connection;
        let name = format!("cg_bench_{}", uuid::Uuid::new_v4().simple());
        let mut c = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        let url = match admin_url.rfind('/') {
            Some(i) => format!("{}/{name}", &admin_url[..i]),
            None => admin_url.clone(),
        };
        let pg_dir = tempfile::tempdir().unwrap();
        out.push_str(&run("PostgreSQL", url, pg_dir.path()).await);
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut c)
        .await;
    }
    print!("{out}");
}
