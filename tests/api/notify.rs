//! Email notices through a REAL SMTP server (mailin-embedded, in this process) and the real
//! binary: delivery with details and calendar entry, outages, SIGKILL, two instances, dead
//! letters and their retry, the scheduled digest and reminder.

use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, TimeDelta, Utc};
use mail_parser::MimeHeaders as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::changes::{at, change, notice_today, setup};
use crate::harness::{Backend, Options, TestServer, body, postgres_url, problem, shipped_policies};
use crate::rbac::copy_dir;

/// One message as the SMTP server received it: (envelope recipients, raw message).
type Received = (Vec<String>, Vec<u8>);

/// What the SMTP server received.
#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<Received>>>,
    to: Vec<String>,
    buf: Vec<u8>,
}

impl mailin_embedded::Handler for Sink {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        to: &[String],
    ) -> mailin_embedded::Response {
        self.to = to.to_vec();
        self.buf.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let msg = std::mem::take(&mut self.buf);
        self.got
            .lock()
            .unwrap()
            .push((std::mem::take(&mut self.to), msg));
        mailin_embedded::response::OK
    }
}

/// A real SMTP server on 127.0.0.1 (a thread for the life of the test binary).
struct Smtp {
    port: u16,
    sink: Sink,
}

impl Smtp {
    fn start() -> Smtp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(l)
    }

    /// A port where nothing listens yet (the mail server is "down").
    fn down() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// The mail server comes (back) up on `port`.
    fn up_on(port: u16) -> Smtp {
        Self::serve(TcpListener::bind(("127.0.0.1", port)).unwrap())
    }

    fn serve(l: TcpListener) -> Smtp {
        let port = l.local_addr().unwrap().port();
        let sink = Sink::default();
        let mut server = mailin_embedded::Server::new(sink.clone());
        // A thread per connection: lettre's pools keep connections open.
        server
            .with_name("mail.test")
            .with_num_threads(64)
            .with_tcp_listener(l);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        Smtp { port, sink }
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// What arrived, less the scheduler's weekly warning about next year's calendar (sent at
    /// start-up from 1 November while the test calendar for next year is not loaded yet) and the
    /// notices of the fixtures' privileged grants (their own test is in `privilege`).
    fn messages(&self) -> Vec<Received> {
        let got = self.sink.got.lock().unwrap().clone();
        got.into_iter()
            .filter(|(_, raw)| {
                let subject = parse(raw).subject().unwrap_or("").to_string();
                !subject.contains("工作日历") && !subject.contains("特权角色")
            })
            .collect()
    }

    /// Waits until at least `n` messages arrived (20 s at most).
    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// The shipped policies with faster retries (and `max_attempts`), in a temporary folder.
fn fast_policies(max_attempts: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shipped_policies(), dir.path());
    crate::harness::ask_no_second_factor_at_login(dir.path());
    let f = dir.path().join("notifications.toml");
    let text = std::fs::read_to_string(&f)
        .unwrap()
        .replace(
            "max_attempts = 8",
            &format!("max_attempts = {max_attempts}"),
        )
        .replace("backoff_secs = 30", "backoff_secs = 1")
        .replace("poll_secs = 10", "poll_secs = 1")
        .replace("lease_secs = 120", "lease_secs = 2");
    std::fs::write(&f, text).unwrap();
    dir
}

async fn start(backend: Backend, smtp: &str, policies: Option<&Path>) -> TestServer {
    TestServer::start_with(
        backend,
        Options {
            smtp_url: Some(smtp.to_string()),
            policies: policies.map_or_else(shipped_policies, Path::to_path_buf),
            ..Options::default()
        },
    )
    .await
}

