//! The audit head witnessed outside the database (issue 16, finding 3): a trail shortened
//! together with its head, a head moved back, a tampered checkpoint — found by the API and the
//! CLI, on both databases.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{Backend, TestServer, body, problem};

async fn verify(srv: &TestServer, token: &str) -> Value {
    body(srv.get("/api/v1/audit/verify", token).await).await
}

fn codes(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

fn checkpoint_file(srv: &TestServer) -> std::path::PathBuf {
    srv.dir.path().join("changeguard.audit-checkpoints.jsonl")
}

fn lines(srv: &TestServer) -> Vec<String> {
    std::fs::read_to_string(checkpoint_file(srv))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// `changeguard audit verify` (and more arguments) against the test server's database and keys.
fn cli(srv: &TestServer, args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_changeguard"))
        .arg("audit")
        .args(args)
        .env("CHANGEGUARD_DATABASE_URL", &srv.database_url)
        .env("CHANGEGUARD_KEY_DIR", srv.dir.path())
        .env("CHANGEGUARD_JWT_SECRET", crate::harness::JWT_SECRET_HEX)
        .env(
            "CHANGEGUARD_POLICIES_DIR",
            crate::harness::shipped_policies(),
        )
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Runs `stmts` with the trail's protecting triggers off, as an intruder with full database
/// access would.
async fn behind_the_back(srv: &TestServer, stmts: &[&str]) {
    let (off, on): (Vec<&str>, Vec<&str>) = match srv.backend {
        Backend::Sqlite => (
            vec![
                "DROP TRIGGER audit_log_no_delete",
                "DROP TRIGGER audit_head_forward_only",
            ],
            vec![],
        ),
        Backend::Postgres => (
            vec![
                "ALTER TABLE audit_log DISABLE TRIGGER USER",
                "ALTER TABLE audit_head DISABLE TRIGGER USER",
            ],
            vec![
                "ALTER TABLE audit_log ENABLE TRIGGER USER",
                "ALTER TABLE audit_head ENABLE TRIGGER USER",
            ],
        ),
    };
    let mut all = off;
    all.extend(stmts);
    all.extend(on);
    srv.sql(&all).await.unwrap();
}

/// Moves the head back to entry `seq`, with that entry's own hash: a consistent chain.
fn head_back_to(seq: i64) -> String {
    format!(
        "UPDATE audit_head SET seq = {seq}, hash = (SELECT hash FROM audit_log WHERE seq = {seq}) \
         WHERE id = 1"
    )
}

crate::both_backends!(
    a_trail_shortened_with_its_head_is_found_by_a_checkpoint,
    |srv| {
        let admin = srv.admin().await;
        for name in ["a.one", "a.two", "a.three"] {
            srv.user_with(&admin, name, &["viewer"]).await;
        }
        // An auditor takes a checkpoint on demand: the trail is verified first, then witnessed.
        let (_, auditor) = srv.user_with(&admin, "he.auditor", &["auditor"]).await;
        let r = srv
            .post("/api/v1/audit/checkpoints", &auditor, json!({}))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let written = body(r).await;
        let seq = written["checkpoint"]["seq"].as_i64().unwrap();
        assert_eq!(written["audit_seq"], seq + 1, "{written}");
        assert_eq!(written["checkpoint"]["mac"].as_str().unwrap().len(), 64);
        let file = lines(srv);
        let last: Value = serde_json::from_str(file.last().unwrap()).unwrap();
        assert_eq!(last, written["checkpoint"]);
        // The deed is in the trail, with what it witnessed.
        let newest = body(srv.get("/api/v1/audit?limit=1", &auditor).await).await;
        assert_eq!(newest[0]["action"], "audit.checkpoint");
        assert_eq!(newest[0]["actor"], "he.auditor");
        assert!(
            newest[0]["details"]
                .as_str()
                .unwrap()
                .contains(&format!("\"seq\":{seq}")),
            "{newest}"
        );
        let v = verify(srv, &auditor).await;
        assert_eq!(v["ok"], true, "{v}");
        assert!(v["checkpoints"].as_i64().unwrap() >= 1, "{v}");

        // The intruder deletes the last 4 entries and moves the head back to the one before.
        let keep = seq - 3;
        let delete = format!("DELETE FROM audit_log WHERE seq > {keep}");
        behind_the_back(srv, &[&delete, &head_back_to(keep)]).await;
        // The chain alone is consistent: without a witness this passed.
        let alone = changeguard::db::audit::verify(&srv.app.db, &srv.app.sealer)
            .await
            .unwrap();
        assert!(alone.ok, "{alone:?}");
        assert_eq!(alone.entries, keep);
        // Against the checkpoint it does not.
        let v = verify(srv, &auditor).await;
        assert_eq!(v["ok"], false, "{v}");
        // (The server's own scheduler may have witnessed an earlier head at start: that one holds.)
        let found = codes(&v);
        assert!(
            !found.is_empty() && found.iter().all(|c| c == "checkpoint_shorter"),
            "{v}"
        );
        assert_eq!(v["first_bad_entry"], keep + 1);
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains("the trail is shorter than a checkpoint"),
            "{v}"
        );

        // The CLI too, with the file named or the configured one, and with the public key only.
        let named = checkpoint_file(srv);
        let named = named.to_str().unwrap();
        let (code, out) = cli(srv, &["verify", "--checkpoints", named]);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains(&format!("BROKEN at entry {}", keep + 1))
                && out.contains("checkpoint_shorter"),
            "{out}"
        );
        let (code, out) = cli(srv, &["verify"]);
        assert_eq!(code, Some(1), "{out}");
        let public = written["public_key"].as_str().unwrap();
        let (code, out) = cli(
            srv,
            &[
                "verify",
                "--checkpoints",
                named,
                "--checkpoint-public-key",
                public,
            ],
        );
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("checkpoint_shorter"), "{out}");
        let (code, out) = cli(srv, &["verify", "--checkpoints", "/nonexistent/cp.jsonl"]);
        assert_eq!(code, Some(2), "{out}");

        // A broken trail is not witnessed: no new line, 409 (and the refusal audited).
        let before = lines(srv).len();
        problem(
            srv.post("/api/v1/audit/checkpoints", &auditor, json!({}))
                .await,
            StatusCode::CONFLICT,
            "audit_chain_broken",
        )
        .await;
        let (code, out) = cli(srv, &["checkpoint"]);
        assert_eq!(code, Some(1), "{out}");
        assert_eq!(lines(srv).len(), before);
    }
);

