//! The audit trail: every write and every refusal, chained, tamper-evident in both databases.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Backend, TestServer, body, problem};

async fn verify(srv: &TestServer, token: &str) -> serde_json::Value {
    body(srv.get("/api/v1/audit/verify", token).await).await
}

crate::both_backends!(writes_and_refusals_are_recorded, |srv| {
    let admin = srv.admin().await;
    let (id, op) = srv.user_with(&admin, "op.wang", &["tech_operator"]).await;
    // A refused write (no permission) and a refused login.
    let r = srv.post("/api/v1/users", &op, json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    srv.login("op.wang", "not the password at all").await;
    // Nobody to hold to account: an anonymous write, a login for nobody. Counted, not audited.
    let r = srv
        .call(Method::POST, "/api/v1/users", None, Some(json!({})))
        .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    srv.login("nobody.here", "not the password at all").await;
    let metrics = srv.get("/metrics", &admin).await.text().await.unwrap();
    assert!(
        metrics.contains("unattributed_refusals_total{status=\"401\"}"),
        "{metrics}"
    );
    // (The two newest entries below are still op.wang's: the anonymous ones left no entry.)

    let entries = body(srv.get("/api/v1/audit?limit=20", &admin).await).await;
    let entries = entries.as_array().unwrap();
    let actions: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(actions[0], ("auth.login", "refused"));
    assert_eq!(entries[0]["actor"], "op.wang");
    assert_eq!(entries[0]["code"], "invalid_credentials");
    assert_eq!(actions[1], ("user.create", "refused"));
    assert_eq!(entries[1]["actor_id"], id);
    assert_eq!(entries[1]["code"], "forbidden");
    assert!(actions.contains(&("role.grant", "ok")));
    assert!(actions.contains(&("user.create", "ok")));
    let grant = entries
        .iter()
        .find(|e| e["action"] == "role.grant" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(grant["policy_ids"], "[\"role.admin\"]");
    // A deed that does not ask Cedar itself records the policy that permitted its route.
    let created = entries
        .iter()
        .find(|e| e["action"] == "user.create" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(created["policy_ids"], "[\"role.admin\"]");
    // Sequence numbers are gap-free, newest first.
    let seqs: Vec<i64> = entries.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    for w in seqs.windows(2) {
        assert_eq!(w[0], w[1] + 1);
    }
    // No password or token anywhere in the trail.
    let text = serde_json::to_string(&entries).unwrap();
    assert!(
        !text.contains("a long enough password")
            && !text.contains("not the password")
            && !text.contains(&admin)
    );
    let v = verify(srv, &admin).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], seqs[0]);
    assert_eq!(v["first_bad_entry"], serde_json::Value::Null);

    // Paging.
    let older = body(
        srv.get(&format!("/api/v1/audit?limit=2&before={}", seqs[0]), &admin)
            .await,
    )
    .await;
    assert_eq!(older[0]["seq"], seqs[1]);
    problem(
        srv.get("/api/v1/audit?limit=0", &admin).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
});

crate::both_backends!(the_database_refuses_edits_of_the_trail, |srv| {
    let _ = srv.admin().await;
    assert!(
        srv.sql(&["UPDATE audit_log SET reason = 'x' WHERE seq = 1"])
            .await
            .is_err()
    );
    // The head only moves forward: it cannot be rewound to hide a removed tail.
    assert!(srv.sql(&["UPDATE audit_head SET seq = 1"]).await.is_err());
    assert!(srv.sql(&["DELETE FROM audit_head"]).await.is_err());
    assert!(
        srv.sql(&["DELETE FROM audit_log WHERE seq = 1"])
            .await
            .is_err()
    );
});

// Two instances on one database append to one chain. Each remembers where it left the chain
// and finds that stale whenever the other wrote meanwhile, in turns and at the same time: no
// write fails, the sequence stays gap-free and the chain verifies.
crate::both_backends!(two_instances_append_to_one_chain, |srv| {
    let admin = srv.admin().await;
    let other = srv.second_instance().await;
    let create = |on: &'static str, n: usize| {
        let (srv, admin, other) = (srv, admin.clone(), &other);
        async move {
            let at = if on == "a" { srv } else { other };
            let r = at
                .post(
                    "/api/v1/systems",
                    &admin,
                    json!({"key": format!("sys-{on}-{n}"), "name": "x", "owner_department": "科技部"}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED, "{on} {n}");
        }
    };
    // In turns: every write follows one of the other instance.
    for n in 0..4 {
        create("a", n).await;
        create("b", n).await;
    }
    // At the same time.
    let mut both = Vec::new();
    for n in 4..16 {
        both.push(create("a", n));
        both.push(create("b", n));
    }
    futures_util::future::join_all(both).await;

    let entries = body(srv.get("/api/v1/audit?limit=100", &admin).await).await;
    let created = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "system.create" && e["outcome"] == "ok")
        .count();
    assert_eq!(created, 32);
    let seqs: Vec<i64> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    for w in seqs.windows(2) {
        assert_eq!(w[0], w[1] + 1);
    }
    let v = verify(srv, &admin).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["entries"], seqs[0]);
    let v = verify(&other, &admin).await;
    assert_eq!(v["ok"], true, "{v}");
});

