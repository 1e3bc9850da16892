//! The admission gate through the real server: service accounts and their tokens, the gate's
//! decisions over a change's life, the signed admission verified offline by the CLI.

use std::process::Command;

use chrono::{TimeDelta, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::changes::{People, approve, at, change, notice_today, rfc, setup};
use crate::harness::{TestServer, body, problem};

/// A service account holding `role`, and a token for it: (account id, token).
pub async fn machine(srv: &TestServer, admin: &str, name: &str, role: &str) -> (i64, String) {
    let r = srv
        .post(
            "/api/v1/service-accounts",
            admin,
            json!({"name": name, "display_name": format!("{name} 流水线"), "description": "GitLab CI 部署"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let account = body(r).await;
    assert_eq!(account["kind"], "service");
    let id = account["id"].as_i64().unwrap();
    let r = srv
        .post(
            &format!("/api/v1/users/{id}/roles"),
            admin,
            json!({"role": role}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "grant {role}");
    let r = srv
        .post(
            &format!("/api/v1/service-accounts/{id}/tokens"),
            admin,
            json!({"name": "deploy-main"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let t = body(r).await;
    (id, t["token"].as_str().unwrap().to_string())
}

async fn gate(srv: &TestServer, token: &str, ask: Value) -> reqwest::Response {
    srv.post("/api/v1/gate/check", token, ask).await
}

async fn refused(srv: &TestServer, token: &str, ask: Value, code: &str) -> Value {
    problem(gate(srv, token, ask).await, StatusCode::FORBIDDEN, code).await
}

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_changeguard"));
    c.env_remove("CHANGEGUARD_DATABASE_URL");
    c
}

/// `changeguard gate verify`: (exit code, stdout + stderr).
fn verify(jwks: &std::path::Path, system: &str, token: &str) -> (i32, String) {
    let out = cli()
        .args(["gate", "verify", "--jwks"])
        .arg(jwks)
        .args(["--system", system, token])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn save_jwks(srv: &TestServer, path: &std::path::Path) -> Value {
    let r = reqwest::get(srv.url("/.well-known/jwks.json"))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let jwks: Value = r.json().await.unwrap();
    std::fs::write(path, jwks.to_string()).unwrap();
    jwks
}

// Tokens: shown once, stored as a hash, refused once revoked or expired; a service account
// has no password, holds only roles for machines, and a pipeline token may only ask the gate.
crate::both_backends!(service_tokens_are_shown_once_and_die_when_revoked, |srv| {
    let p = setup(srv).await;
    let (id, token) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    assert!(token.starts_with("cgt_") && token.len() == 47, "{token}");

    // The token works like an access token, but only for what a pipeline may do.
    let me = body(srv.get("/api/v1/me", &token).await).await;
    assert_eq!(me["username"], "gitlab-ci");
    let r = srv
        .post("/api/v1/changes", &token, change(Utc::now(), 1))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    refused(
        srv,
        &token,
        json!({"system": "cs-platform"}),
        "no_open_change",
    )
    .await;

    // Of the routes open to anybody signed in, a token only reads who it is.
    let r = srv.post("/api/v1/auth/logout", &token, json!({})).await;
    problem(r, StatusCode::FORBIDDEN, "not_for_service_accounts").await;
    assert_eq!(srv.get("/api/v1/me", &token).await.status(), StatusCode::OK);
    // Roles for machines go to machines only.
    let op_id = body(srv.get("/api/v1/me", &p.op).await).await["id"]
        .as_i64()
        .unwrap();
    let r = srv
        .post(
            &format!("/api/v1/users/{op_id}/roles"),
            &p.admin,
            json!({"role": "pipeline"}),
        )
        .await;
    problem(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "role_only_for_service_accounts",
    )
    .await;

    // Listed without the token; only its hash is stored.
    let list = body(
        srv.get(&format!("/api/v1/service-accounts/{id}/tokens"), &p.admin)
            .await,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(!list.to_string().contains(&token[4..]));
    assert!(list[0]["last_used_at"].is_string(), "{list}");
    let stored = changeguard::db::tokens::token_user(
        &srv.app.db,
        &changeguard::auth::api_token::hash(&token),
        srv.now(),
    )
    .await
    .unwrap();
    assert_eq!(stored.unwrap().token_name, "deploy-main");

    // No password, no person's roles.
    let r = srv.login("gitlab-ci", "").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&p.admin),
            Some(json!({"password": "Zz9!correct-horse-battery"})),
        )
        .await;
    problem(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "service_account_password",
    )
    .await;
    let r = srv
        .post(
            &format!("/api/v1/users/{id}/roles"),
            &p.admin,
            json!({"role": "manager"}),
        )
        .await;
    problem(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "role_not_for_service_accounts",
    )
    .await;
    // Tokens are for service accounts only; and nobody but user.manage issues them.
    let op_id = body(srv.get("/api/v1/me", &p.op).await).await["id"]
        .as_i64()
        .unwrap();
    let r = srv
        .post(
            &format!("/api/v1/service-accounts/{op_id}/tokens"),
            &p.admin,
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = srv
        .post(
            &format!("/api/v1/service-accounts/{id}/tokens"),
            &p.op,
            json!({"name": "x"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // Revoked: dead on the next request, on this instance and on another.
    let other = srv.second_instance().await;
    assert_eq!(
        other.get("/api/v1/me", &token).await.status(),
        StatusCode::OK
    );
    let token_id = list[0]["id"].as_i64().unwrap();
    let r = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/service-accounts/{id}/tokens/{token_id}"),
            Some(&p.admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        srv.get("/api/v1/me", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        other.get("/api/v1/me", &token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    other.stop().await;

    // Expiry: a token of one hour is refused after it.
    let r = srv
        .post(
            &format!("/api/v1/service-accounts/{id}/tokens"),
            &p.admin,
            json!({"name": "short", "expires_at": rfc(srv.now() + TimeDelta::hours(1))}),
        )
        .await;
    let short = body(r).await["token"].as_str().unwrap().to_string();
    assert_eq!(srv.get("/api/v1/me", &short).await.status(), StatusCode::OK);
    srv.advance(TimeDelta::hours(1) + TimeDelta::seconds(1));
    assert_eq!(
        srv.get("/api/v1/me", &short).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // A made-up token of the right shape is refused too.
    let fake = format!("cgt_{}", "A".repeat(43));
    assert_eq!(
        srv.get("/api/v1/me", &fake).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Every token deed names the account and the token; the token itself is nowhere.
    let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
        .await
        .unwrap();
    let checks: Vec<_> = trail.iter().filter(|e| e.action == "gate.check").collect();
    assert_eq!(checks.len(), 1);
    assert_eq!(
        checks[0].actor.as_deref(),
        Some("gitlab-ci/token:deploy-main")
    );
    assert_eq!(checks[0].code.as_deref(), Some("no_open_change"));
    for e in &trail {
        assert!(!e.details.contains(&token[4..]) && !e.details.contains(&short[4..]));
    }
});

/// The approvers approve change `id` and its assignee starts it.
async fn approve_and_start(srv: &TestServer, p: &People, id: i64) {
    approve(srv, &p.lead, &p.mgr, id).await;
    let r = srv
        .post(&format!("/api/v1/changes/{id}/start"), &p.op, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "start");
}

/// Files an emergency change on cs-platform running from ten minutes ago for an hour (real
/// time, so that the CLI, which reads the real clock, can verify its admission).
async fn emergency(srv: &TestServer, p: &People) -> i64 {
    let now = Utc::now();
    let mut req = change(now - TimeDelta::minutes(10), 1);
    req["planned_end"] = json!(rfc(now + TimeDelta::minutes(50)));
    req["emergency"] = json!(true);
    req["justification"] = json!("生产故障紧急修复 / production incident hotfix");
    body(srv.post("/api/v1/changes", &p.op, req).await).await["id"]
        .as_i64()
        .unwrap()
}

// The gate over a change's life: refused before approval, before start, outside the window,
// after completion, for another system or category; admitted inside the window, with an
// admission the CLI verifies offline and refuses when tampered, expired, for another system or
// signed by another key.
crate::both_backends!(the_gate_opens_only_inside_a_running_changes_window, |srv| {
    let p = setup(srv).await;
    let (_, token) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    let ask = json!({"system": "cs-platform"});
    let doc = refused(srv, &token, ask.clone(), "no_open_change").await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let detail = doc["detail"].as_str().unwrap();
    assert!(detail.contains(&earliest.to_string()), "{detail}");
    assert!(detail.contains(" / "), "bilingual: {detail}");

    let id = emergency(srv, &p).await;
    let doc = refused(srv, &token, ask.clone(), "change_not_approved").await;
    assert!(doc["detail"].as_str().unwrap().contains(&format!("#{id}")));
    approve(srv, &p.lead, &p.mgr, id).await;
    refused(srv, &token, ask.clone(), "change_not_started").await;
    let r = srv
        .post(&format!("/api/v1/changes/{id}/start"), &p.op, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Open: for this system, of this category.
    let r = gate(
        srv,
        &token,
        json!({"system": "cs-platform", "category": "software_upgrade", "change_id": id}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let ok = body(r).await;
    assert_eq!(ok["allowed"], true);
    assert_eq!(ok["change_id"], id);
    assert_eq!(ok["assignee"]["username"], "op.zhang");
    let admission = ok["admission"].as_str().unwrap().to_string();
    let expires: chrono::DateTime<Utc> = ok["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(
        expires <= srv.now() + TimeDelta::minutes(15),
        "short-lived: {expires}"
    );
    refused(srv, &token, json!({"system": "core-db"}), "no_open_change").await;
    refused(
        srv,
        &token,
        json!({"system": "cs-platform", "category": "hardware"}),
        "wrong_category",
    )
    .await;
    refused(
        srv,
        &token,
        json!({"system": "cs-platform", "change_id": id + 100}),
        "no_open_change",
    )
    .await;

    // The admission, offline.
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    let jwks = save_jwks(srv, &jwks_file).await;
    assert_eq!(jwks["keys"][0]["alg"], "EdDSA");
    assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    let (code, out) = verify(&jwks_file, "cs-platform", &admission);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(&format!("change #{id}")), "{out}");
    let out = cli()
        .args(["gate", "verify", "--jwks"])
        .arg(&jwks_file)
        .args([
            "--system",
            "cs-platform",
            "--category",
            "hardware",
            &admission,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "another category");
    let (code, out) = verify(&jwks_file, "core-db", &admission);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not for system core-db"), "{out}");
    let mut parts: Vec<&str> = admission.split('.').collect();
    let forged_payload = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        claims["systems"] = json!(["cs-platform", "core-db"]);
        b64.encode(claims.to_string())
    };
    parts[1] = &forged_payload;
    let (code, out) = verify(&jwks_file, "core-db", &parts.join("."));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature"), "{out}");
    // Expired: an admission whose window is over (signed with this server's key).
    let mut claims: changeguard::gate::admission::Claims = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        serde_json::from_slice(&b64.decode(admission.split('.').nth(1).unwrap()).unwrap()).unwrap()
    };
    claims.exp = Utc::now().timestamp() - 1;
    let expired = srv.app.admission.sign(&claims).unwrap();
    let (code, out) = verify(&jwks_file, "cs-platform", &expired);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("expired"), "{out}");
    // Another server's keys do not verify this one's admissions.
    let stranger = TestServer::start(srv.backend).await;
    let stranger_jwks = dir.path().join("stranger.json");
    save_jwks(&stranger, &stranger_jwks).await;
    stranger.stop().await;
    let (code, out) = verify(&stranger_jwks, "cs-platform", &admission);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not in the JWKS"), "{out}");

    // After the window, and after completion: shut.
    srv.advance(TimeDelta::hours(1));
    refused(srv, &token, ask.clone(), "outside_window").await;
    // (The operator's access token ran out meanwhile; the pipeline's lives for 90 days.)
    let op = srv.token("op.zhang", crate::harness::USER_PASSWORD).await;
    let r = srv
        .post(
            &format!("/api/v1/changes/{id}/complete"),
            &op,
            json!({"outcome": "succeeded", "notes": "已完成 / done"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK, "{}", body(r).await);
    refused(srv, &token, ask.clone(), "no_open_change").await;

    // One audit entry per check, admitted or refused, by the token.
    let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
        .await
        .unwrap();
    let checks: Vec<_> = trail.iter().filter(|e| e.action == "gate.check").collect();
    assert_eq!(checks.len(), 9, "{checks:#?}");
    assert_eq!(checks.iter().filter(|e| e.outcome == "ok").count(), 1);
    assert!(
        checks
            .iter()
            .all(|e| e.actor.as_deref() == Some("gitlab-ci/token:deploy-main"))
    );
});

// A normal change is not started before its window; once started inside it, it admits. The
// windows endpoint shows it with the freeze windows and the kinds of the days.
crate::both_backends!(a_normal_change_admits_inside_its_window, |srv| {
    let p = setup(srv).await;
    let (_, token) = machine(srv, &p.admin, "jenkins", "pipeline").await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let start = at(earliest, 600);
    let id = body(srv.post("/api/v1/changes", &p.op, change(start, 2)).await).await["id"]
        .as_i64()
        .unwrap();
    approve(srv, &p.lead, &p.mgr, id).await;
    let ask = json!({"system": "cs-platform"});
    let doc = refused(srv, &token, ask.clone(), "change_not_started").await;
    assert!(doc["detail"].as_str().unwrap().contains("开始实施"));
    srv.advance(start - srv.now() + TimeDelta::minutes(5));
    let op = srv.token("op.zhang", crate::harness::USER_PASSWORD).await;
    let r = srv
        .post(&format!("/api/v1/changes/{id}/start"), &op, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        gate(srv, &token, ask.clone()).await.status(),
        StatusCode::OK
    );

    let from = earliest.to_string();
    let to = (earliest + TimeDelta::days(6)).to_string();
    let w = body(
        srv.get(
            &format!("/api/v1/gate/windows?system=cs-platform&from={from}&to={to}"),
            &token,
        )
        .await,
    )
    .await;
    assert_eq!(w["changes"][0]["change_id"], id);
    assert_eq!(w["days"].as_array().unwrap().len(), 7);
    assert!(w["days"][0]["kind"].is_string());
    let r = srv
        .get(
            &format!("/api/v1/gate/windows?system=cs-platform&from={to}&to={from}"),
            &token,
        )
        .await;
    problem(r, StatusCode::BAD_REQUEST, "invalid_range").await;
});

fn example(name: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/gate")
            .join(name),
    );
    c.env("CHANGEGUARD", env!("CARGO_BIN_EXE_changeguard"));
    c
}

// The examples a bank copies, run against the real server: the deploy step refuses without an
// approved change in progress and passes inside its window; the database wrapper runs its
// command only with an admission for its own system.
crate::both_backends!(the_examples_refuse_then_allow_a_deploy, |srv| {
    let p = setup(srv).await;
    let (_, token) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    let dir = tempfile::tempdir().unwrap();
    let admission = dir.path().join("admission.jws");
    let deploy = || {
        example("deploy-step.sh")
            .env("CG_URL", srv.url(""))
            .env("CG_TOKEN", &token)
            .env("CG_SYSTEM", "cs-platform")
            .env("CG_ADMISSION_FILE", &admission)
            .output()
            .unwrap()
    };
    let out = deploy();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no_open_change") && err.contains("拒绝部署"),
        "{err}"
    );
    assert!(!admission.exists());

    let id = emergency(srv, &p).await;
    approve_and_start(srv, &p, id).await;
    let out = deploy();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("change #{id}")));

    let jwks = dir.path().join("jwks.json");
    save_jwks(srv, &jwks).await;
    let marker = dir.path().join("applied");
    let wrapped = |system: &str, admission_file: Option<&std::path::Path>| {
        let mut c = example("db-wrapper.sh");
        c.env("CG_JWKS", &jwks).env("CG_SYSTEM", system);
        if let Some(f) = admission_file {
            c.env("CG_ADMISSION_FILE", f);
        }
        c.args([
            "sh",
            "-c",
            &format!("echo applied > '{}'", marker.display()),
        ])
        .output()
        .unwrap()
    };
    let out = wrapped("core-db", Some(&admission));
    assert_eq!(out.status.code(), Some(1));
    assert!(!marker.exists(), "another system's database refuses");
    let out = wrapped("cs-platform", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(!marker.exists(), "no admission, no run");
    let out = wrapped("cs-platform", Some(&admission));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(marker.exists());
});

async fn report(
    srv: &TestServer,
    token: &str,
    system: &str,
    at: chrono::DateTime<Utc>,
) -> reqwest::Response {
    srv.post(
        "/api/v1/gate/events",
        token,
        json!({"system": system, "kind": "db_write", "summary": "UPDATE accounts SET …（127 行）",
               "occurred_at": rfc(at), "source": "mysql-audit:core-db-01"}),
    )
    .await
}

// What tools report: with no change running on the system, an unauthorized change (audited,
// e-mailed to management and compliance, on the calendar, in the report); with one, a line on
// that change's timeline.
crate::both_backends!(reported_changes_without_a_change_are_unauthorized, |srv| {
    let p = setup(srv).await;
    let (_, compliance) = srv.user_with(&p.admin, "comp.zhao", &["compliance"]).await;
    let (_, monitor) = machine(srv, &p.admin, "db-audit", "change_monitor").await;
    let (_, pipeline) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    let now = Utc::now();
    assert_eq!(
        report(srv, &pipeline, "cs-platform", now).await.status(),
        StatusCode::FORBIDDEN,
        "a pipeline does not report"
    );
    problem(
        report(srv, &monitor, "no-such", now).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown_system",
    )
    .await;
    problem(
        report(srv, &monitor, "cs-platform", now + TimeDelta::hours(1)).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "occurred_in_future",
    )
    .await;

    let r = report(srv, &monitor, "cs-platform", now - TimeDelta::minutes(1)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let ev = body(r).await;
    assert_eq!(ev["unauthorized"], true);
    assert!(ev["change_id"].is_null());
    // E-mailed to management and compliance.
    let notices = body(srv.get("/api/v1/notifications", &p.mgr).await).await;
    let n = notices
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "unauthorized_change")
        .expect("an unauthorized-change notice");
    let to = n["recipients"].to_string();
    assert!(
        to.contains("mgr.chen@") && to.contains("comp.zhao@"),
        "{to}"
    );
    assert!(n["subject"].as_str().unwrap().contains("违规变更"), "{n}");
    // On the calendar and in the report.
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let range = format!("from={today}&to={today}");
    let cal = body(
        srv.get(&format!("/api/v1/calendar?{range}"), &p.viewer)
            .await,
    )
    .await;
    assert_eq!(
        cal[0]["unauthorized_changes"][0]["system_key"],
        "cs-platform"
    );
    let rep = body(
        srv.get(&format!("/api/v1/reports/changes?{range}"), &compliance)
            .await,
    )
    .await;
    assert_eq!(rep["unauthorized_changes"], 1);
    let listed = body(
        srv.get(
            &format!("/api/v1/gate/events?{range}&unauthorized=true"),
            &compliance,
        )
        .await,
    )
    .await;
    assert_eq!(listed.as_array().unwrap().len(), 1);

    // With an emergency change running: matched, and on its timeline.
    let id = emergency(srv, &p).await;
    approve_and_start(srv, &p, id).await;
    let ev = body(report(srv, &monitor, "cs-platform", Utc::now()).await).await;
    assert_eq!(ev["unauthorized"], false);
    assert_eq!(ev["change_id"], id);
    let c = body(srv.get(&format!("/api/v1/changes/{id}"), &p.viewer).await).await;
    let last = c["events"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["comment"].as_str().unwrap().contains("mysql-audit"),
        "{last}"
    );
    let rep = body(
        srv.get(&format!("/api/v1/reports/changes?{range}"), &compliance)
            .await,
    )
    .await;
    assert_eq!(
        rep["unauthorized_changes"], 1,
        "the matched one is not counted"
    );

    let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
        .await
        .unwrap();
    let found: Vec<_> = trail
        .iter()
        .filter(|e| e.action == "gate.unauthorized_change")
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].actor.as_deref(),
        Some("db-audit/token:deploy-main")
    );
    assert!(trail.iter().any(|e| e.action == "gate.event"));
});

// Rotating the gate key: instances started afterwards sign with the new key and still publish
// the old public key, so admissions signed before the rotation verify until they expire.
crate::both_backends!(a_rotated_gate_key_stays_published, |srv| {
    let p = setup(srv).await;
    let (_, token) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    let id = emergency(srv, &p).await;
    approve_and_start(srv, &p, id).await;
    let ask = json!({"system": "cs-platform"});
    let before = body(gate(srv, &token, ask.clone()).await).await["admission"]
        .as_str()
        .unwrap()
        .to_string();
    let out = cli()
        .args(["keys", "rotate-gate"])
        .env("CHANGEGUARD_KEY_DIR", srv.dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let retired: Vec<_> = std::fs::read_dir(srv.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("changeguard.gate.key.retired-"))
        .collect();
    assert_eq!(retired.len(), 1);
    let text = std::fs::read_to_string(srv.dir.path().join(&retired[0])).unwrap();
    assert!(
        text.contains("\"x\"") && !text.contains("\"d\""),
        "public key only: {text}"
    );

    let next = srv.second_instance().await;
    let dir = tempfile::tempdir().unwrap();
    let jwks_file = dir.path().join("jwks.json");
    let jwks = save_jwks(&next, &jwks_file).await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    let after = body(gate(&next, &token, ask).await).await["admission"]
        .as_str()
        .unwrap()
        .to_string();
    for admission in [&before, &after] {
        let (code, out) = verify(&jwks_file, "cs-platform", admission);
        assert_eq!(code, 0, "{out}");
    }
    let kid = |t: &str| jsonwebtoken::decode_header(t).unwrap().kid.unwrap();
    assert_ne!(kid(&before), kid(&after));
    next.stop().await;
});

// A freeze window declared after a change was approved shuts the gate for it while the freeze
// lasts (on an instance started with the new policies); emergencies: see gate::rules' tests.
crate::both_backends!(a_freeze_declared_later_shuts_the_gate, |srv| {
    let p = setup(srv).await;
    let (_, token) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let start = at(earliest, 600);
    let id = body(srv.post("/api/v1/changes", &p.op, change(start, 2)).await).await["id"]
        .as_i64()
        .unwrap();
    approve(srv, &p.lead, &p.mgr, id).await;

    // The bank declares a freeze over the change's window; an instance with it starts.
    let dir = tempfile::tempdir().unwrap();
    crate::rbac::copy_dir(&crate::harness::shipped_policies(), dir.path());
    let file = dir.path().join("change-policy.toml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    let tz = chrono_tz::Asia::Shanghai;
    text.push_str(&format!(
        "\n[[freeze_windows]]\nname = \"监管检查封网 / inspection freeze\"\nstart = {}\nend = {}\n",
        (start - TimeDelta::hours(1))
            .with_timezone(&tz)
            .to_rfc3339(),
        (start + TimeDelta::hours(1))
            .with_timezone(&tz)
            .to_rfc3339()
    ));
    std::fs::write(&file, text).unwrap();
    let frozen = srv
        .second_instance_with(crate::harness::Options {
            policies: dir.path().to_path_buf(),
            ..crate::harness::Options::default()
        })
        .await;
    srv.advance(start - srv.now() + TimeDelta::minutes(5));
    let op = srv.token("op.zhang", crate::harness::USER_PASSWORD).await;
    let r = srv
        .post(&format!("/api/v1/changes/{id}/start"), &op, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let ask = json!({"system": "cs-platform"});
    let doc = refused(&frozen, &token, ask.clone(), "freeze_window").await;
    assert!(
        doc["detail"].as_str().unwrap().contains("监管检查封网"),
        "{doc}"
    );
    // The instance without the freeze admits; after the freeze the frozen one does too.
    assert_eq!(
        gate(srv, &token, ask.clone()).await.status(),
        StatusCode::OK
    );
    srv.advance(TimeDelta::hours(1));
    assert_eq!(
        gate(&frozen, &token, ask.clone()).await.status(),
        StatusCode::OK
    );
    frozen.stop().await;
});

// The new routes: no token is 401, a control character in any field is 422 invalid_text
// naming the field, a wrong type 422, and nothing is written.
crate::both_backends!(new_routes_refuse_bad_input_and_strangers, |srv| {
    let p = setup(srv).await;
    let (id, token) = machine(srv, &p.admin, "gitlab-ci", "pipeline").await;
    for path in [
        "/api/v1/gate/check",
        "/api/v1/gate/events",
        "/api/v1/webhooks",
        "/api/v1/service-accounts",
    ] {
        let r = reqwest::Client::new()
            .post(srv.url(path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let doc = problem(
        gate(srv, &token, json!({"system": "cs-\u{0}platform"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "system");
    problem(
        gate(srv, &token, json!({"system": 7})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let doc = problem(
        srv.post(
            "/api/v1/service-accounts",
            &p.admin,
            json!({"name": "ci2", "display_name": "x\u{1b}[31m", "description": ""}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "display_name");
    let long = "n".repeat(65);
    problem(
        srv.post(
            &format!("/api/v1/service-accounts/{id}/tokens"),
            &p.admin,
            json!({"name": long}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    let doc = problem(
        srv.post(
            "/api/v1/webhooks",
            &p.admin,
            json!({"url": "http://x.example/\u{7}", "events": ["*"]}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "url");
    // Nothing was written: still one token, no webhook, no second service account.
    let tokens = body(
        srv.get(&format!("/api/v1/service-accounts/{id}/tokens"), &p.admin)
            .await,
    )
    .await;
    assert_eq!(tokens.as_array().unwrap().len(), 1);
    assert_eq!(
        body(srv.get("/api/v1/webhooks", &p.admin).await).await,
        json!([])
    );
    let users = body(srv.get("/api/v1/users", &p.admin).await).await;
    assert!(!users.to_string().contains("ci2"));
});