crate::both_backends!(
    a_head_moved_back_is_reported_with_the_rows_beyond_it,
    |srv| {
        let admin = srv.admin().await;
        srv.user_with(&admin, "b.one", &["viewer"]).await;
        let total = verify(srv, &admin).await["entries"].as_i64().unwrap();
        let back = total - 2;
        behind_the_back(srv, &[&head_back_to(back)]).await;
        let v = verify(srv, &admin).await;
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(codes(&v)[0], "rows_beyond_head", "{v}");
        assert_eq!(v["first_bad_entry"], back + 1);
        assert!(
            v["reason"]
                .as_str()
                .unwrap()
                .contains(&format!("lie beyond the head (entry {back})")),
            "{v}"
        );
        let (code, out) = cli(srv, &["verify"]);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("rows_beyond_head"), "{out}");
        // Every append now collides with the hidden rows, the scheduled finding's too: the
        // compliance department and the admins are e-mailed all the same.
        let day = chrono::Utc::now()
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .date_naive()
            + chrono::Days::new(1);
        changeguard::notify::schedule::tick(&srv.app, crate::changes::at(day, 2 * 60 + 1))
            .await
            .unwrap();
        let all = body(srv.get("/api/v1/notifications", &admin).await).await;
        assert!(
            all.as_array()
                .unwrap()
                .iter()
                .any(|n| n["kind"] == "audit_broken"),
            "{all}"
        );
    }
);