/// Somebody with full database access disables the protection and edits, deletes or reorders
/// rows: verification names the first bad entry, through the API and the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampering_is_detected() {
    type Case = (&'static str, Vec<&'static str>, Vec<&'static str>, i64);
    let cases: Vec<Case> = vec![
        (
            "edit",
            vec!["UPDATE audit_log SET actor = 'nobody' WHERE seq = 3"],
            vec![],
            3,
        ),
        (
            "delete",
            vec!["DELETE FROM audit_log WHERE seq = 2"],
            vec![],
            2,
        ),
        (
            "reorder",
            vec![
                "UPDATE audit_log SET seq = -1 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = -1",
            ],
            vec![],
            2,
        ),
        (
            "truncate tail",
            vec!["DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)"],
            vec![],
            0,
        ),
    ];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && crate::harness::postgres_url().is_none() {
            continue;
        }
        for (name, stmts, _, first_bad) in &cases {
            let srv = TestServer::start(backend).await;
            let admin = srv.admin().await;
            srv.user_with(&admin, "someone", &["viewer"]).await;
            let v = verify(&srv, &admin).await;
            assert_eq!(v["ok"], true);
            let total = v["entries"].as_i64().unwrap();
            let (off, on) = match backend {
                Backend::Sqlite => (
                    vec![
                        "DROP TRIGGER audit_log_no_update",
                        "DROP TRIGGER audit_log_no_delete",
                    ],
                    vec![],
                ),
                Backend::Postgres => (
                    vec!["ALTER TABLE audit_log DISABLE TRIGGER USER"],
                    vec!["ALTER TABLE audit_log ENABLE TRIGGER USER"],
                ),
            };
            let mut all: Vec<&str> = off.clone();
            all.extend(stmts.iter().copied());
            all.extend(on.iter().copied());
            srv.sql(&all).await.unwrap();
            let v = verify(&srv, &admin).await;
            assert_eq!(v["ok"], false, "{backend:?} {name}: {v}");
            let expected = if *first_bad == 0 { total } else { *first_bad };
            assert_eq!(v["first_bad_entry"], expected, "{backend:?} {name}: {v}");

            // The CLI says the same, with a failing exit status.
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_changeguard"))
                .args(["audit", "verify"])
                .env("CHANGEGUARD_DATABASE_URL", &srv.database_url)
                .env("CHANGEGUARD_KEY_DIR", srv.dir.path())
                .env("CHANGEGUARD_JWT_SECRET", crate::harness::JWT_SECRET_HEX)
                .env(
                    "CHANGEGUARD_POLICIES_DIR",
                    crate::harness::shipped_policies(),
                )
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(
                out.status.code(),
                Some(1),
                "{stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                stdout.contains(&format!("BROKEN at entry {expected}")),
                "{stdout}"
            );
            srv.stop().await;
        }
    }
}

crate::both_backends!(cli_verifies_an_intact_chain, |srv| {
    let admin = srv.admin().await;
    let r = srv
        .call(Method::POST, "/api/v1/auth/logout", Some(&admin), None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_changeguard"))
        .args(["audit", "verify"])
        .env("CHANGEGUARD_DATABASE_URL", &srv.database_url)
        .env("CHANGEGUARD_KEY_DIR", srv.dir.path())
        .env("CHANGEGUARD_JWT_SECRET", crate::harness::JWT_SECRET_HEX)
        .env(
            "CHANGEGUARD_POLICIES_DIR",
            crate::harness::shipped_policies(),
        )
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain OK"));

    // An auditor with a copy of the database and the audit key only (no policies, no JWT or
    // vault key) verifies the trail, and nothing is created or changed where they run it.
    let audit_key = std::fs::read_to_string(srv.dir.path().join("changeguard.audit.key")).unwrap();
    let auditor_dir = tempfile::tempdir().unwrap();
    let auditor = |url: &str, key: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_changeguard"))
            .args(["audit", "verify"])
            .current_dir(auditor_dir.path())
            .env_clear()
            .env("CHANGEGUARD_DATABASE_URL", url)
            .env("CHANGEGUARD_AUDIT_KEY", key.trim())
            .output()
            .unwrap()
    };
    let before = verify(srv, &srv.admin().await).await["entries"]
        .as_i64()
        .unwrap();
    let out = auditor(&srv.database_url, &audit_key);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("audit chain OK"));
    let out = auditor(&srv.database_url, &"ab".repeat(32));
    assert_ne!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not the key this database was created with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = auditor("sqlite:missing.db", &audit_key);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(
        std::fs::read_dir(auditor_dir.path()).unwrap().count(),
        0,
        "nothing created where the auditor ran it"
    );
    let admin = srv.admin().await;
    let after = verify(srv, &admin).await["entries"].as_i64().unwrap();
    // The second login is the only new entry: the auditor wrote none.
    assert_eq!(after, before + 1);
});