/// Polls the notifications API until `pred` holds for the list (20 s at most).
async fn wait_api(
    srv: &TestServer,
    token: &str,
    query: &str,
    pred: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let list = body(
            srv.get(&format!("/api/v1/notifications{query}"), token)
                .await,
        )
        .await;
        let list = list.as_array().unwrap().clone();
        if pred(&list) || Instant::now() > deadline {
            return list;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files a change starting on the earliest permitted day; returns its id.
async fn file_one(srv: &TestServer, op: &str, admin: &str) -> (i64, NaiveDate) {
    let (_, earliest) = notice_today(srv, admin).await;
    let mut c = change(at(earliest, 600), 2);
    // A textarea's CRLF, and text that looks like a calendar method: neither may leak into the
    // calendar entry's structure nor decide the e-mail's method.
    c["rollback_plan"] = json!(format!(
        "{}\r\n演练口令 METHOD:CANCEL",
        c["rollback_plan"].as_str().unwrap()
    ));
    let r = srv.post("/api/v1/changes", op, c).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (body(r).await["id"].as_i64().unwrap(), earliest)
}

/// The `method` of a calendar attachment's content type, upper-cased.
fn calendar_method(part: &mail_parser::MessagePart<'_>) -> String {
    use mail_parser::MimeHeaders;
    let ct = part.content_type().expect("a content type");
    assert_eq!(ct.ctype(), "text");
    assert_eq!(ct.subtype(), Some("calendar"));
    ct.attribute("method")
        .expect("a method parameter")
        .to_ascii_uppercase()
}

fn parse(raw: &[u8]) -> mail_parser::Message<'_> {
    mail_parser::MessageParser::default().parse(raw).unwrap()
}

async fn filing_reaches_management(backend: Backend) {
    let smtp = Smtp::start();
    let srv = start(backend, &smtp.url(), None).await;
    let p = setup(&srv).await;
    let (id, earliest) = file_one(&srv, &p.op, &p.admin).await;

    // The notice to management (mgr.chen holds manager), the requester's receipt, and the
    // first approval stage's request to the technology head.
    let got = smtp.wait_for(3).await;
    assert_eq!(
        got.len(),
        3,
        "three messages: notice, receipt, approval request"
    );
    let (to, raw) = got
        .iter()
        .find(|(to, _)| to.iter().any(|t| t.contains("lead.wang@bank.example")))
        .expect("a message to the first stage's approver");
    assert_eq!(to.len(), 1, "{to:?}");
    assert!(parse(raw).subject().unwrap().contains("待您审批"));
    let (to, raw) = got
        .iter()
        .find(|(to, _)| to.iter().any(|t| t.contains("mgr.chen@bank.example")))
        .expect("a message to the manager");
    assert!(!to.iter().any(|t| t.contains("op.zhang")), "{to:?}");
    let m = parse(raw);
    let subject = m.subject().unwrap();
    assert!(subject.starts_with("[变更通知]"), "{subject}");
    assert!(subject.contains(&format!("#{id}")), "{subject}");
    let text = m.body_text(0).unwrap();
    assert!(text.contains("客户服务平台升级 v2.3"), "{text}");
    assert!(text.contains(&format!("最早可开始：{earliest}")), "{text}");
    assert!(text.contains("回退到 2.2.9 镜像"), "{text}");
    // The link opens the console page; words, not codes.
    assert!(text.contains(&format!("/console/changes/{id}")), "{text}");
    assert!(text.contains("状态：已提交待审批"), "{text}");
    assert!(
        !text.contains("submitted") && !text.contains("风险：medium"),
        "{text}"
    );
    let html = m.body_html(0).unwrap();
    assert!(html.contains("客户服务平台升级 v2.3"), "{html}");
    let ics = m
        .attachments()
        .find(|a| a.attachment_name() == Some("change.ics"))
        .expect("calendar attachment");
    assert_eq!(calendar_method(ics), "REQUEST");
    let ics = String::from_utf8_lossy(ics.contents()).to_string();
    assert!(ics.contains("METHOD:REQUEST"), "{ics}");
    // Every CR ends a content line; the CRLF of the rollback plan is an escaped line break.
    assert!(
        ics.split("\r\n").all(|line| !line.contains('\r')),
        "{ics:?}"
    );
    let unfolded = ics.replace("\r\n ", "");
    assert!(unfolded.contains("\\n演练口令 METHOD:CANCEL"), "{unfolded}");
    assert!(
        ics.contains(&format!("UID:change-{id}@changeguard")),
        "{ics}"
    );
    // An independent parser reads it: iTIP's organizer (the sender) and one attendee per
    // recipient of this message.
    let cal = ical::IcalParser::new(std::io::BufReader::new(ics.as_bytes()))
        .next()
        .expect("a calendar")
        .expect("it parses");
    let event = &cal.events[0];
    let props = |name: &str| -> Vec<String> {
        event
            .properties
            .iter()
            .filter(|p| p.name == name)
            .filter_map(|p| p.value.clone())
            .collect()
    };
    assert_eq!(props("ORGANIZER"), vec!["mailto:changeguard@localhost"]);
    let attendees = props("ATTENDEE");
    assert_eq!(attendees.len(), to.len(), "{attendees:?} {to:?}");
    assert!(
        attendees
            .iter()
            .any(|a| a == "mailto:mgr.chen@bank.example"),
        "{attendees:?}"
    );
    assert_eq!(props("UID"), vec![format!("change-{id}@changeguard")]);
    assert!(props("DESCRIPTION")[0].contains("已提交待审批"));
    let message_id = m.message_id().unwrap().to_string();
    assert!(message_id.starts_with("outbox-"), "{message_id}");

    // The receipt goes to the requester only.
    let (to, _) = got
        .iter()
        .find(|(to, _)| to.iter().any(|t| t.contains("op.zhang")))
        .expect("a receipt");
    assert_eq!(to.len(), 1);

    // Managers see the messages; the stored Message-ID is the one sent.
    let list = wait_api(&srv, &p.mgr, &format!("?change_id={id}"), |l| {
        l.len() == 3 && l.iter().all(|m| m["status"] == "sent")
    })
    .await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        list.iter()
            .all(|m| m["status"] == "sent" && m["attempts"] == 1),
        "{list:?}"
    );
    assert!(
        list.iter()
            .any(|m| m["message_id"] == format!("<{message_id}>") && m["kind"] == "filed"),
        "{list:?}"
    );
    // Viewers and operators may not read them; a bad status filter is a 400.
    problem(
        srv.get("/api/v1/notifications", &p.viewer).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        srv.get("/api/v1/notifications", &p.op).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        srv.get("/api/v1/notifications?status=lost", &p.mgr).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_status",
    )
    .await;

    // Rejection: a CANCEL for the same calendar entry, to requester and assignee.
    let r = srv
        .post(
            &format!("/api/v1/changes/{id}/reject"),
            &p.lead,
            json!({"reason": "窗口冲突"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let got = smtp.wait_for(4).await;
    assert_eq!(got.len(), 4);
    let m = parse(&got[3].1);
    assert!(m.subject().unwrap().contains("已驳回"), "{:?}", m.subject());
    assert!(m.body_text(0).unwrap().contains("窗口冲突"));
    let ics = m.attachments().next().unwrap();
    assert_eq!(calendar_method(ics), "CANCEL");
    let ics = String::from_utf8_lossy(ics.contents()).to_string();
    assert!(ics.contains("METHOD:CANCEL") && ics.contains(&format!("UID:change-{id}@changeguard")));
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filing_reaches_management_sqlite() {
    filing_reaches_management(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filing_reaches_management_postgres() {
    if postgres_url().is_some() {
        filing_reaches_management(Backend::Postgres).await;
    }
}

async fn outage_then_delivery(backend: Backend) {
    let port = Smtp::down();
    let policies = fast_policies(100);
    let srv = start(
        backend,
        &format!("smtp://127.0.0.1:{port}"),
        Some(policies.path()),
    )
    .await;
    let p = setup(&srv).await;
    let (id, _) = file_one(&srv, &p.op, &p.admin).await;
    // The mail server is down: the notice waits, with the reason.
    let list = wait_api(
        &srv,
        &p.mgr,
        &format!("?change_id={id}&status=failed"),
        |l| l.len() == 3,
    )
    .await;
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(
        list[0]["last_error"].as_str().unwrap().len() > 3,
        "{list:?}"
    );
    // It comes back: the waiting messages go out (once each).
    let smtp = Smtp::up_on(port);
    let list = wait_api(&srv, &p.mgr, &format!("?change_id={id}"), |l| {
        l.iter().all(|m| m["status"] == "sent")
    })
    .await;
    assert!(list.iter().all(|m| m["status"] == "sent"), "{list:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(smtp.messages().len(), 3);
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_delivery_sqlite() {
    outage_then_delivery(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_then_delivery_postgres() {
    if postgres_url().is_some() {
        outage_then_delivery(Backend::Postgres).await;
    }
}

async fn dead_letter_and_retry(backend: Backend) {
    let port = Smtp::down();
    let policies = fast_policies(1);
    let srv = start(
        backend,
        &format!("smtp://127.0.0.1:{port}"),
        Some(policies.path()),
    )
    .await;
    let p = setup(&srv).await;
    let (id, _) = file_one(&srv, &p.op, &p.admin).await;
    let list = wait_api(&srv, &p.mgr, &format!("?change_id={id}&status=dead"), |l| {
        l.len() == 3
    })
    .await;
    assert_eq!(list.len(), 3, "dead after one attempt: {list:?}");
    let nid = list[0]["id"].as_i64().unwrap();
    // Only notification.retry may retry; only a dead message; unknown → 404.
    problem(
        srv.post(
            &format!("/api/v1/notifications/{nid}/retry"),
            &p.op,
            json!({}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    problem(
        srv.post("/api/v1/notifications/999999/retry", &p.mgr, json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let smtp = Smtp::up_on(port);
    let r = srv
        .post(
            &format!("/api/v1/notifications/{nid}/retry"),
            &p.mgr,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc = body(r).await;
    assert!(
        doc["status"] == "pending" || doc["status"] == "sending" || doc["status"] == "sent",
        "{doc}"
    );
    let got = smtp.wait_for(1).await;
    assert_eq!(got.len(), 1);
    let list = wait_api(&srv, &p.mgr, &format!("?change_id={id}&status=sent"), |l| {
        l.len() == 1
    })
    .await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], nid);
    // Sent is not dead: 409; the other two stay dead until retried.
    problem(
        srv.post(
            &format!("/api/v1/notifications/{nid}/retry"),
            &p.mgr,
            json!({}),
        )
        .await,
        StatusCode::CONFLICT,
        "not_dead",
    )
    .await;
    let dead = body(
        srv.get(
            &format!("/api/v1/notifications?change_id={id}&status=dead"),
            &p.mgr,
        )
        .await,
    )
    .await;
    assert_eq!(dead.as_array().unwrap().len(), 2);
    // The retry is in the audit trail.
    let audit = body(srv.get("/api/v1/audit?limit=20", &p.admin).await).await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "notification.retry"
                && e["target"] == format!("notification:{nid}")),
        "{audit}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_and_retry_sqlite() {
    dead_letter_and_retry(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_and_retry_postgres() {
    if postgres_url().is_some() {
        dead_letter_and_retry(Backend::Postgres).await;
    }
}

/// Two instances on one PostgreSQL database: every message goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_send_each_message_once() {
    if postgres_url().is_none() {
        return;
    }
    let smtp = Smtp::start();
    let policies = fast_policies(8);
    let a = start(Backend::Postgres, &smtp.url(), Some(policies.path())).await;
    let b = a
        .second_instance_with(Options {
            smtp_url: Some(smtp.url()),
            policies: policies.path().to_path_buf(),
            ..Options::default()
        })
        .await;
    let p = setup(&a).await;
    // A backlog written by instance a, then filings through both instances.
    let now = Utc::now();
    for _ in 0..150 {
        changeguard::notify::enqueue_other(
            &a.app,
            "digest",
            "digest",
            &json!({"days": 3, "from": "x", "to": "y", "timezone": "Asia/Shanghai", "changes": []}),
            None,
            now,
        )
        .await
        .unwrap()
        .unwrap();
    }
    b.app.notifier.wake();
    let (_, earliest) = notice_today(&a, &p.admin).await;
    for (i, srv) in [&a, &b, &a, &b].iter().enumerate() {
        let r = srv
            .post(
                "/api/v1/changes",
                &p.op,
                change(at(earliest, 600 + 180 * i as i64), 2),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    // Each filing: the notice, the receipt, the first stage's request.
    let expected = 150 + 4 * 3;
    let got = smtp.wait_for(expected).await;
    // Once every row is marked sent no sender holds one (a claimed row is `sending`), so
    // nothing more can arrive: wait for that instead of sleeping.
    let changeguard::db::Db::Postgres(pool, _) = &a.app.db else {
        unreachable!("this test runs on PostgreSQL")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE status <> 'sent'")
            .fetch_one(pool)
            .await
            .unwrap();
        if open == 0 || Instant::now() > deadline {
            assert_eq!(open, 0, "every notice is sent");
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let got_after = smtp.messages();
    assert_eq!(got.len(), expected);
    assert_eq!(got_after.len(), expected, "no duplicates arrive later");
    let mut ids: Vec<String> = got_after
        .iter()
        .map(|(_, raw)| parse(raw).message_id().unwrap().to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "each Message-ID once");
    let sent = body(a.get("/api/v1/notifications?status=sent", &p.mgr).await).await;
    let sent = sent
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| {
            !matches!(
                m["kind"].as_str(),
                Some("calendar_missing" | "role_requested" | "role_decided")
            )
        })
        .count();
    assert_eq!(sent, expected);
    b.stop().await;
    a.stop().await;
}

/// The real binary, killed with SIGKILL after the filing, still sends the notice on restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_filing_then_restart_sends() {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("cg.db").display());
    let policies = fast_policies(100);
    let smtp_port = Smtp::down();
    let spawn = || {
        let port = Smtp::down();
        let child = Command::new(env!("CARGO_BIN_EXE_changeguard"))
            .arg("serve")
            .env_remove("CHANGEGUARD_JWT_SECRET")
            .env("CHANGEGUARD_DATABASE_URL", &db)
            .env("CHANGEGUARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("CHANGEGUARD_POLICIES_DIR", policies.path())
            .env(
                "CHANGEGUARD_TEMPLATES_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("templates"),
            )
            .env("CHANGEGUARD_KEY_DIR", dir.path())
            .env(
                "CHANGEGUARD_BOOTSTRAP_ADMIN_PASSWORD",
                crate::harness::ADMIN_PASSWORD,
            )
            .env(
                "CHANGEGUARD_SMTP_URL",
                format!("smtp://127.0.0.1:{smtp_port}"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        (child, format!("http://127.0.0.1:{port}"))
    };
    let client = reqwest::Client::new();
    let ready = |base: String| {
        let client = client.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if client.get(format!("{base}/healthz")).send().await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            panic!("server did not start");
        }
    };
    // The people, made from the server's console as a bank makes its first ones.
    for (user, role) in [("op.zhang", "tech_operator"), ("mgr.chen", "manager")] {
        use std::io::Write;
        let mut cli = Command::new(env!("CARGO_BIN_EXE_changeguard"))
            .args(["user", "create", "--username", user, "--display-name", user])
            .args([
                "--department",
                "科技部",
                "--email",
                &format!("{user}@bank.example"),
            ])
            .args(["--role", role])
            .env_remove("CHANGEGUARD_JWT_SECRET")
            .env("CHANGEGUARD_DATABASE_URL", &db)
            .env("CHANGEGUARD_POLICIES_DIR", policies.path())
            .env("CHANGEGUARD_KEY_DIR", dir.path())
            .env(
                "CHANGEGUARD_BOOTSTRAP_ADMIN_PASSWORD",
                crate::harness::ADMIN_PASSWORD,
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        cli.stdin
            .take()
            .unwrap()
            .write_all(b"a long enough password\n")
            .unwrap();
        assert!(cli.wait().unwrap().success(), "user create {user}");
    }
    let (mut child, base) = spawn();
    ready(base.clone()).await;
    // Drive the real process over HTTP: a system, one filing.
    let id = remote_filing(&client, &base).await;
    // SIGKILL: no shutdown, no flush.
    child.kill().unwrap();
    child.wait().unwrap();

    let smtp = Smtp::up_on(smtp_port);
    let (mut child, base) = spawn();
    ready(base.clone()).await;
    // The notice and the receipt of the filing (the scheduler may send a digest of its own too).
    let tag = format!("#{id}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let ours = loop {
        let ours: Vec<String> = smtp
            .messages()
            .iter()
            .filter_map(|(_, raw)| parse(raw).subject().map(str::to_owned))
            .filter(|s| s.contains(&tag))
            .collect();
        if ours.len() >= 2 || Instant::now() > deadline {
            break ours;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // At least once; a duplicate would carry the same Message-ID.
    assert!(
        ours.len() >= 2,
        "notice and receipt sent after the restart: {ours:?}"
    );
}

async fn remote_filing(client: &reqwest::Client, base: &str) -> i64 {
    use changeguard::calendar::{NoticeRule, WorkingCalendar, load_dir};
    use chrono::Datelike;
    let post = |path: &str, token: Option<&str>, b: Value| {
        let mut r = client.post(format!("{base}{path}")).json(&b);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let login = |user: &str, pw: &str| {
        let r = post(
            "/api/v1/auth/login",
            None,
            json!({"username": user, "password": pw}),
        );
        async move {
            body(r.await.unwrap()).await["access_token"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let admin = login("admin", crate::harness::ADMIN_PASSWORD).await;
    let r = post(
        "/api/v1/systems",
        Some(&admin),
        json!({"key": "cs-platform", "name": "客户服务平台", "owner_department": "科技部"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let op = login("op.zhang", "a long enough password").await;
    let today = Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    let mut cal =
        WorkingCalendar::new(load_dir(&shipped_policies().join("calendars/cn")).unwrap()).unwrap();
    for year in 2027..=today.year() + 1 {
        if cal.has_year(year) {
            continue;
        }
        let data = crate::workdays::test_year(year);
        let r = client
            .put(format!("{base}/api/v1/working-days/years/{year}"))
            .bearer_auth(&admin)
            .json(&data)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let mut y = data;
        y["year"] = json!(year);
        cal = cal.with_year(serde_json::from_value(y).unwrap()).unwrap();
    }
    let earliest = cal
        .earliest_start(today, &NoticeRule::default())
        .unwrap()
        .earliest_start;
    let r = post("/api/v1/changes", Some(&op), change(at(earliest, 600), 2))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_i64().unwrap()
}

/// The digest and the reminder pick the right changes; each slot runs once; days off are skipped.
async fn schedules_pick_the_right_changes(srv: &TestServer) {
    use changeguard::notify::schedule;
    let p = setup(srv).await;
    let (today, _) = notice_today(srv, &p.admin).await;
    // The earliest start may be a day off (a notice filed on a Tuesday): the first working day
    // from it, so that the digest runs that day.
    let earliest = crate::changes::first_working_day_to_start(srv, &p.admin).await;
    let cal = srv.app.calendar().await.unwrap();
    // A: starts on the earliest day (approved); B: ten working days later (approved);
    // C: on the earliest day but cancelled.
    let mut later = earliest;
    let mut n = 0;
    while n < 10 {
        later = later.succ_opt().unwrap();
        if cal.is_working(later).unwrap() {
            n += 1;
        }
    }
    let mut ids = Vec::new();
    for (start, title) in [(earliest, "A"), (later, "B"), (earliest, "C")] {
        let mut c = change(at(start, 600), 2);
        c["title"] = json!(title);
        c["systems"] = json!(if title == "C" {
            "core-db"
        } else {
            "cs-platform"
        });
        c["systems"] = json!([c["systems"].as_str().unwrap()]);
        let r = srv.post("/api/v1/changes", &p.op, c).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        ids.push(body(r).await["id"].as_i64().unwrap());
    }
    for id in &ids[..2] {
        crate::changes::approve(srv, &p.lead, &p.mgr, *id).await;
    }
    let r = srv
        .post(
            &format!("/api/v1/changes/{}/cancel", ids[2]),
            &p.op,
            json!({"reason": "不做了"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // The digest on the earliest day (a working day) lists A only.
    let (_, rows) = schedule::digest_changes(&srv.app, earliest)
        .await
        .unwrap()
        .unwrap();
    let titles: Vec<_> = rows.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(titles, ["A"]);
    // On the working day before the earliest day, the reminder picks A (approved) only.
    let mut before = earliest.pred_opt().unwrap();
    while !cal.is_working(before).unwrap() {
        before = before.pred_opt().unwrap();
    }
    assert!(before >= today);
    let rows = schedule::reminder_changes(&srv.app, before)
        .await
        .unwrap()
        .unwrap();
    let titles: Vec<_> = rows.iter().map(|r| r.title.as_str()).collect();
    assert_eq!(titles, ["A"]);
    // On a day off there is no digest and no reminder.
    let mut off = today;
    while cal.is_working(off).unwrap() {
        off = off.succ_opt().unwrap();
    }
    assert!(
        schedule::digest_changes(&srv.app, off)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        schedule::reminder_changes(&srv.app, off)
            .await
            .unwrap()
            .is_none()
    );

    // The scheduler at 08:31 of the earliest day: the digest's slot runs once, then never again.
    let t = at(earliest, 8 * 60 + 31);
    let ran = schedule::tick(&srv.app, t).await.unwrap();
    assert!(ran.0.iter().any(|(j, _)| *j == "digest"), "{:?}", ran.0);
    let ran = schedule::tick(&srv.app, t + TimeDelta::seconds(10))
        .await
        .unwrap();
    assert!(!ran.0.iter().any(|(j, _)| *j == "digest"), "{:?}", ran.0);
    let digests = body(srv.get("/api/v1/notifications", &p.mgr).await).await;
    let digests: Vec<_> = digests
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "digest")
        .collect();
    assert_eq!(digests.len(), 1);
    assert_eq!(digests[0]["recipients"], json!(["mgr.chen@bank.example"]));
    // The reminder at 09:00 of the day before: one message to A's assignee.
    let ran = schedule::tick(&srv.app, at(before, 9 * 60 + 1))
        .await
        .unwrap();
    assert!(ran.0.iter().any(|(j, _)| *j == "reminder"), "{:?}", ran.0);
    let list = body(
        srv.get(
            &format!("/api/v1/notifications?change_id={}", ids[0]),
            &p.mgr,
        )
        .await,
    )
    .await;
    let reminders: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["kind"] == "reminder")
        .collect();
    assert_eq!(reminders.len(), 1);
    assert_eq!(reminders[0]["recipients"], json!(["op.zhang@bank.example"]));
    // A missed digest of an earlier day is not sent late.
    let ran = schedule::tick(&srv.app, at(later, 7 * 60)).await.unwrap();
    assert!(!ran.0.iter().any(|(j, _)| *j == "digest"), "{:?}", ran.0);
}

crate::both_backends!(digest_and_reminder, |srv| {
    schedules_pick_the_right_changes(srv).await;
});

/// A disclosure request (Art. 21) reaches the managers and the asset's custodian as a real
/// e-mail with its facts; the plain text carries user text as is, the HTML escapes it.
async fn disclosure_reaches_managers_and_custodian(backend: Backend) {
    let smtp = Smtp::start();
    let srv = start(backend, &smtp.url(), None).await;
    let p = setup(&srv).await;
    let r = srv
        .post(
            "/api/v1/assets",
            &p.admin,
            json!({"name": "核心系统设计文档 <v3>", "kind": "document",
                   "location": "档案室 A-12", "custodian": "op.li"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let asset = body(r).await["id"].as_i64().unwrap();
    let r = srv
        .post(
            &format!("/api/v1/assets/{asset}/disclosures"),
            &p.op,
            json!({"recipient": "审计事务所 / audit firm", "purpose": "年度外部审计"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = smtp.wait_for(1).await;
    assert_eq!(got.len(), 1, "one message to all recipients");
    let (to, raw) = &got[0];
    let mut to = to.clone();
    to.sort();
    assert_eq!(to, vec!["mgr.chen@bank.example", "op.li@bank.example"]);
    let m = parse(raw);
    let subject = m.subject().unwrap();
    assert!(
        subject.starts_with("[变更通知] 保密资料对外提供申请：核心系统设计文档 <v3>"),
        "{subject}"
    );
    let text = m.body_text(0).unwrap();
    for fact in [
        "接收方：审计事务所 / audit firm",
        "用途：年度外部审计",
        "保管人：op.li",
        "申请人：op.zhang 测试 (op.zhang)",
        "档案室 A-12",
        &format!("/console/assets#asset-{asset}"),
    ] {
        assert!(text.contains(fact), "{fact} in {text}");
    }
    let html = m.body_html(0).unwrap();
    assert!(html.contains("核心系统设计文档 &lt;v3&gt;"), "{html}");
    let list = wait_api(&srv, &p.mgr, "?status=sent", |l| {
        l.iter().any(|n| n["kind"] == "disclosure_requested")
    })
    .await;
    assert!(
        list.iter()
            .any(|n| n["kind"] == "disclosure_requested" && n["change_id"].is_null()),
        "{list:?}"
    );
    srv.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disclosure_reaches_managers_and_custodian_sqlite() {
    disclosure_reaches_managers_and_custodian(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disclosure_reaches_managers_and_custodian_postgres() {
    if postgres_url().is_some() {
        disclosure_reaches_managers_and_custodian(Backend::Postgres).await;
    }
}

// A send slower than its lease: another sender re-claims the message and delivers it; the slow
// one's late result (here a failure) must not overwrite `sent`, or the notice would go out a
// third time. `mark_sent` and `mark_failed` are fenced by the lease they took.
crate::both_backends!(
    slow_send_reclaimed_after_its_lease_is_not_marked_twice,
    |srv| {
        use changeguard::db::notify as outbox;
        // Due far ahead, so the server's own sender leaves it to this test.
        let due = Utc::now() + TimeDelta::days(365 * 50);
        let insert = "INSERT INTO outbox (kind, recipients, subject, body_text, body_html, \
                  message_id, status, attempts, next_attempt_at, created_at) \
                  VALUES ('test', '[\"ops@bank.example\"]', 's', 't', 'h', $1, 'pending', 0, $2, $2)";
        let msg = format!("<{}@changeguard.test>", uuid::Uuid::new_v4());
        match &srv.app.db {
            changeguard::db::Db::Sqlite(pool, ..) => {
                sqlx::query(insert)
                    .bind(&msg)
                    .bind(due)
                    .execute(pool)
                    .await
                    .unwrap();
            }
            changeguard::db::Db::Postgres(pool, _) => {
                sqlx::query(insert)
                    .bind(&msg)
                    .bind(due)
                    .execute(pool)
                    .await
                    .unwrap();
            }
        }
        let db = &srv.app.db;
        let first_lease = due + TimeDelta::seconds(60);
        let claimed = outbox::claim_due(db, due, first_lease, 10).await.unwrap();
        let id = claimed
            .iter()
            .find(|r| r.subject == "s")
            .expect("claimed")
            .id;
        // The first sender is stuck; its lease runs out and a second sender takes the message.
        let later = first_lease + TimeDelta::seconds(1);
        let second_lease = later + TimeDelta::seconds(60);
        let again = outbox::claim_due(db, later, second_lease, 10)
            .await
            .unwrap();
        assert!(
            again.iter().any(|r| r.id == id),
            "re-claimed after the lease"
        );
        assert!(
            outbox::claim_due(db, later, second_lease, 10)
                .await
                .unwrap()
                .is_empty(),
            "a live lease is not claimed again"
        );
        outbox::mark_sent(db, id, second_lease, later)
            .await
            .unwrap();
        // The slow sender comes back: neither its failure nor its success changes the row.
        outbox::mark_failed(db, id, first_lease, false, "timeout", later)
            .await
            .unwrap();
        outbox::mark_sent(db, id, first_lease, later + TimeDelta::seconds(5))
            .await
            .unwrap();
        let row = outbox::get(db, id).await.unwrap();
        assert_eq!(row.status, "sent");
        assert_eq!(row.attempts, 2);
        assert_eq!(row.last_error, None);
        // Nor does a second result of the sender that delivered it.
        outbox::mark_failed(db, id, second_lease, true, "late", later)
            .await
            .unwrap();
        assert_eq!(outbox::get(db, id).await.unwrap().status, "sent");
        assert!(
            outbox::claim_due(db, later + TimeDelta::days(1), second_lease, 10)
                .await
                .unwrap()
                .iter()
                .all(|r| r.id != id),
            "a sent message is never claimed again"
        );
    }
);
