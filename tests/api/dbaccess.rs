//! Just-in-time database accounts on the real PostgreSQL and the real MariaDB of this machine:
//! made for the assignee of a database change in progress with exactly its action's grants,
//! gone (sessions ended) when the change completes or its window ends; every refusal audited.

use chrono::TimeDelta;
use reqwest::StatusCode;
use serde_json::{Value, json};
use sqlx::Connection;

use changeguard::vault::totp;

use crate::harness::{TestServer, USER_PASSWORD, body, mysql_url, postgres_url, problem};
use crate::vault::{Vault, aligned_step, change_in_progress, enrol, setup};

/// A target database with a table `accounts`, and the admin account changeguard uses.
struct Target {
    engine: &'static str,
    port: u16,
    database: String,
    admin_user: String,
    admin_password: String,
    grants: Value,
}

fn suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_string()
}

async fn pg_target() -> Option<Target> {
    let url = postgres_url()?;
    let s = suffix();
    let database = format!("cg_tgt_{s}");
    let mut admin = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = url.rsplit_once('/').unwrap().0;
    let mut c = sqlx::PgConnection::connect(&format!("{base}/{database}"))
        .await
        .unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL); \
         INSERT INTO accounts VALUES (1, 100), (2, 200); \
         CREATE ROLE writer_{s} NOLOGIN; GRANT SELECT, UPDATE ON accounts TO writer_{s}; \
         CREATE ROLE reader_{s} NOLOGIN; GRANT SELECT ON accounts TO reader_{s};"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    Some(Target {
        engine: "postgres",
        port: 5432,
        database,
        admin_user: "postgres".into(),
        // Trust authentication on this machine: the password is not checked.
        admin_password: "unused-with-trust-auth".into(),
        grants: json!({"update": [format!("writer_{s}")], "read": [format!("reader_{s}")]}),
    })
}

async fn mysql_target() -> Option<Target> {
    let url = mysql_url()?;
    let s = suffix();
    let database = format!("cg_tgt_{s}");
    let admin_user = format!("cg_admin_{s}");
    let admin_password = format!("Adm1n{s}");
    let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
    for stmt in [
        format!("CREATE DATABASE {database}"),
        format!("CREATE TABLE {database}.accounts (id INT PRIMARY KEY, balance INT NOT NULL)"),
        format!("INSERT INTO {database}.accounts VALUES (1, 100), (2, 200)"),
        format!("CREATE USER '{admin_user}'@'%' IDENTIFIED BY '{admin_password}'"),
        format!("GRANT ALL ON *.* TO '{admin_user}'@'%' WITH GRANT OPTION"),
    ] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(stmt))
            .execute(&mut c)
            .await
            .unwrap();
    }
    Some(Target {
        engine: "mysql",
        port: 3306,
        database,
        admin_user,
        admin_password,
        grants: json!({"update": ["UPDATE"], "read": ["SELECT"]}),
    })
}

/// Connects as a temporary account.
async fn connect(t: &Target, user: &str, password: &str) -> Result<Box<dyn Probe>, String> {
    match t.engine {
        "postgres" => {
            let opts = sqlx::postgres::PgConnectOptions::new()
                .host("127.0.0.1")
                .port(t.port)
                .database(&t.database)
                .username(user)
                .password(password);
            sqlx::PgConnection::connect_with(&opts)
                .await
                .map(|c| Box::new(c) as Box<dyn Probe>)
                .map_err(|e| e.to_string())
        }
        _ => {
            let opts = sqlx::mysql::MySqlConnectOptions::new()
                .host("127.0.0.1")
                .port(t.port)
                .database(&t.database)
                .username(user)
                .password(password);
            sqlx::MySqlConnection::connect_with(&opts)
                .await
                .map(|c| Box::new(c) as Box<dyn Probe>)
                .map_err(|e| e.to_string())
        }
    }
}

/// Runs one statement on an open connection of either engine.
#[async_trait::async_trait]
trait Probe: Send {
    async fn run(&mut self, sql: &str) -> Result<(), String>;
}

