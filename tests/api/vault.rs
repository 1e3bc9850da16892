//! The credential vault through the real server: reveals bound to change windows and TOTP,
//! audit of every attempt, no plaintext at rest or in logs, tampering, wrong keys, rotation.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use secrecy::SecretString;
use serde_json::{Value, json};

use changeguard::vault::totp;

use crate::harness::{
    ADMIN_PASSWORD, Backend, JWT_SECRET_HEX, TestServer, body, problem, shipped_policies,
};

// ---------------------------------------------------------------- log capture

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Every log line of this test process (all levels), from the first call on.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let c = Captured::default();
        let writer = c.clone();
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(move || writer.clone())
            .try_init();
        c
    })
}

// ---------------------------------------------------------------- helpers

pub(crate) struct Vault {
    pub admin: String,
    pub op: String,
    pub op_id: i64,
    pub op2: String,
    pub op2_id: i64,
    pub mgr: String,
}

pub(crate) async fn setup(srv: &TestServer) -> Vault {
    let admin = srv.admin().await;
    let r = srv
        .post(
            "/api/v1/systems",
            &admin,
            json!({"key": "core-db", "name": "核心数据库", "owner_department": "科技部"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (op_id, op) = srv.user_with(&admin, "op.zhang", &["tech_operator"]).await;
    let (op2_id, op2) = srv.user_with(&admin, "op.li", &["tech_operator"]).await;
    let (_, mgr) = srv.user_with(&admin, "mgr.chen", &["manager"]).await;
    Vault {
        admin,
        op,
        op_id,
        op2,
        op2_id,
        mgr,
    }
}

pub(crate) async fn credential(srv: &TestServer, admin: &str, name: &str, secret: &str) -> i64 {
    let r = srv
        .post(
            "/api/v1/credentials",
            admin,
            json!({"name": name, "system": "core-db", "account": "dba", "kind": "password",
                   "secret": secret, "rotation_days": 90}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let c = body(r).await;
    assert!(!c.to_string().contains(secret));
    c["id"].as_i64().unwrap()
}

/// A TOTP secret of a user, enrolled and confirmed; returns the raw secret.
pub(crate) async fn enrol(srv: &TestServer, token: &str) -> Vec<u8> {
    let e = body(srv.post("/api/v1/me/totp", token, json!({})).await).await;
    assert!(
        e["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/changeguard:")
    );
    // The QR code for the console, drawn by the server (decoded in the unit tests).
    assert!(e["qr_svg"].as_str().unwrap().starts_with("<svg "));
    let secret = totp::decode(e["secret"].as_str().unwrap()).unwrap();
    let step = aligned_step(srv);
    let r = srv
        .post(
            "/api/v1/me/totp/confirm",
            token,
            json!({"code": totp::code_at(&secret, step - 1)}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    secret
}

/// The current TOTP step by the server's clock, moving it to the next step if fewer than 8 s
/// of this one remain, so the codes of this step and the next stay valid while a test uses them.
pub(crate) fn aligned_step(srv: &TestServer) -> i64 {
    let now = srv.now().timestamp();
    let left = totp::STEP_SECS - now.rem_euclid(totp::STEP_SECS);
    if left < 8 {
        srv.advance(TimeDelta::seconds(left));
    }
    totp::step_of(srv.now().timestamp())
}

/// An emergency change on core-db, approved and started by its assignee; returns its id.
pub(crate) async fn change_in_progress(srv: &TestServer, v: &Vault, token: &str) -> i64 {
    let now = Utc::now();
    let c = body(
        srv.post(
            "/api/v1/changes",
            token,
            json!({
                "title": "核心库紧急修复 / core-db hotfix", "category": "database", "action": "update",
                "systems": ["core-db"], "description": "修复索引", "risk": "high",
                "rollback_plan": "从备份恢复", "emergency": true,
                "justification": "生产故障 / production outage",
                "planned_start": (now - TimeDelta::minutes(5)).to_rfc3339(),
                "planned_end": (now + TimeDelta::hours(2)).to_rfc3339(),
            }),
        )
        .await,
    )
    .await;
    let id = c["id"].as_i64().unwrap_or_else(|| panic!("{c}"));
    let r = srv
        .post(&format!("/api/v1/changes/{id}/approve"), &v.mgr, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = srv
        .call(
            Method::POST,
            &format!("/api/v1/changes/{id}/start"),
            Some(token),
            None,
        )
        .await;
    assert_eq!(body(r).await["status"], "in_progress");
    id
}

async fn reveal(srv: &TestServer, token: &str, id: i64, body_: Value) -> reqwest::Response {
    srv.post(&format!("/api/v1/credentials/{id}/reveal"), token, body_)
        .await
}

/// The e-mail notices of one kind in the outbox (newest first), as the notifications API lists them.
pub(crate) async fn notices(srv: &TestServer, admin: &str, kind: &str) -> Vec<Value> {
    let all = body(srv.get("/api/v1/notifications", admin).await).await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|n| n["kind"] == kind)
        .cloned()
        .collect()
}

fn recipients(n: &Value) -> Vec<&str> {
    let mut r: Vec<&str> = n["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    r.sort_unstable();
    r
}

const ADMIN_MAIL: &str = "admin@localhost.localdomain";
/// The fixtures' second admin (who approved the privileged grants) hears what every admin hears.
const ADMINS_MAIL: [&str; 2] = ["admin.li@bank.example", ADMIN_MAIL];

/// Every row of every table as text: what a database dump would show.
async fn dump(srv: &TestServer) -> String {
    use sqlx::{Connection, Row};
    let mut out = String::new();
    match srv.backend {
        Backend::Sqlite => {
            // The files themselves, WAL included: nothing is hidden in a page.
            let path = changeguard::config::sqlite_path(&srv.database_url).unwrap();
            for suffix in ["", "-wal"] {
                if let Ok(bytes) = std::fs::read(format!("{path}{suffix}")) {
                    out.push_str(&String::from_utf8_lossy(&bytes));
                }
            }
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&srv.database_url)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            )
            .fetch_all(&mut c)
            .await
            .unwrap();
            assert!(tables.iter().any(|t| t == "credentials"));
            for t in tables {
                let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(t)::text FROM \"{t}\" t"
                )))
                .fetch_all(&mut c)
                .await
                .unwrap();
                for r in rows {
                    out.push_str(&r.get::<String, _>(0));
                    out.push('\n');
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- tests

crate::both_backends!(
    reveal_is_just_in_time_audited_and_leaves_no_plaintext,
    |srv| {
        let captured = logs();
        let canary = format!("CANARY-金库-{}", uuid::Uuid::new_v4().simple());
        let v = setup(srv).await;
        let id = credential(srv, &v.admin, "核心库 DBA", &canary).await;

        // Listing and reading never show the secret.
        let list = body(srv.get("/api/v1/credentials", &v.op).await).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert!(!list.to_string().contains(&canary));
        let one = body(srv.get(&format!("/api/v1/credentials/{id}"), &v.op).await).await;
        assert_eq!(one["version"], 1);
        assert_eq!(one["rotate_after_use"], false);
        assert!(one.get("secret").is_none());

        // Viewers hold no credential permission at all; admins manage but never reveal.
        problem(
            reveal(srv, &v.admin, id, json!({"reason": "x", "totp": "123456"})).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;

        let secret = enrol(srv, &v.op).await;
        // No change in progress on core-db.
        problem(
            reveal(srv, &v.op, id, json!({"reason": "看看", "totp": "000000"})).await,
            StatusCode::FORBIDDEN,
            "no_change_window",
        )
        .await;

        let change = change_in_progress(srv, &v, &v.op).await;
        // Another operator, not the assignee.
        enrol(srv, &v.op2).await;
        problem(
            reveal(
                srv,
                &v.op2,
                id,
                json!({"reason": "帮忙", "change_id": change, "totp": "000000"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "not_assignee",
        )
        .await;
        // The assignee, without a code.
        problem(
            reveal(
                srv,
                &v.op,
                id,
                json!({"reason": "修复索引", "change_id": change}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "totp_required",
        )
        .await;
        let step = aligned_step(srv);
        let code = totp::code_at(&secret, step);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        problem(
            reveal(
                srv,
                &v.op,
                id,
                json!({"reason": "修复索引", "change_id": change, "totp": wrong}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "totp_invalid",
        )
        .await;
        let r = reveal(
            srv,
            &v.op,
            id,
            json!({"reason": "修复索引", "change_id": change, "totp": code}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["cache-control"], "no-store");
        let got = body(r).await;
        assert_eq!(got["secret"], canary.as_str());
        assert_eq!(got["change_id"], change);
        assert_eq!(got["rotate_after_use"], true);
        // The same code again: replayed.
        problem(
            reveal(
                srv,
                &v.op,
                id,
                json!({"reason": "再看", "change_id": change, "totp": code}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "totp_replayed",
        )
        .await;

        // The admins hear of the reveal; the assignee is told to rotate after use.
        let told = notices(srv, &v.admin, "credential_revealed").await;
        assert_eq!(told.len(), 1, "{told:?}");
        assert_eq!(recipients(&told[0]), ADMINS_MAIL);
        assert!(told[0]["subject"].as_str().unwrap().contains("核心库 DBA"));
        assert_eq!(notices(srv, &v.admin, "rotation_reminder").await.len(), 1);
        let remind = |srv: &TestServer| {
            let app = srv.app.clone();
            async move {
                changeguard::vault::remind_rotation(&app, Utc::now())
                    .await
                    .unwrap()
            }
        };
        // The scheduled reminder (09:00 bank time): on a working day once per slot, never on a
        // day off.
        let cal = srv.app.calendar().await.unwrap();
        let mut d = Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .date_naive();
        let (mut work, mut off) = (None, None);
        while work.is_none() || off.is_none() {
            d = d.succ_opt().unwrap();
            if cal.is_working(d).unwrap() {
                work.get_or_insert(d);
            } else {
                off.get_or_insert(d);
            }
        }
        let tick = |d, secs| {
            let app = srv.app.clone();
            let t = crate::changes::at(d, 9 * 60) + TimeDelta::seconds(secs);
            async move {
                changeguard::notify::schedule::tick(&app, t)
                    .await
                    .unwrap()
                    .0
                    .iter()
                    .any(|(job, _)| *job == "rotation_reminder")
            }
        };
        assert!(tick(off.unwrap(), 30).await);
        assert_eq!(notices(srv, &v.admin, "rotation_reminder").await.len(), 1);
        assert!(tick(work.unwrap(), 30).await);
        assert!(!tick(work.unwrap(), 40).await, "one run per slot");
        let reminders = notices(srv, &v.admin, "rotation_reminder").await;
        assert_eq!(reminders.len(), 2);
        assert_eq!(recipients(&reminders[0]), vec!["op.zhang@bank.example"]);
        assert!(
            reminders[0]["subject"]
                .as_str()
                .unwrap()
                .contains("核心库 DBA")
        );

        // Flagged "rotate after use", the assignee is reminded until the rotation.
        let one = body(srv.get(&format!("/api/v1/credentials/{id}"), &v.op).await).await;
        assert_eq!(one["rotate_after_use"], true);
        assert_eq!(one["rotation_due"], true);
        assert_eq!(one["last_revealed_by"], "op.zhang");
        let reminders = body(srv.get("/api/v1/me/credential-reminders", &v.op).await).await;
        assert_eq!(reminders[0]["id"], id);
        // Who can reveal now: the assignee only, from the same policies.
        let who = body(
            srv.get(&format!("/api/v1/credentials/{id}/revealers"), &v.op)
                .await,
        )
        .await;
        let names: Vec<&str> = who
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["username"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["op.zhang"]);
        let mine = body(
            srv.get(
                &format!("/api/v1/users/{}/revealable-credentials", v.op_id),
                &v.op,
            )
            .await,
        )
        .await;
        assert_eq!(mine[0]["credential_id"], id);
        assert_eq!(mine[0]["change_id"], change);
        let theirs = body(
            srv.get(
                &format!("/api/v1/users/{}/revealable-credentials", v.op2_id),
                &v.op,
            )
            .await,
        )
        .await;
        assert_eq!(theirs, json!([]));

        // Another operator may not rotate it; the assignee does.
        problem(
            srv.post(
                &format!("/api/v1/credentials/{id}/rotate"),
                &v.op2,
                json!({"secret": "x"}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "not_rotator",
        )
        .await;
        let new_canary = format!("{canary}-v2");
        let rotated = body(
            srv.post(
                &format!("/api/v1/credentials/{id}/rotate"),
                &v.op,
                json!({"secret": new_canary}),
            )
            .await,
        )
        .await;
        assert_eq!(rotated["version"], 2);
        assert_eq!(rotated["rotate_after_use"], false);
        assert_eq!(
            body(srv.get("/api/v1/me/credential-reminders", &v.op).await).await,
            json!([])
        );
        // Rotated: no more reminders by e-mail either.
        assert_eq!(remind(srv).await, 0);
        assert_eq!(notices(srv, &v.admin, "rotation_reminder").await.len(), 2);

        // After the change completed: refused.
        let r = srv
            .post(
                &format!("/api/v1/changes/{change}/complete"),
                &v.op,
                json!({"outcome": "succeeded", "notes": "完成"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        problem(
        reveal(
            srv,
            &v.op,
            id,
            json!({"reason": "收尾", "change_id": change, "totp": totp::code_at(&secret, step + 1)}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "change_not_in_progress",
    )
    .await;
        // A disabled user: the token is dead, the attempt is still audited.
        let r = srv
            .call(
                Method::PATCH,
                &format!("/api/v1/users/{}", v.op2_id),
                Some(&v.admin),
                Some(json!({"active": false})),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        problem(
            reveal(
                srv,
                &v.op2,
                id,
                json!({"reason": "离职前", "totp": "123456"}),
            )
            .await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;

        // Every attempt is in the access log, with reason and change.
        let log = body(
            srv.get(&format!("/api/v1/credentials/{id}/access-log"), &v.admin)
                .await,
        )
        .await;
        let reveals: Vec<&Value> = log
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "credential.reveal")
            .collect();
        let codes: Vec<String> = reveals
            .iter()
            .map(|e| e["code"].as_str().unwrap_or("ok").to_string())
            .collect();
        for want in [
            "no_change_window",
            "not_assignee",
            "totp_required",
            "totp_invalid",
            "ok",
            "totp_replayed",
            "change_not_in_progress",
        ] {
            assert!(
                codes.iter().any(|c| c == want),
                "{want} missing in {codes:?}"
            );
        }
        // Exactly one entry per attempt (the gate does not add a second one).
        assert_eq!(reveals.len(), 7, "{codes:?}");
        let ok = reveals.iter().find(|e| e["outcome"] == "ok").unwrap();
        assert_eq!(ok["reason"], "修复索引");
        assert_eq!(ok["actor"], "op.zhang");
        let details: Value = serde_json::from_str(ok["details"].as_str().unwrap()).unwrap();
        assert_eq!(details["change_id"], change);
        assert!(
            ok["policy_ids"]
                .as_str()
                .unwrap()
                .contains("role.tech_operator")
        );
        let refused = reveals
            .iter()
            .find(|e| e["code"] == "not_assignee")
            .unwrap();
        assert!(
            refused["policy_ids"]
                .as_str()
                .unwrap()
                .contains("vault.reveal_just_in_time")
        );
        // The disabled user's attempt, recorded by the gate.
        let all = body(srv.get("/api/v1/audit?limit=200", &v.admin).await).await;
        assert!(
            all.as_array()
                .unwrap()
                .iter()
                .any(|e| e["action"] == "credential.reveal"
                    && e["code"] == "unauthenticated"
                    && e["target"] == format!("POST /api/v1/credentials/{id}/reveal"))
        );
        assert_eq!(
            body(srv.get("/api/v1/audit/verify", &v.admin).await).await["ok"],
            true
        );

        // No plaintext in the database or in any log line.
        let d = dump(srv).await;
        assert!(d.contains("核心库 DBA"), "the dump reads the rows");
        assert!(!d.contains(&canary), "the canary is in the database");
        let text = String::from_utf8_lossy(&captured.0.lock().unwrap()).to_string();
        assert!(text.contains("/reveal"), "the logs are captured");
        assert!(!text.contains(&canary), "the canary is in the logs");
    }
);

/// Overwrites columns of a credential row, as an intruder with database access would.
async fn set_blob(srv: &TestServer, id: i64, column: &str, value: &[u8]) {
    use sqlx::Connection;
    let sql = match column {
        "ciphertext" => "UPDATE credentials SET ciphertext = $1 WHERE id = $2",
        "wrapped_key" => "UPDATE credentials SET wrapped_key = $1 WHERE id = $2",
        _ => unreachable!(),
    };
    match srv.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&srv.database_url)
                .await
                .unwrap();
            sqlx::query(sql)
                .bind(value)
                .bind(id)
                .execute(&mut c)
                .await
                .unwrap();
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&srv.database_url)
                .await
                .unwrap();
            sqlx::query(sql)
                .bind(value)
                .bind(id)
                .execute(&mut c)
                .await
                .unwrap();
        }
    }
}

async fn get_blob(srv: &TestServer, id: i64) -> Vec<u8> {
    use sqlx::Connection;
    let sql = "SELECT ciphertext FROM credentials WHERE id = $1";
    match srv.backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&srv.database_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
        Backend::Postgres => {
            let mut c = sqlx::PgConnection::connect(&srv.database_url)
                .await
                .unwrap();
            sqlx::query_scalar(sql)
                .bind(id)
                .fetch_one(&mut c)
                .await
                .unwrap()
        }
    }
}

crate::both_backends!(
    tampered_ciphertexts_fail_cleanly_with_standing_grants,
    |srv| {
        let v = setup(srv).await;
        let a = credential(srv, &v.admin, "a", "secret-a").await;
        let b = credential(srv, &v.admin, "b", "secret-b").await;
        // A standing grant: expiry and reason mandatory; the grantee is not the approver.
        let g = json!({"grantee": "op.zhang", "reason": "值班 / on-call week",
                   "expires_at": (Utc::now() + TimeDelta::days(7)).to_rfc3339()});
        problem(
            srv.post(
                &format!("/api/v1/credentials/{a}/grants"),
                &v.admin,
                json!({"grantee": "op.zhang", "reason": "x",
                   "expires_at": (Utc::now() + TimeDelta::days(400)).to_rfc3339()}),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_expiry",
        )
        .await;
        let mut ids = Vec::new();
        for cred in [a, b] {
            let r = srv
                .post(
                    &format!("/api/v1/credentials/{cred}/grants"),
                    &v.admin,
                    g.clone(),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED);
            ids.push(body(r).await["id"].as_i64().unwrap());
        }
        let secret = enrol(srv, &v.op).await;
        // Not approved yet: no access.
        problem(
            reveal(srv, &v.op, a, json!({"reason": "值班", "totp": "000000"})).await,
            StatusCode::FORBIDDEN,
            "no_change_window",
        )
        .await;
        // The granter cannot approve their own grant; the operator holds no approval permission.
        problem(
            srv.call(
                Method::POST,
                &format!("/api/v1/credential-grants/{}/approve", ids[0]),
                Some(&v.admin),
                None,
            )
            .await,
            StatusCode::FORBIDDEN,
            "self_approval",
        )
        .await;
        problem(
            srv.call(
                Method::POST,
                &format!("/api/v1/credential-grants/{}/approve", ids[0]),
                Some(&v.op),
                None,
            )
            .await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        for gid in &ids {
            let r = srv
                .call(
                    Method::POST,
                    &format!("/api/v1/credential-grants/{gid}/approve"),
                    Some(&v.mgr),
                    None,
                )
                .await;
            assert_eq!(r.status(), StatusCode::OK);
        }
        let step = aligned_step(srv);
        let codes = body(
            srv.post(
                "/api/v1/me/totp/recovery-codes",
                &v.op,
                json!({"code": totp::code_at(&secret, step)}),
            )
            .await,
        )
        .await;
        let recovery = codes["codes"].as_array().unwrap().clone();
        assert_eq!(recovery.len(), 10);
        let got = body(
            reveal(
                srv,
                &v.op,
                a,
                json!({"reason": "值班", "totp": totp::code_at(&secret, step + 1)}),
            )
            .await,
        )
        .await;
        assert_eq!(got["secret"], "secret-a");
        assert_eq!(got["via_standing_grant"], true);
        assert_eq!(got["rotate_after_use"], false);

        // b's ciphertext replaced by a's: refused with a clear error, no crash, audited.
        let a_ct = get_blob(srv, a).await;
        set_blob(srv, b, "ciphertext", &a_ct).await;
        let r = reveal(
            srv,
            &v.op,
            b,
            json!({"reason": "值班", "totp": recovery[2]}),
        )
        .await;
        let doc = problem(
            r,
            StatusCode::INTERNAL_SERVER_ERROR,
            "credential_undecryptable",
        )
        .await;
        assert!(doc["detail"].as_str().unwrap().contains("does not decrypt"));
        assert!(!doc.to_string().contains("secret-a"));
        // One bit flipped in a's own ciphertext: the same.
        let mut flipped = a_ct.clone();
        flipped[3] ^= 0x01;
        set_blob(srv, a, "ciphertext", &flipped).await;
        let r = reveal(
            srv,
            &v.op,
            a,
            json!({"reason": "值班", "totp": recovery[0]}),
        )
        .await;
        problem(
            r,
            StatusCode::INTERNAL_SERVER_ERROR,
            "credential_undecryptable",
        )
        .await;
        // A recovery code works once.
        problem(
            reveal(
                srv,
                &v.op,
                a,
                json!({"reason": "值班", "totp": recovery[0]}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "totp_invalid",
        )
        .await;
        // The service lives on; both failures are in the access log.
        assert_eq!(srv.get("/api/v1/me", &v.op).await.status(), StatusCode::OK);
        let log = body(
            srv.get(&format!("/api/v1/credentials/{b}/access-log"), &v.admin)
                .await,
        )
        .await;
        assert!(
            log.as_array()
                .unwrap()
                .iter()
                .any(|e| e["code"] == "credential_undecryptable")
        );
        // Restored, it reads again.
        set_blob(srv, a, "ciphertext", &a_ct).await;
        let got = body(
            reveal(
                srv,
                &v.op,
                a,
                json!({"reason": "值班", "totp": recovery[1]}),
            )
            .await,
        )
        .await;
        assert_eq!(got["secret"], "secret-a");
    }
);

fn settings_for(srv: &TestServer, master_key: Option<&str>) -> changeguard::config::Settings {
    changeguard::config::Settings {
        database_url: srv.database_url.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        policies_dir: shipped_policies(),
        jwt_secret: Some(SecretString::from(JWT_SECRET_HEX)),
        bootstrap_admin_password: Some(SecretString::from(ADMIN_PASSWORD)),
        key_dir: Some(srv.dir.path().to_path_buf()),
        hash_concurrency: Some(1),
        master_key: master_key.map(SecretString::from),
        ..changeguard::config::Settings::default()
    }
}

async fn start_fails(srv: &TestServer, master_key: Option<&str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match changeguard::Server::build(settings_for(srv, master_key), listener).await {
        Ok(_) => panic!("started with a wrong master key"),
        Err(e) => format!("{e:#}"),
    }
}

crate::both_backends!(wrong_or_missing_master_key_refuses_to_start, |srv| {
    let v = setup(srv).await;
    let id = credential(srv, &v.admin, "a", "secret-a").await;
    let before = dump(srv).await;
    let err = start_fails(srv, Some(&"ab".repeat(32))).await;
    assert!(
        err.contains("not the credential vault's master key"),
        "{err}"
    );
    assert!(err.contains("Nothing was changed"), "{err}");
    // The key file gone (a restore without it): refused, and no new key file is made.
    let file = srv.dir.path().join("changeguard.master.key");
    let aside = srv.dir.path().join("aside.key");
    std::fs::rename(&file, &aside).unwrap();
    let err = start_fails(srv, None).await;
    assert!(err.contains("master key is missing"), "{err}");
    assert!(!file.exists());
    std::fs::rename(&aside, &file).unwrap();
    if srv.backend == Backend::Postgres {
        assert_eq!(
            before,
            dump(srv).await,
            "a refused start changed the database"
        );
    }
    let c = body(
        srv.get(&format!("/api/v1/credentials/{id}"), &v.admin)
            .await,
    )
    .await;
    assert_eq!(c["version"], 1);
    // The right key (the file) starts a second instance fine.
    let second = srv.second_instance().await;
    assert_eq!(
        second.get("/api/v1/credentials", &v.admin).await.status(),
        StatusCode::OK
    );
    second.stop().await;
});

crate::both_backends!(
    key_rotation_during_reveals_keeps_every_secret_readable,
    |srv| {
        let v = setup(srv).await;
        let mut creds = Vec::new();
        for i in 0..5 {
            let plain = format!("secret-{i}");
            creds.push((
                credential(srv, &v.admin, &format!("cred-{i}"), &plain).await,
                plain,
            ));
        }
        let secret = enrol(srv, &v.op).await;
        let step = aligned_step(srv);
        let recovery: Vec<String> = serde_json::from_value(
            body(
                srv.post(
                    "/api/v1/me/totp/recovery-codes",
                    &v.op,
                    json!({"code": totp::code_at(&secret, step)}),
                )
                .await,
            )
            .await["codes"]
                .clone(),
        )
        .unwrap();
        change_in_progress(srv, &v, &v.op).await;

        // Reveals and secret rotations run while the master key is rotated.
        let mut work = Vec::new();
        for i in 0..8usize {
            let (id, _) = creds[i % creds.len()].clone();
            let (token, payload, action) = if i >= 6 {
                (
                    v.admin.clone(),
                    json!({"secret": format!("rotated-{id}")}),
                    "rotate",
                )
            } else {
                (
                    v.op.clone(),
                    json!({"reason": "轮换期间", "totp": recovery[i]}),
                    "reveal",
                )
            };
            let url = srv.url(&format!("/api/v1/credentials/{id}/{action}"));
            let client = srv.client.clone();
            work.push(tokio::spawn(async move {
                let r = client
                    .post(url)
                    .bearer_auth(&token)
                    .json(&payload)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let v: Value = r.json().await.unwrap();
                (id, status, v)
            }));
        }
        let r = changeguard::vault::rotate::rotate(&srv.app).await.unwrap();
        assert_ne!(r.old_key_id, r.new_key_id);
        // Both steps of the rotation are in the audit trail, with key ids and nothing else.
        let trail = changeguard::db::audit::list(&srv.app.db, 50, None)
            .await
            .unwrap();
        for action in ["vault.master_key.rotate_begin", "vault.master_key.rotated"] {
            let e = trail.iter().find(|e| e.action == action).expect(action);
            assert_eq!(
                e.target.as_deref(),
                Some(&*format!("master_key:{}", r.new_key_id))
            );
            assert!(e.details.contains(&r.old_key_id), "{}", e.details);
        }
        for w in work {
            let (id, status, doc) = w.await.unwrap();
            assert_eq!(status, StatusCode::OK, "credential {id}: {doc}");
            if let Some(s) = doc["secret"].as_str() {
                assert!(
                    s == format!("secret-{}", (id - 1) % 5) || s == format!("rotated-{id}"),
                    "{s}"
                );
            }
        }
        let keys = changeguard::db::vault::master_keys(&srv.app.db)
            .await
            .unwrap();
        assert!(
            keys.iter()
                .any(|k| k.key_id == r.new_key_id && k.state == "current")
        );
        assert!(
            keys.iter()
                .any(|k| k.key_id == r.old_key_id && k.state == "retired")
        );
        let counts = changeguard::db::vault::wrapped_counts(&srv.app.db)
            .await
            .unwrap();
        assert_eq!(counts, vec![(r.new_key_id.clone(), 6)]);
        assert!(r.retired_file.as_ref().unwrap().exists());
        assert!(!srv.dir.path().join("changeguard.master.key.next").exists());

        // A fresh instance holds only the new key file and reads every secret; the TOTP secret
        // (re-wrapped too) still checks codes.
        let second = srv.second_instance().await;
        let mut readable = 0;
        for (n, (id, plain)) in creds.iter().enumerate() {
            let code = if n == 0 {
                totp::code_at(&secret, totp::step_of(srv.now().timestamp()).max(step + 1))
            } else {
                recovery[5 + n].clone()
            };
            let got = body(
                reveal(
                    &second,
                    &v.op,
                    *id,
                    json!({"reason": "轮换后", "totp": code}),
                )
                .await,
            )
            .await;
            let s = got["secret"].as_str().unwrap_or_else(|| panic!("{got}"));
            assert!(s == plain || s == format!("rotated-{id}"), "{s}");
            readable += 1;
        }
        assert_eq!(readable, 5);
        // The retired key no longer starts the service.
        let old = std::fs::read_to_string(r.retired_file.as_ref().unwrap()).unwrap();
        let err = start_fails(srv, Some(old.trim())).await;
        assert!(err.contains("retired"), "{err}");
        second.stop().await;

        // A crash after the promotion, before the key files were renamed (both renames, or
        // only the second, not done): the next start finishes them by itself.
        let dir = srv.dir.path();
        let (file, next) = (
            dir.join("changeguard.master.key"),
            dir.join("changeguard.master.key.next"),
        );
        let retired = r.retired_file.clone().unwrap();
        let new_key = std::fs::read_to_string(&file).unwrap();
        for both in [true, false] {
            std::fs::rename(&file, &next).unwrap();
            if both {
                std::fs::rename(&retired, &file).unwrap();
            }
            let again = srv.second_instance().await;
            assert_eq!(std::fs::read_to_string(&file).unwrap(), new_key);
            assert_eq!(std::fs::read_to_string(&retired).unwrap(), old);
            assert!(!next.exists());
            // It started on the database's current key (checked against its check value).
            let keys = changeguard::db::vault::master_keys(&again.app.db)
                .await
                .unwrap();
            assert!(
                keys.iter()
                    .any(|k| k.key_id == r.new_key_id && k.state == "current")
            );
            again.stop().await;
        }

        // A crash after the promotion, before the second re-wrap: a secret an instance sealed
        // with the old key just before the promotion is still wrapped by it. The next start
        // re-wraps it before it moves the old key aside; two instances starting at once both
        // succeed.
        let key_of = |text: &str| {
            let bytes = changeguard::keys::decode_key(text.trim()).unwrap();
            changeguard::vault::crypto::MasterKey::new(secrecy::SecretBox::new(Box::new(bytes)))
                .unwrap()
        };
        let (old_key, current_key) = (key_of(&old), key_of(&new_key));
        let mut tx = changeguard::deed::Deed::open(&srv.app).await.unwrap();
        let rows = changeguard::db::vault::wrapped_by(&mut tx, &r.new_key_id, 1)
            .await
            .unwrap();
        let sealed =
            changeguard::vault::crypto::rewrap(&current_key, &old_key, &rows[0].sealed).unwrap();
        changeguard::db::vault::store_wrapped(&mut tx, &rows[0], &sealed)
            .await
            .unwrap();
        tx.commit_bookkeeping(changeguard::deed::Bookkeeping::Rewrap)
            .await
            .unwrap();
        std::fs::rename(&file, &next).unwrap();
        std::fs::rename(&retired, &file).unwrap();
        let (a, b) = tokio::join!(srv.second_instance(), srv.second_instance());
        let counts = changeguard::db::vault::wrapped_counts(&srv.app.db)
            .await
            .unwrap();
        assert_eq!(counts, vec![(r.new_key_id.clone(), 6)]);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), new_key);
        assert_eq!(std::fs::read_to_string(&retired).unwrap(), old);
        assert!(!next.exists());
        let trail = changeguard::db::audit::list(&srv.app.db, 50, None)
            .await
            .unwrap();
        let finished: Vec<_> = trail
            .iter()
            .filter(|e| e.action == "vault.master_key.rotation_finished")
            .collect();
        assert!(
            finished
                .iter()
                .any(|e| e.details.contains("\"rewrapped\":1")),
            "{finished:?}"
        );
        a.stop().await;
        b.stop().await;

        // A next key file that cannot be read is left alone, with a warning.
        std::fs::write(&next, "not a key").unwrap();
        let c = srv.second_instance().await;
        assert_eq!(std::fs::read_to_string(&next).unwrap(), "not a key");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), new_key);
        c.stop().await;
        std::fs::remove_file(&next).unwrap();
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_listed_in_security_toml_give_a_totp_code_at_login() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && crate::harness::postgres_url().is_none() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        crate::rbac::copy_dir(&shipped_policies(), dir.path());
        std::fs::write(
            dir.path().join("security.toml"),
            "totp_required_roles = [\"tech_operator\"]\n",
        )
        .unwrap();
        let srv = TestServer::start_with(
            backend,
            crate::harness::Options {
                policies: dir.path().to_path_buf(),
                ..Default::default()
            },
        )
        .await;
        // The first admin still signs in without a code (admin is not listed here).
        let admin = srv.admin().await;
        let (id, token) = srv.user_with(&admin, "op.zhang", &[]).await;
        let secret = enrol(&srv, &token).await;
        let r = srv
            .post(
                &format!("/api/v1/users/{id}/roles"),
                &admin,
                json!({"role": "tech_operator"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let login = |totp: Option<String>| {
            let mut b = json!({"username": "op.zhang", "password": "a long enough password"});
            if let Some(t) = totp {
                b["totp"] = json!(t);
            }
            srv.call(Method::POST, "/api/v1/auth/login", None, Some(b))
        };
        problem(login(None).await, StatusCode::UNAUTHORIZED, "totp_required").await;
        let step = aligned_step(&srv);
        let code = totp::code_at(&secret, step);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        problem(
            login(Some(wrong.into())).await,
            StatusCode::UNAUTHORIZED,
            "totp_invalid",
        )
        .await;
        assert_eq!(login(Some(code.clone())).await.status(), StatusCode::OK);
        problem(
            login(Some(code)).await,
            StatusCode::UNAUTHORIZED,
            "totp_replayed",
        )
        .await;
        // A wrong password never reaches the second factor.
        let r = srv
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "op.zhang", "password": "wrong password here", "totp": totp::code_at(&secret, step + 1)})),
            )
            .await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        srv.stop().await;
    }
}

crate::both_backends!(disclosures_need_a_manager_and_compliance, |srv| {
    let v = setup(srv).await;
    let (_, mgr2) = srv.user_with(&v.admin, "mgr.wang", &["manager"]).await;
    let (_, comp) = srv.user_with(&v.admin, "comp.zhao", &["compliance"]).await;
    let r = srv
        .post(
            "/api/v1/assets",
            &v.admin,
            json!({"name": "核心系统源码 / core source", "kind": "repository",
                   "location": "git.bank.local/core", "custodian": "op.zhang"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let asset = body(r).await;
    assert_eq!(asset["custodian"], "op.zhang");
    let id = asset["id"].as_i64().unwrap();
    // Operators may not register assets.
    problem(
        srv.post(
            "/api/v1/assets",
            &v.op,
            json!({"name": "x", "kind": "document", "location": "y", "custodian": "op.zhang"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let d = body(
        srv.post(
            &format!("/api/v1/assets/{id}/disclosures"),
            &v.op,
            json!({"recipient": "外包商 / vendor Ltd.", "purpose": "安全审计 / security audit"}),
        )
        .await,
    )
    .await;
    assert_eq!(d["status"], "requested");
    let did = d["id"].as_i64().unwrap();
    let approve = |token: String| {
        let url = srv.url(&format!("/api/v1/disclosures/{did}/approve"));
        let client = srv.client.clone();
        async move { client.post(url).bearer_auth(token).send().await.unwrap() }
    };
    // The requester holds no approval permission; a manager approves once, a second manager
    // cannot stand in for compliance.
    problem(
        approve(v.op.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let d = body(approve(v.mgr.clone()).await).await;
    assert_eq!(d["status"], "requested");
    problem(
        approve(v.mgr.clone()).await,
        StatusCode::FORBIDDEN,
        "second_approver_required",
    )
    .await;
    problem(
        approve(mgr2).await,
        StatusCode::FORBIDDEN,
        "approver_role_required",
    )
    .await;
    let d = body(approve(comp.clone()).await).await;
    assert_eq!(d["status"], "approved");
    problem(
        approve(comp).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    // A second request, refused with a reason.
    let d2 = body(
        srv.post(
            &format!("/api/v1/assets/{id}/disclosures"),
            &v.op,
            json!({"recipient": "某公司", "purpose": "演示"}),
        )
        .await,
    )
    .await;
    let r = srv
        .post(
            &format!("/api/v1/disclosures/{}/refuse", d2["id"]),
            &v.mgr,
            json!({"reason": "无必要 / not needed"}),
        )
        .await;
    assert_eq!(body(r).await["status"], "refused");
    let list = body(
        srv.get(&format!("/api/v1/assets/{id}/disclosures"), &v.op)
            .await,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    // Requests go to the managers, compliance and the custodian; every decision to the
    // requester, the custodian and compliance.
    let requested = notices(srv, &v.admin, "disclosure_requested").await;
    assert_eq!(requested.len(), 2);
    assert_eq!(
        recipients(&requested[1]),
        vec![
            "comp.zhao@bank.example",
            "mgr.chen@bank.example",
            "mgr.wang@bank.example",
            "op.zhang@bank.example"
        ]
    );
    assert!(
        requested[1]["subject"]
            .as_str()
            .unwrap()
            .contains("核心系统源码")
    );
    let decided = notices(srv, &v.admin, "disclosure_decided").await;
    let subjects: Vec<&str> = decided
        .iter()
        .map(|n| n["subject"].as_str().unwrap())
        .collect();
    assert_eq!(decided.len(), 3, "{subjects:?}");
    assert!(subjects[0].contains("已驳回"), "{subjects:?}");
    assert!(subjects[1].contains("已批准"), "{subjects:?}");
    assert!(subjects[2].contains("待合规部审批"), "{subjects:?}");
    assert_eq!(
        recipients(&decided[0]),
        vec!["comp.zhao@bank.example", "op.zhang@bank.example"]
    );
    // Requests, approvals and refusals are audited.
    let audit = body(srv.get("/api/v1/audit?limit=200", &v.admin).await).await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["target"] == format!("asset:{id}"))
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "disclosure.approve")
            .count(),
        2
    );
    assert!(actions.contains(&"disclosure.request") && actions.contains(&"disclosure.refuse"));
});

crate::both_backends!(standing_grants_are_notified_and_revoked, |srv| {
    let v = setup(srv).await;
    let a = credential(srv, &v.admin, "值班库 / on-call db", "secret-a").await;
    let r = srv
        .post(
            &format!("/api/v1/credentials/{a}/grants"),
            &v.admin,
            json!({"grantee": "op.zhang", "reason": "值班 / on-call week",
                   "expires_at": (Utc::now() + TimeDelta::days(7)).to_rfc3339()}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let gid = body(r).await["id"].as_i64().unwrap();
    // Several grants for one credential at once (each locks the credential, then inserts).
    let b = credential(srv, &v.admin, "并发 / concurrent", "secret-b").await;
    let mut concurrent = Vec::new();
    for _ in 0..6 {
        let url = srv.url(&format!("/api/v1/credentials/{b}/grants"));
        let (client, token) = (srv.client.clone(), v.admin.clone());
        concurrent.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&json!({"grantee": "op.li", "reason": "并发",
                    "expires_at": (Utc::now() + TimeDelta::days(1)).to_rfc3339()}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    for c in concurrent {
        assert_eq!(c.await.unwrap(), StatusCode::CREATED);
    }
    // The approvers (admins) are asked; nobody else yet.
    let asked: Vec<Value> = notices(srv, &v.admin, "grant_requested")
        .await
        .into_iter()
        .filter(|n| n["subject"].as_str().unwrap().contains("值班库"))
        .collect();
    assert_eq!(asked.len(), 1);
    assert_eq!(recipients(&asked[0]), ADMINS_MAIL);
    let r = srv
        .call(
            Method::POST,
            &format!("/api/v1/credential-grants/{gid}/approve"),
            Some(&v.mgr),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let decided = notices(srv, &v.admin, "grant_decided").await;
    assert_eq!(decided.len(), 1);
    assert_eq!(
        recipients(&decided[0]),
        vec![ADMIN_MAIL, "op.zhang@bank.example"]
    );
    let secret = enrol(srv, &v.op).await;
    let step = aligned_step(srv);
    let got = body(
        reveal(
            srv,
            &v.op,
            a,
            json!({"reason": "值班", "totp": totp::code_at(&secret, step)}),
        )
        .await,
    )
    .await;
    assert_eq!(got["secret"], "secret-a");

    // Revoking needs credential.grant and a reason; it ends access on the next reveal.
    let revoke = |token: String, payload: Value, grant: i64| {
        let url = srv.url(&format!("/api/v1/credential-grants/{grant}/revoke"));
        let client = srv.client.clone();
        async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&payload)
                .send()
                .await
                .unwrap()
        }
    };
    problem(
        revoke(v.op.clone(), json!({"reason": "不需要了"}), gid).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        revoke(v.admin.clone(), json!({"reason": "  "}), gid).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    problem(
        revoke(v.admin.clone(), json!({"reason": "x"}), 999_999).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let g = body(
        revoke(
            v.admin.clone(),
            json!({"reason": "值班结束 / on-call over"}),
            gid,
        )
        .await,
    )
    .await;
    assert!(g["revoked_at"].is_string(), "{g}");
    problem(
        revoke(v.admin.clone(), json!({"reason": "again"}), gid).await,
        StatusCode::CONFLICT,
        "already_revoked",
    )
    .await;
    problem(
        reveal(
            srv,
            &v.op,
            a,
            json!({"reason": "值班", "totp": totp::code_at(&secret, step + 1)}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "no_change_window",
    )
    .await;
    let decided = notices(srv, &v.admin, "grant_decided").await;
    assert_eq!(decided.len(), 2);
    assert!(decided[0]["subject"].as_str().unwrap().contains("已撤销"));
    let audit = body(srv.get("/api/v1/audit?limit=200", &v.admin).await).await;
    let revoked: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "credential.grant_revoke")
        .collect();
    // The revocation, and the refused attempts (403, 422, 409; a 404 names nothing).
    let outcomes: Vec<&str> = revoked
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, vec!["refused", "ok", "refused", "refused"]);
    assert_eq!(revoked[1]["reason"], "值班结束 / on-call over");
});

// The reveal reads its facts inside the transaction that decides it: a revocation in flight
// when the reveal comes in wins (PostgreSQL: the grant row is held; SQLite: one writer at a time).
crate::both_backends!(a_revocation_racing_a_reveal_wins, |srv| {
    let v = setup(srv).await;
    let a = credential(srv, &v.admin, "值班库 / on-call db", "secret-a").await;
    let r = srv
        .post(
            &format!("/api/v1/credentials/{a}/grants"),
            &v.admin,
            json!({"grantee": "op.zhang", "reason": "值班 / on-call week",
                   "expires_at": (Utc::now() + TimeDelta::days(7)).to_rfc3339()}),
        )
        .await;
    let gid = body(r).await["id"].as_i64().unwrap();
    let r = srv
        .call(
            Method::POST,
            &format!("/api/v1/credential-grants/{gid}/approve"),
            Some(&v.mgr),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let secret = enrol(srv, &v.op).await;
    let step = aligned_step(srv);
    let ask = json!({"reason": "值班", "totp": totp::code_at(&secret, step)});
    // A revocation holds the grant row, not yet committed, while the reveal is asked.
    let sql = "UPDATE credential_grants SET revoked_at = $1 WHERE id = $2";
    let revoke = async {
        match &srv.app.db {
            changeguard::db::Db::Sqlite(pool, ..) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(sql)
                    .bind(Utc::now())
                    .bind(gid)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                tx.commit().await.unwrap();
            }
            changeguard::db::Db::Postgres(pool, _) => {
                let mut tx = pool.begin().await.unwrap();
                sqlx::query(sql)
                    .bind(Utc::now())
                    .bind(gid)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(700)).await;
                tx.commit().await.unwrap();
            }
        }
    };
    let asked = async {
        tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        reveal(srv, &v.op, a, ask).await
    };
    let ((), answer) = tokio::join!(revoke, asked);
    problem(answer, StatusCode::FORBIDDEN, "no_change_window").await;
});

// A stolen password or session must not be enough to move the second factor to another phone:
// replacing a confirmed factor needs its current code (or a recovery code).
crate::both_backends!(
    replacing_a_confirmed_second_factor_needs_a_current_code,
    |srv| {
        let v = setup(srv).await;
        // A first enrolment needs no body at all.
        let r = srv
            .call(Method::POST, "/api/v1/me/totp", Some(&v.op2), None)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let secret = enrol(srv, &v.op).await;
        problem(
            srv.post("/api/v1/me/totp", &v.op, json!({})).await,
            StatusCode::FORBIDDEN,
            "totp_required",
        )
        .await;
        let step = aligned_step(srv);
        let code = totp::code_at(&secret, step);
        let wrong = if code == "000000" { "111111" } else { "000000" };
        problem(
            srv.post("/api/v1/me/totp", &v.op, json!({"code": wrong}))
                .await,
            StatusCode::FORBIDDEN,
            "totp_invalid",
        )
        .await;
        // Still the old factor: its next code confirms nothing new, and a reveal would take it.
        let row = changeguard::db::vault::has_confirmed_totp(&srv.app.db, v.op_id)
            .await
            .unwrap();
        assert!(row);
        let e = body(
            srv.post("/api/v1/me/totp", &v.op, json!({"code": code}))
                .await,
        )
        .await;
        let fresh = totp::decode(e["secret"].as_str().unwrap()).unwrap();
        assert_ne!(fresh, secret);
        // Until the new phone confirms a code, the old one stays in force (a replacement
        // abandoned half-way locks nobody out).
        assert!(
            changeguard::db::vault::has_confirmed_totp(&srv.app.db, v.op_id)
                .await
                .unwrap()
        );
        let fresh_codes = |code: String| json!({"code": code});
        let r = srv
            .post(
                "/api/v1/me/totp/recovery-codes",
                &v.op,
                fresh_codes(totp::code_at(&secret, step + 1)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "the old phone still works");

        // A master key rotation re-wraps the waiting secret with the others.
        let before: i64 = changeguard::db::vault::wrapped_counts(&srv.app.db)
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum();
        let rotated = changeguard::vault::rotate::rotate(&srv.app).await.unwrap();
        let after = changeguard::db::vault::wrapped_counts(&srv.app.db)
            .await
            .unwrap();
        assert_eq!(after, vec![(rotated.new_key_id.clone(), before)]);

        // Confirmed with a code from the new phone, the new secret takes the old one's place
        // (a code of the same step as the one just spent on the old phone is fine: the new
        // secret's codes were never used).
        problem(
            srv.post("/api/v1/me/totp/confirm", &v.op, json!({"code": wrong}))
                .await,
            StatusCode::FORBIDDEN,
            "totp_invalid",
        )
        .await;
        let r = srv
            .post(
                "/api/v1/me/totp/confirm",
                &v.op,
                json!({"code": totp::code_at(&fresh, step + 1)}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        problem(
            srv.post(
                "/api/v1/me/totp/confirm",
                &v.op,
                json!({"code": totp::code_at(&fresh, step + 1)}),
            )
            .await,
            StatusCode::CONFLICT,
            "totp_already_confirmed",
        )
        .await;
        let old_code = totp::code_at(&secret, step + 1);
        if old_code != totp::code_at(&fresh, step + 1) {
            problem(
                srv.post(
                    "/api/v1/me/totp/recovery-codes",
                    &v.op,
                    fresh_codes(old_code),
                )
                .await,
                StatusCode::FORBIDDEN,
                "totp_invalid",
            )
            .await;
        }
        let r = srv
            .post(
                "/api/v1/me/totp/recovery-codes",
                &v.op,
                fresh_codes(totp::code_at(&fresh, step - 1)),
            )
            .await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "an older step than the confirming one is spent"
        );
        let r = srv
            .post(
                "/api/v1/me/totp/recovery-codes",
                &v.op,
                fresh_codes(totp::code_at(&fresh, step + 1)),
            )
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "replayed");
        let audit = body(srv.get("/api/v1/audit?limit=50", &v.admin).await).await;
        let refused = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "me.totp_enrol" && e["outcome"] == "refused")
            .count();
        assert_eq!(refused, 2);
    }
);

// A replacement left unconfirmed for an hour is forgotten; the phone in use keeps working.
crate::both_backends!(an_unconfirmed_replacement_expires, |srv| {
    let v = setup(srv).await;
    let secret = enrol(srv, &v.op).await;
    let step = aligned_step(srv);
    let e = body(
        srv.post(
            "/api/v1/me/totp",
            &v.op,
            json!({"code": totp::code_at(&secret, step)}),
        )
        .await,
    )
    .await;
    let fresh = totp::decode(e["secret"].as_str().unwrap()).unwrap();
    srv.sql(&["UPDATE totp_pending SET created_at = '2020-01-01T00:00:00+00:00'"])
        .await
        .unwrap();
    problem(
        srv.post(
            "/api/v1/me/totp/confirm",
            &v.op,
            json!({"code": totp::code_at(&fresh, step + 1)}),
        )
        .await,
        StatusCode::CONFLICT,
        "totp_already_confirmed",
    )
    .await;
    let r = srv
        .post(
            "/api/v1/me/totp/recovery-codes",
            &v.op,
            json!({"code": totp::code_at(&secret, step + 1)}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "the old phone still works");
});

// The reveal ends with the window: a change still in progress after its planned end is overdue
// and reveals nothing (policies/security.toml `reveal_grace_minutes`, shipped 0).
crate::both_backends!(an_overdue_change_reveals_nothing, |srv| {
    let v = setup(srv).await;
    let id = credential(srv, &v.admin, "核心库 DBA", "s3cret-overdue").await;
    let secret = enrol(srv, &v.op).await;
    let change = change_in_progress(srv, &v, &v.op).await;
    let step = aligned_step(srv);
    let r = reveal(
        srv,
        &v.op,
        id,
        json!({"reason": "修复", "change_id": change, "totp": totp::code_at(&secret, step)}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let path = format!("/api/v1/changes/{change}");
    assert_eq!(body(srv.get(&path, &v.op).await).await["overdue"], false);
    // Past the planned end (two hours), still in progress: overdue.
    srv.advance(TimeDelta::hours(2) + TimeDelta::minutes(1));
    let op = srv.token("op.zhang", crate::harness::USER_PASSWORD).await;
    assert_eq!(body(srv.get(&path, &op).await).await["overdue"], true);
    let today = srv
        .now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let yesterday = today - TimeDelta::days(1);
    let cal = body(
        srv.get(
            &format!("/api/v1/calendar?from={yesterday}&to={today}"),
            &op,
        )
        .await,
    )
    .await;
    let on_calendar = cal.as_array().unwrap().iter().any(|d| {
        d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == change && c["overdue"] == true)
    });
    assert!(on_calendar, "{cal}");
    let step = aligned_step(srv);
    let doc = problem(
        reveal(
            srv,
            &op,
            id,
            json!({"reason": "再看一次", "change_id": change, "totp": totp::code_at(&secret, step)}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "change_overdue",
    )
    .await;
    assert!(
        doc["detail"].as_str().unwrap().contains("计划结束"),
        "{doc}"
    );
    // The minute job tells the assignee and management, once for this planned end.
    for later in [0, 1] {
        let at = srv.now() + TimeDelta::minutes(later);
        let ran = changeguard::notify::schedule::tick(&srv.app, at)
            .await
            .unwrap();
        assert!(ran.0.iter().any(|(job, _)| *job == "expiry"), "{:?}", ran.0);
    }
    let admin = srv.admin().await;
    let told = notices(srv, &admin, "overdue").await;
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(
        told[0]["subject"]
            .as_str()
            .unwrap()
            .contains("超过计划结束时间")
    );
    let to = recipients(&told[0]);
    assert!(
        to.contains(&"op.zhang@bank.example") && to.len() >= 2,
        "{to:?}"
    );
});
