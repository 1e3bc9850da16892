//! `cargo bench --bench notify`: a backlog of 10,000 notices delivered through the outbox worker
//! to a local SMTP server (mailin-embedded), against lettre sending the same messages directly
//! (same concurrency, same pooled transport), in the same run. SQLite in a temporary folder.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use changeguard::Server;
use changeguard::config::Settings;
use changeguard::db::notify as outbox_db;
use changeguard::notify::worker;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use secrecy::SecretString;
use serde_json::json;

const BACKLOG: usize = 10_000;

#[derive(Clone, Default)]
struct Count(Arc<AtomicUsize>);

impl mailin_embedded::Handler for Count {
    fn data_end(&mut self) -> mailin_embedded::Response {
        self.0.fetch_add(1, Ordering::Relaxed);
        mailin_embedded::response::OK
    }
}

fn smtp() -> (u16, Count) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Count::default();
    let mut server = mailin_embedded::Server::new(count.clone());
    // A thread per connection: both pools keep connections open.
    server.with_num_threads(64).with_tcp_listener(l);
    std::thread::spawn(move || {
        let _ = server.serve();
    });
    (port, count)
}

#[tokio::main]
async fn main() {
    let (port, received) = smtp();
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let settings = Settings {
        database_url: format!("sqlite:{}", dir.path().join("bench.db").display()),
        policies_dir: root.join("policies"),
        key_dir: Some(dir.path().to_path_buf()),
        bootstrap_admin_password: Some(SecretString::from("bench bootstrap secret 42")),
        smtp_url: Some(SecretString::from(format!("smtp://127.0.0.1:{port}"))),
        outbox_dir: dir.path().join("outbox"),
        ..Settings::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Server::build(settings, listener).await.unwrap().app;
    // Recipients of the digest: one manager is enough (the admin's address stands in).
    let now = app.now();
    let t = Instant::now();
    for _ in 0..BACKLOG {
        changeguard::notify::enqueue_other(
            &app,
            "calendar_missing",
            "calendar_missing",
            &json!({"year": 2099}),
            None,
            now,
        )
        .await
        .unwrap()
        .expect("admin has an address");
    }
    let enqueue = t.elapsed();
    let rows = outbox_db::list(&app.db, None, Some("pending"), BACKLOG as i64)
        .await
        .unwrap();
    assert_eq!(rows.len(), BACKLOG);

    // 1. Through the outbox worker (claim with lease, send, mark sent), rounds of `batch`.
    let t = Instant::now();
    let mut claimed = 0;
    loop {
        let n = worker::run_once(&app).await.unwrap();
        if n == 0 {
            break;
        }
        claimed += n;
    }
    let outbox_secs = t.elapsed().as_secs_f64();
    assert_eq!(claimed, BACKLOG);
    let sent = outbox_db::list(&app.db, None, Some("sent"), BACKLOG as i64)
        .await
        .unwrap();
    assert_eq!(sent.len(), BACKLOG, "all marked sent");
    assert_eq!(received.0.load(Ordering::Relaxed), BACKLOG);

    // 2. lettre directly: the same messages, same pool, same concurrency (batch), no database.
    let batch = app.policies.notifications.batch as usize;
    let transport =
        AsyncSmtpTransport::<Tokio1Executor>::from_url(&format!("smtp://127.0.0.1:{port}"))
            .unwrap()
            .build();
    let messages: Vec<_> = rows
        .iter()
        .map(|r| worker::build_message(&app.notifier.from, r).unwrap())
        .collect();
    let t = Instant::now();
    for chunk in messages.chunks(batch) {
        let mut set = tokio::task::JoinSet::new();
        for m in chunk {
            let transport = transport.clone();
            let m = m.clone();
            set.spawn(async move { transport.send(m).await.map(|_| ()) });
        }
        while let Some(r) = set.join_next().await {
            r.unwrap().unwrap();
        }
    }
    let direct_secs = t.elapsed().as_secs_f64();
    assert_eq!(received.0.load(Ordering::Relaxed), 2 * BACKLOG);

    println!(
        "backlog: {BACKLOG} messages (enqueued in {:.2?}, one transaction each)",
        enqueue
    );
    println!(
        "outbox worker -> SMTP: {:.2} s, {:.0} msg/s",
        outbox_secs,
        BACKLOG as f64 / outbox_secs
    );
    println!(
        "lettre direct -> SMTP: {:.2} s, {:.0} msg/s",
        direct_secs,
        BACKLOG as f64 / direct_secs
    );
    println!("outbox / direct: {:.2}", direct_secs / outbox_secs);
    app.db.close().await;
}