crate::both_backends!(a_different_audit_key_refuses_to_start, |srv| {
    let _ = srv.admin().await;
    // Another instance on the same database whose key directory holds no keys generates new
    // ones: it must refuse to start rather than seal entries that can never verify.
    let other_keys = tempfile::tempdir().unwrap();
    let settings = changeguard::config::Settings {
        database_url: srv.database_url.clone(),
        policies_dir: crate::harness::shipped_policies(),
        jwt_secret: Some(secrecy::SecretString::from(crate::harness::JWT_SECRET_HEX)),
        key_dir: Some(other_keys.path().to_path_buf()),
        ..changeguard::config::Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = changeguard::Server::build(settings, listener)
        .await
        .err()
        .expect("must refuse");
    assert!(err.to_string().contains("CHANGEGUARD_AUDIT_KEY"), "{err}");
    let admin = srv.admin().await;
    assert_eq!(
        body(srv.get("/api/v1/audit/verify", &admin).await).await["ok"],
        true
    );
});

/// An entry's details, whether the API gives them as a document or as its canonical text.
fn details(e: &serde_json::Value) -> serde_json::Value {
    match &e["details"] {
        serde_json::Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    }
}

/// Edits the audit row `seq` behind the service's back, as somebody with full database access
/// who first disables the protection.
async fn tamper(srv: &TestServer, seq: i64) {
    let edit = format!("UPDATE audit_log SET actor = 'nobody' WHERE seq = {seq}");
    let stmts: Vec<&str> = match srv.backend {
        Backend::Sqlite => vec!["DROP TRIGGER audit_log_no_update", &edit],
        Backend::Postgres => vec![
            "ALTER TABLE audit_log DISABLE TRIGGER USER",
            &edit,
            "ALTER TABLE audit_log ENABLE TRIGGER USER",
        ],
    };
    srv.sql(&stmts).await.unwrap();
}

// The daily verification (02:00 bank time) finds a chain edited behind the service's back:
// the finding goes into the trail and to the compliance department and the admins.
crate::both_backends!(
    a_broken_chain_is_found_and_reported_by_the_schedule,
    |srv| {
        let admin = srv.admin().await;
        srv.user_with(&admin, "he.compliance", &["compliance"])
            .await;
        let today = chrono::Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .date_naive();
        let tick = |days: u64, minutes: i64| {
            let app = srv.app.clone();
            let t = crate::changes::at(today + chrono::Days::new(days), minutes);
            async move {
                changeguard::notify::schedule::tick(&app, t)
                    .await
                    .unwrap()
                    .0
                    .iter()
                    .any(|(job, _)| *job == "audit_verify")
            }
        };
        let broken_notices = || async {
            let all = body(srv.get("/api/v1/notifications", &admin).await).await;
            all.as_array()
                .unwrap()
                .iter()
                .filter(|n| n["kind"] == "audit_broken")
                .cloned()
                .collect::<Vec<_>>()
        };
        // The server's own scheduler runs today's slot with the real clock meanwhile: only
        // the runs of the days ticked here (later than now) count.
        let started = chrono::Utc::now();
        let scheduled = || async {
            let all = body(srv.get("/api/v1/audit?limit=200", &admin).await).await;
            all.as_array()
                .unwrap()
                .iter()
                .filter(|e| {
                    e["action"] == "audit.verify_scheduled"
                        && e["at"]
                            .as_str()
                            .unwrap()
                            .parse::<chrono::DateTime<chrono::Utc>>()
                            .unwrap()
                            > started
                })
                .cloned()
                .collect::<Vec<_>>()
        };

        assert!(!tick(1, 60).await, "01:00: not yet");
        assert!(tick(1, 2 * 60 + 1).await);
        assert!(!tick(1, 2 * 60 + 2).await, "one run per slot");
        assert!(
            scheduled().await.is_empty(),
            "an intact chain is not an event"
        );
        assert!(broken_notices().await.is_empty());

        tamper(srv, 2).await;
        assert!(tick(2, 2 * 60 + 1).await);
        let told = broken_notices().await;
        assert_eq!(told.len(), 1, "{told:?}");
        let mut to: Vec<&str> = told[0]["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        to.sort_unstable();
        assert_eq!(
            to,
            vec![
                "admin.li@bank.example",
                "admin@localhost.localdomain",
                "he.compliance@bank.example"
            ]
        );
        assert!(
            told[0]["subject"]
                .as_str()
                .unwrap()
                .contains("审计轨迹校验失败"),
            "{}",
            told[0]["subject"]
        );
        let runs = scheduled().await;
        assert_eq!(runs.len(), 1);
        assert_eq!(details(&runs[0])["ok"], false);
        assert_eq!(details(&runs[0])["first_bad_entry"], 2);
        assert_eq!(runs[0]["code"], "audit_chain_broken");
    }
);

// No deed without its audit entry: when the entry cannot be written, the request fails and
// nothing it did stays.
crate::both_backends!(no_audit_entry_no_change, |srv| {
    let admin = srv.admin().await;
    let (block, unblock): (Vec<&str>, Vec<&str>) = match srv.backend {
        Backend::Sqlite => (
            vec![
                "CREATE TRIGGER audit_log_down BEFORE INSERT ON audit_log \
                 BEGIN SELECT RAISE(ABORT, 'audit storage unavailable'); END",
            ],
            vec!["DROP TRIGGER audit_log_down"],
        ),
        Backend::Postgres => (
            vec![
                "CREATE FUNCTION audit_log_down() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'audit storage unavailable'; END $$",
                "CREATE TRIGGER audit_log_down BEFORE INSERT ON audit_log \
                 FOR EACH ROW EXECUTE FUNCTION audit_log_down()",
            ],
            vec!["DROP TRIGGER audit_log_down ON audit_log"],
        ),
    };
    let entries_before = verify(srv, &admin).await["entries"].as_i64().unwrap();
    let create = || {
        srv.post(
            "/api/v1/users",
            &admin,
            json!({"username": "never.there", "display_name": "不存在", "department": "科技部",
                   "email": "never@bank.example", "password": "a long enough password"}),
        )
    };
    srv.sql(&block).await.unwrap();
    problem(
        create().await,
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
    )
    .await;
    srv.sql(&unblock).await.unwrap();
    let users = body(srv.get("/api/v1/users", &admin).await).await;
    assert!(
        !users
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "never.there"),
        "{users}"
    );
    let v = verify(srv, &admin).await;
    assert_eq!(v["ok"], true);
    assert_eq!(v["entries"].as_i64().unwrap(), entries_before);
    // Afterwards the same request goes through, with its entry.
    assert_eq!(create().await.status(), StatusCode::CREATED);
});

// A signed-in person scripting refused writes cannot grow the trail without bound: 200 refusals
// of theirs per 10 minutes are audited, the rest only counted; the next window starts afresh.
crate::both_backends!(
    refused_writes_of_one_person_are_audited_up_to_a_budget,
    |srv| {
        use changeguard::audit::refusal_budget::{PER_WINDOW, WINDOW_SECS};
        let admin = srv.admin().await;
        srv.user_with(&admin, "view.wu", &["viewer"]).await;
        let refused_entries = || async {
            let admin = srv.admin().await;
            let all = body(srv.get("/api/v1/audit?limit=500", &admin).await).await;
            all.as_array()
                .unwrap()
                .iter()
                .filter(|e| e["actor"] == "view.wu" && e["outcome"] == "refused")
                .count()
        };
        let attempt = |viewer: String| async move {
            let r = srv
                .post(
                    "/api/v1/systems",
                    &viewer,
                    json!({"key": "x-sys", "name": "x", "owner_department": "科技部"}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN);
        };
        // Start at the beginning of a window, so all of these fall into one.
        let into = srv.now().timestamp().rem_euclid(WINDOW_SECS);
        srv.advance(chrono::TimeDelta::seconds(WINDOW_SECS - into));
        let viewer = srv.token("view.wu", crate::harness::USER_PASSWORD).await;
        let admin = srv.admin().await;
        for _ in 0..PER_WINDOW + 5 {
            attempt(viewer.clone()).await;
        }
        assert_eq!(refused_entries().await, PER_WINDOW as usize);
        // Somebody else is not silenced by it.
        let r = srv
            .post(
                "/api/v1/systems",
                &admin,
                json!({"key": "bad key!", "name": "x", "owner_department": "科技部"}),
            )
            .await;
        assert!(r.status().is_client_error());
        let all = body(srv.get("/api/v1/audit?limit=5", &admin).await).await;
        assert!(
            all.as_array()
                .unwrap()
                .iter()
                .any(|e| e["actor"] == "admin" && e["outcome"] == "refused"),
            "{all}"
        );
        // The next window audits again.
        srv.advance(chrono::TimeDelta::seconds(WINDOW_SECS));
        attempt(srv.token("view.wu", crate::harness::USER_PASSWORD).await).await;
        assert_eq!(refused_entries().await, PER_WINDOW as usize + 1);
    }
);