#[async_trait::async_trait]
impl Probe for sqlx::PgConnection {
    async fn run(&mut self, sql: &str) -> Result<(), String> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[async_trait::async_trait]
impl Probe for sqlx::MySqlConnection {
    async fn run(&mut self, sql: &str) -> Result<(), String> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(self)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

async fn register(srv: &TestServer, v: &Vault, t: &Target) -> i64 {
    let r = srv
        .post(
            "/api/v1/credentials",
            &v.admin,
            json!({"name": format!("{} admin", t.engine), "system": "core-db", "account": t.admin_user,
                   "kind": "password", "secret": t.admin_password}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cred = body(r).await["id"].as_i64().unwrap();
    let r = srv
        .post(
            "/api/v1/systems/core-db/databases",
            &v.admin,
            json!({"name": t.engine, "engine": t.engine, "host": "127.0.0.1", "port": t.port,
                   "database": t.database, "admin_credential_id": cred, "grants": t.grants}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", body(r).await);
    body(r).await["id"].as_i64().unwrap()
}

async fn ask(
    srv: &TestServer,
    token: &str,
    change: i64,
    database: &str,
    code: String,
) -> reqwest::Response {
    srv.post(
        &format!("/api/v1/changes/{change}/database-access"),
        token,
        json!({"database": database, "totp": code}),
    )
    .await
}

async fn exercise(srv: &TestServer, v: &Vault, secret: &[u8], t: &Target) {
    // Fresh TOTP steps (each code works once).
    srv.advance(TimeDelta::seconds(70));
    register(srv, v, t).await;
    let change = change_in_progress(srv, v, &v.op).await;
    // Not the assignee: refused (and audited).
    let step = aligned_step(srv);
    problem(
        ask(srv, &v.op2, change, t.engine, totp::code_at(secret, step)).await,
        StatusCode::FORBIDDEN,
        "not_assignee",
    )
    .await;
    let r = ask(srv, &v.op, change, t.engine, totp::code_at(secret, step)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", t.engine);
    let a = body(r).await;
    let (user, password) = (
        a["username"].as_str().unwrap(),
        a["password"].as_str().unwrap(),
    );
    assert!(user.starts_with("cg_"));

    // Exactly the grants of an `update` change: UPDATE and SELECT, no DELETE, no schema.
    let mut c = connect(t, user, password).await.unwrap();
    c.run("UPDATE accounts SET balance = balance + 1 WHERE id = 1")
        .await
        .unwrap();
    c.run("SELECT * FROM accounts").await.unwrap();
    assert!(
        c.run("DELETE FROM accounts WHERE id = 2").await.is_err(),
        "{}: no DELETE",
        t.engine
    );
    assert!(
        c.run("ALTER TABLE accounts ADD COLUMN x INT")
            .await
            .is_err(),
        "{}: no schema",
        t.engine
    );
    if t.engine == "mysql" {
        assert!(connect(t, user, "wrong-password").await.is_err());
    }

    // Completed: the account and its open session are gone.
    let op = srv.token("op.zhang", USER_PASSWORD).await;
    let r = srv
        .post(
            &format!("/api/v1/changes/{change}/complete"),
            &op,
            json!({"outcome": "succeeded", "notes": "完成 / done"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        connect(t, user, password).await.is_err(),
        "{}: cannot connect after",
        t.engine
    );
    assert!(
        c.run("SELECT 1").await.is_err(),
        "{}: the open session is ended",
        t.engine
    );
    let step = aligned_step(srv);
    problem(
        ask(srv, &op, change, t.engine, totp::code_at(secret, step + 1)).await,
        StatusCode::FORBIDDEN,
        "change_not_in_progress",
    )
    .await;
}

crate::both_backends!(database_accounts_live_only_inside_the_change, |srv| {
    let v = setup(srv).await;
    let secret = enrol(srv, &v.op).await;
    let pg = pg_target().await;
    let my = mysql_target().await;
    for t in pg.iter().chain(my.iter()) {
        exercise(srv, &v, &secret, t).await;
    }

    // The window's end: the job drops an account of a change still in progress.
    if let Some(t) = &my {
        srv.advance(TimeDelta::seconds(70));
        let change = change_in_progress(srv, &v, &srv.token("op.zhang", USER_PASSWORD).await).await;
        let op = srv.token("op.zhang", USER_PASSWORD).await;
        let step = aligned_step(srv);
        let a = body(ask(srv, &op, change, t.engine, totp::code_at(&secret, step)).await).await;
        let (user, password) = (
            a["username"].as_str().unwrap(),
            a["password"].as_str().unwrap(),
        );
        assert!(connect(t, user, password).await.is_ok());
        // The job inside the window leaves it alone.
        changeguard::dbaccess::revoke_due(&srv.app, srv.now())
            .await
            .unwrap();
        assert!(
            connect(t, user, password).await.is_ok(),
            "alive inside the window"
        );
        srv.advance(TimeDelta::hours(2) + TimeDelta::minutes(1));
        let (dropped, failing) = changeguard::dbaccess::revoke_due(&srv.app, srv.now())
            .await
            .unwrap();
        assert!(dropped >= 1 && failing == 0, "{dropped} {failing}");
        assert!(
            connect(t, user, password).await.is_err(),
            "gone after the window"
        );
    }

    // Accounts dropped at completion settle as revoked at the next run.
    srv.advance(TimeDelta::minutes(2));
    changeguard::dbaccess::revoke_due(&srv.app, srv.now())
        .await
        .unwrap();
    let admin = srv.admin().await;
    let live = body(
        srv.get("/api/v1/database-accounts?status=live", &admin)
            .await,
    )
    .await;
    assert_eq!(live, json!([]), "no account outlives its change");
    let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
        .await
        .unwrap();
    let refused = trail
        .iter()
        .filter(|e| e.action == "database_access.grant" && e.outcome == "refused")
        .count();
    assert!(refused >= 2, "refusals are audited");
    for e in &trail {
        assert!(!e.details.contains("password\":\""), "{}", e.details);
    }
});

/// A loopback TCP relay to the real PostgreSQL that the test can take down (every connection
/// cut, new ones refused) and bring back: the target "down" without stopping the shared server.
struct Relay {
    port: u16,
    up: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn to(upstream: u16) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let open = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (flag, conns) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay { port, up, open }
    }

    fn down(&self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        for c in self.open.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

// The target is down when the window ends: the revocation fails, is retried every run, shows
// as overdue (list, gauge) and is e-mailed to the admins once; back up, it succeeds, and two
// instances running the job together record it once.
crate::both_backends!(
    a_revocation_with_the_target_down_is_retried_then_done_once,
    |srv| {
        let v = setup(srv).await;
        let secret = enrol(srv, &v.op).await;
        let mut t = pg_target()
            .await
            .expect("PostgreSQL (CHANGEGUARD_TEST_POSTGRES_URL) is the target of this test");
        let direct = t.port;
        let relay = Relay::to(direct).await;
        t.port = relay.port;
        srv.advance(TimeDelta::seconds(70));
        register(srv, &v, &t).await;
        let change = change_in_progress(srv, &v, &v.op).await;
        let step = aligned_step(srv);
        let a = body(ask(srv, &v.op, change, t.engine, totp::code_at(&secret, step)).await).await;
        let (user, password) = (
            a["username"].as_str().unwrap().to_string(),
            a["password"].as_str().unwrap().to_string(),
        );
        let mut session = connect(&t, &user, &password).await.unwrap();
        session.run("SELECT 1").await.unwrap();

        relay.down();
        srv.advance(TimeDelta::hours(2) + TimeDelta::minutes(1));
        for run in 1..=2 {
            let (dropped, failing) = changeguard::dbaccess::revoke_due(&srv.app, srv.now())
                .await
                .unwrap();
            assert_eq!((dropped, failing), (0, 1), "run {run}");
        }
        let admin = srv.admin().await;
        let overdue = body(
            srv.get("/api/v1/database-accounts?status=overdue", &admin)
                .await,
        )
        .await;
        let row = overdue
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["username"] == user.as_str())
            .unwrap_or_else(|| panic!("{overdue}"));
        assert_eq!(row["attempts"], 2);
        assert!(row["last_error"].is_string());
        let metrics = srv
            .client
            .get(srv.url("/metrics"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        // The gauge is process-wide: other tests in this binary set it too, so only its
        // presence is checked here (the count is the overdue list above).
        assert!(
            metrics.contains("changeguard_database_accounts_overdue"),
            "{metrics}"
        );
        let told = crate::vault::notices(srv, &admin, "database_access_overdue").await;
        assert_eq!(told.len(), 1, "the admins are told once, not every minute");
        assert!(told[0]["subject"].as_str().unwrap().contains(&user));

        relay.up();
        let second = srv.second_instance().await;
        let (one, two) = tokio::join!(
            changeguard::dbaccess::revoke_due(&srv.app, srv.now()),
            changeguard::dbaccess::revoke_due(&second.app, srv.now()),
        );
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(one.1 + two.1, 0, "{one:?} {two:?}");
        t.port = direct;
        assert!(connect(&t, &user, &password).await.is_err(), "gone");
        assert!(session.run("SELECT 1").await.is_err(), "its session ended");
        let revoked = body(
            srv.get("/api/v1/database-accounts?status=revoked", &admin)
                .await,
        )
        .await;
        assert!(
            revoked
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["username"] == user.as_str()),
            "{revoked}"
        );
        let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
            .await
            .unwrap();
        let count = |action: &str| {
            trail
                .iter()
                .filter(|e| e.action == action && e.details.contains(&user))
                .count()
        };
        assert_eq!(count("database_access.revoke"), 1, "recorded once");
        assert_eq!(count("database_access.revoke_failed"), 1);
        second.stop().await;
    }
);

/// Runs statements as the MariaDB root of this machine.
async fn mysql_root(stmts: &[String]) {
    let mut c = sqlx::MySqlConnection::connect(&mysql_url().unwrap())
        .await
        .unwrap();
    for s in stmts {
        sqlx::raw_sql(sqlx::AssertSqlSafe(s.clone()))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

// A password credential on a database target is rotated by changeguard itself: on demand
// (`generate`), and after use when the change it was revealed for completes. A rotation the
// target refused stays pending and is finished by the minute job (as after a crash between the
// steps); the old password stops working each time, the revealed one works until then.
crate::both_backends!(rotation_after_use_is_done_by_the_machine, |srv| {
    let v = setup(srv).await;
    let secret = enrol(srv, &v.op).await;
    let Some(t) = mysql_target().await else {
        return;
    };
    let target = register(srv, &v, &t).await;
    let app_user = format!("app_{}", suffix());
    mysql_root(&[
        format!("CREATE USER '{app_user}'@'%' IDENTIFIED BY 'Initial0pass'"),
        format!("GRANT SELECT ON {}.* TO '{app_user}'@'%'", t.database),
    ])
    .await;
    let create = |extra: Value| {
        let mut doc = json!({"name": format!("app {}", suffix()), "system": "core-db",
                             "account": app_user, "kind": "password", "secret": "Initial0pass"});
        for (k, x) in extra.as_object().unwrap() {
            doc[k] = x.clone();
        }
        let admin = v.admin.clone();
        async move { srv.post("/api/v1/credentials", &admin, doc).await }
    };
    // The target must be a live target of the credential's own system, for a password, and
    // the account a plain name.
    for bad in [
        json!({"target": {"database_id": target, "account": "x'; DROP USER root; --"}}),
        json!({"target": {"database_id": 999_999, "account": app_user}}),
        json!({"kind": "token", "target": {"database_id": target, "account": app_user}}),
    ] {
        problem(
            create(bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_target",
        )
        .await;
    }
    let r = create(json!({"target": {"database_id": target, "account": app_user}})).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let cred = body(r).await;
    assert_eq!(cred["target_account"], app_user.as_str(), "{cred}");
    let id = cred["id"].as_i64().unwrap();
    let rotate = |token: String, doc: Value| async move {
        srv.post(&format!("/api/v1/credentials/{id}/rotate"), &token, doc)
            .await
    };
    problem(
        rotate(v.admin.clone(), json!({"secret": "x", "generate": true})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;

    // On demand: a new random password is set on the target; the old one stops working.
    let r = rotate(v.admin.clone(), json!({"generate": true})).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", body(r).await);
    assert!(connect(&t, &app_user, "Initial0pass").await.is_err());

    // Revealed for a change, it works on the target, until the change completes.
    srv.advance(TimeDelta::seconds(70));
    let change = change_in_progress(srv, &v, &v.op).await;
    let step = aligned_step(srv);
    let r = srv
        .post(
            &format!("/api/v1/credentials/{id}/reveal"),
            &v.op,
            json!({"reason": "数据修复 / data fix", "totp": totp::code_at(&secret, step)}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let revealed = body(r).await["secret"].as_str().unwrap().to_string();
    assert!(connect(&t, &app_user, &revealed).await.is_ok());
    // changeguard rotates it, so nobody is reminded to.
    let reminders = body(srv.get("/api/v1/me/credential-reminders", &v.op).await).await;
    assert_eq!(reminders, json!([]), "{reminders}");
    let op = srv.token("op.zhang", USER_PASSWORD).await;
    let r = srv
        .post(
            &format!("/api/v1/changes/{change}/complete"),
            &op,
            json!({"outcome": "succeeded", "notes": "完成 / done"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        connect(&t, &app_user, &revealed).await.is_err(),
        "the revealed password is dead after the change"
    );
    let c = body(
        srv.get(&format!("/api/v1/credentials/{id}"), &v.admin)
            .await,
    )
    .await;
    assert_eq!(c["version"], 3, "{c}");
    assert_eq!(c["rotate_after_use"], false, "{c}");

    // The target refuses (its admin account is locked): the new version stays pending, a
    // second rotation waits for it, and the job finishes it once the target takes it.
    mysql_root(&[format!("ALTER USER '{}'@'%' ACCOUNT LOCK", t.admin_user)]).await;
    let r = rotate(v.admin.clone(), json!({"generate": true})).await;
    problem(
        r,
        StatusCode::INTERNAL_SERVER_ERROR,
        "database_target_unavailable",
    )
    .await;
    problem(
        rotate(v.admin.clone(), json!({"secret": "a manual one 2026"})).await,
        StatusCode::CONFLICT,
        "rotation_pending",
    )
    .await;
    let c = body(
        srv.get(&format!("/api/v1/credentials/{id}"), &v.admin)
            .await,
    )
    .await;
    assert_eq!(c["version"], 3, "nothing promoted: {c}");
    mysql_root(&[format!("ALTER USER '{}'@'%' ACCOUNT UNLOCK", t.admin_user)]).await;
    // Not before it settled (a rotation may still be under way) ...
    changeguard::vault::machine::rotate_due(&srv.app, None, srv.now())
        .await
        .unwrap();
    let c = body(
        srv.get(&format!("/api/v1/credentials/{id}"), &v.admin)
            .await,
    )
    .await;
    assert_eq!(c["version"], 3, "{c}");
    // ... then by the job, on one instance; running it again changes nothing.
    srv.advance(TimeDelta::minutes(3));
    let done = changeguard::vault::machine::rotate_due(&srv.app, None, srv.now())
        .await
        .unwrap();
    assert_eq!(done, 1);
    changeguard::vault::machine::rotate_due(&srv.app, None, srv.now())
        .await
        .unwrap();
    let c = body(
        srv.get(&format!("/api/v1/credentials/{id}"), &v.admin)
            .await,
    )
    .await;
    assert_eq!(c["version"], 4, "{c}");

    // Audited, never with a password.
    let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
        .await
        .unwrap();
    let done = trail
        .iter()
        .filter(|e| e.action == "credential.rotate" && e.details.contains("\"generated\":true"))
        .count();
    assert_eq!(done, 3, "three rotations set on the target");
    for e in &trail {
        assert!(!e.details.contains(&revealed), "{}", e.details);
    }
});

crate::both_backends!(
    a_mariadb_admin_that_cannot_see_sessions_issues_no_account,
    |srv| {
        let v = setup(srv).await;
        let secret = enrol(srv, &v.op).await;
        let Some(t) = mysql_target().await else {
            return;
        };
        // Without PROCESS (or SUPER) the admin sees only its own sessions: it could never end the
        // sessions of an account it issued, so it issues none.
        mysql_root(&[format!(
            "REVOKE PROCESS, SUPER ON *.* FROM '{}'@'%'",
            t.admin_user
        )])
        .await;
        register(srv, &v, &t).await;
        let change = change_in_progress(srv, &v, &v.op).await;
        let step = aligned_step(srv);
        let r = ask(srv, &v.op, change, t.engine, totp::code_at(&secret, step)).await;
        problem(
            r,
            StatusCode::INTERNAL_SERVER_ERROR,
            "database_target_unavailable",
        )
        .await;
    }
);