crate::both_backends!(a_tampered_checkpoint_is_reported, |srv| {
    let admin = srv.admin().await;
    srv.user_with(&admin, "c.one", &["viewer"]).await;
    // The scheduled verification (02:00 bank time) writes a checkpoint when the trail is intact.
    let total = verify(srv, &admin).await["entries"].as_i64().unwrap();
    let day = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive()
        + chrono::Days::new(1);
    let ran = changeguard::notify::schedule::tick(&srv.app, crate::changes::at(day, 2 * 60 + 1))
        .await
        .unwrap();
    assert!(ran.0.iter().any(|(job, _)| *job == "audit_verify"));
    let last: Value = serde_json::from_str(lines(srv).last().unwrap()).unwrap();
    assert_eq!(last["seq"], total, "{last}");
    let r = srv
        .post("/api/v1/audit/checkpoints", &admin, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = verify(srv, &admin).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checkpoints"].as_i64().unwrap(), lines(srv).len() as i64);

    // Somebody lowers the seq of the last checkpoint (so a shortened trail would pass it),
    // keeping its signature.
    let mut all = lines(srv);
    let n = all.len();
    let mut edited: Value = serde_json::from_str(&all[n - 1]).unwrap();
    edited["seq"] = json!(1);
    all[n - 1] = edited.to_string();
    all.push("not a checkpoint".into());
    std::fs::write(checkpoint_file(srv), all.join("\n") + "\n").unwrap();
    let v = verify(srv, &admin).await;
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(
        codes(&v),
        vec!["checkpoint_signature", "checkpoint_malformed"],
        "{v}"
    );
    assert_eq!(v["findings"][0]["line"], n);
    assert_eq!(v["first_bad_entry"], Value::Null);
    let (code, out) = cli(srv, &["verify"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("audit trail BROKEN") && out.contains("checkpoint_signature"),
        "{out}"
    );
    // Checked with another public key, every checkpoint is refused.
    let (code, out) = cli(
        srv,
        &["verify", "--checkpoint-public-key", &"ab".repeat(32)],
    );
    assert_ne!(code, Some(0), "{out}");
});

crate::both_backends!(the_digest_carries_the_latest_checkpoint, |srv| {
    let admin = srv.admin().await;
    srv.user_with(&admin, "mgr.chen", &["manager"]).await;
    let r = srv
        .post("/api/v1/audit/checkpoints", &admin, json!({}))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let written = body(r).await;
    // A working day still ahead (the server's own scheduler has not run its digest), 08:31 bank
    // time.
    let ahead = crate::changes::first_working_day_to_start(srv, &admin).await;
    let ran = changeguard::notify::schedule::tick(&srv.app, crate::changes::at(ahead, 8 * 60 + 31))
        .await
        .unwrap();
    assert!(ran.0.iter().any(|(job, _)| *job == "digest"), "{:?}", ran.0);
    let sql = "SELECT body_text FROM outbox WHERE kind = 'digest' ORDER BY id DESC LIMIT 1";
    let text: String = match &srv.app.db {
        changeguard::db::Db::Sqlite(pool, ..) => {
            sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
        }
        changeguard::db::Db::Postgres(pool, _) => {
            sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
        }
    };
    let seq = written["checkpoint"]["seq"].as_i64().unwrap();
    let short = &written["checkpoint"]["mac"].as_str().unwrap()[..16];
    let zh = text
        .find(&format!("审计轨迹检查点：第 {seq} 条记录，MAC {short}…"))
        .unwrap_or_else(|| panic!("{text}"));
    let en = text
        .find(&format!(
            "Audit trail checkpoint: entry {seq}, MAC {short}…"
        ))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(zh < en, "Chinese first: {text}");
});
