//! Outbound webhooks delivered to a real HTTP receiver on loopback: signed JSON, the WeCom and
//! DingTalk robot shapes, two instances delivering each event once, a receiver that is down
//! (retries, then a dead letter), redirects to another host not followed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode as AxStatus, Uri};
use base64::Engine;
use chrono::TimeDelta;
use hmac::{Hmac, Mac};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::changes::{approve, at, change, notice_today, setup};
use crate::harness::{TestServer, body, problem};

/// What the receiver got: (path and query, headers, body).
type Got = Arc<Mutex<Vec<(String, HeaderMap, String)>>>;

/// A receiver on 127.0.0.1:0 that records every request and answers 200; `/moved` answers a
/// redirect to another host (127.0.0.2).
async fn receiver() -> (String, Got) {
    let got: Got = Arc::default();
    let store = got.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: String| {
        let store = store.clone();
        async move {
            use axum::response::IntoResponse;
            let path = uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let moved = path.starts_with("/moved");
            let refuse = path.starts_with("/refuse");
            store.lock().unwrap().push((path, headers, body));
            if refuse {
                // A robot refusing (a wrong key) still answers 200.
                let no = json!({"errcode": 93000, "errmsg": "invalid webhook url"});
                return (AxStatus::OK, axum::Json(no)).into_response();
            }
            if moved {
                let to = format!("http://127.0.0.2:{port}/elsewhere");
                (AxStatus::TEMPORARY_REDIRECT, [("location", to)]).into_response()
            } else {
                // What the robots answer for a delivered message (JSON receivers ignore it).
                (
                    AxStatus::OK,
                    axum::Json(json!({"errcode": 0, "errmsg": "ok"})),
                )
                    .into_response()
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://127.0.0.1:{port}"), got)
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

async fn subscribe(srv: &TestServer, admin: &str, b: Value) -> Value {
    let r = srv.post("/api/v1/webhooks", admin, b).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await
}

/// The webhook rows of the outbox.
async fn deliveries(srv: &TestServer, admin: &str) -> Vec<Value> {
    let all = body(srv.get("/api/v1/notifications", admin).await).await;
    all.as_array()
        .unwrap()
        .iter()
        .filter(|n| n["channel"] == "webhook")
        .cloned()
        .collect()
}

crate::both_backends!(webhooks_are_signed_and_delivered_once, |srv| {
    let p = setup(srv).await;
    let (url, got) = receiver().await;
    let secret = "whsec-正式-9f8e7d";
    let json_hook = subscribe(
        srv,
        &p.admin,
        json!({"url": format!("{url}/hooks/json"), "events": ["filed", "approved"], "secret": secret}),
    )
    .await;
    assert_eq!(json_hook["has_secret"], true);
    assert_eq!(json_hook["format"], "json");
    subscribe(
        srv,
        &p.admin,
        json!({"url": format!("{url}/cgi-bin/webhook/send?key=wecom-key"), "events": ["approved"], "format": "wecom"}),
    )
    .await;
    subscribe(
        srv,
        &p.admin,
        json!({"url": format!("{url}/robot/send?access_token=ding-token"), "events": ["*"],
               "format": "dingtalk", "secret": "SECding"}),
    )
    .await;
    let listed = body(srv.get("/api/v1/webhooks", &p.admin).await).await;
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert!(!listed.to_string().contains(secret));
    // A robot's key in its URL is masked in listings.
    let shown = listed.to_string();
    assert!(
        !shown.contains("wecom-key") && !shown.contains("ding-token"),
        "{shown}"
    );
    // A robot's key in its URL is masked in listings.
    assert!(
        !listed.to_string().contains("wecom-key") && !listed.to_string().contains("ding-token")
    );

    // A second instance delivers from the same outbox.
    let other = srv.second_instance().await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let id = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 600), 2))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    approve(&other, &p.lead, &p.mgr, id).await;
    // filed: json + dingtalk; each stage asked: dingtalk; approved: json + wecom + dingtalk.
    let mut waited = 0;
    loop {
        let rows = deliveries(srv, &p.admin).await;
        if rows.len() == 7 && rows.iter().all(|r| r["status"] == "sent") {
            break;
        }
        waited += 1;
        assert!(waited < 200, "not all delivered: {rows:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = got.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        7,
        "each event once: {:#?}",
        got.iter().map(|g| &g.0).collect::<Vec<_>>()
    );

    // Signed JSON.
    let json_posts: Vec<_> = got.iter().filter(|g| g.0 == "/hooks/json").collect();
    assert_eq!(json_posts.len(), 2);
    for (_, headers, b) in &json_posts {
        let ts = headers["x-changeguard-timestamp"].to_str().unwrap();
        let sig = headers["x-changeguard-signature"].to_str().unwrap();
        let want = format!(
            "sha256={}",
            hex::encode(hmac(secret.as_bytes(), format!("{ts}.{b}").as_bytes()))
        );
        assert_eq!(sig, want);
        let v: Value = serde_json::from_str(b).unwrap();
        assert_eq!(v["change"]["id"], id);
        assert!(v["id"].is_string());
        assert_eq!(headers["x-changeguard-delivery"].to_str().unwrap(), v["id"]);
    }
    let events: Vec<String> = json_posts
        .iter()
        .map(|g| {
            serde_json::from_str::<Value>(&g.2).unwrap()["event"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(events.contains(&"filed".to_string()) && events.contains(&"approved".to_string()));

    // WeCom markdown.
    let wecom: Vec<_> = got
        .iter()
        .filter(|g| g.0.starts_with("/cgi-bin/webhook/send"))
        .collect();
    assert_eq!(wecom.len(), 1);
    let w: Value = serde_json::from_str(&wecom[0].2).unwrap();
    assert_eq!(w["msgtype"], "markdown");
    assert!(
        w["markdown"]["content"]
            .as_str()
            .unwrap()
            .contains(&format!("#{id}"))
    );

    // DingTalk markdown on the signed URL.
    let ding: Vec<_> = got
        .iter()
        .filter(|g| g.0.starts_with("/robot/send"))
        .collect();
    // filed, the two stages asked, approved.
    assert_eq!(ding.len(), 4);
    for (path, _, b) in &ding {
        let q: std::collections::HashMap<String, String> = url_query(path);
        assert_eq!(q["access_token"], "ding-token");
        let ts = &q["timestamp"];
        let want = base64::engine::general_purpose::STANDARD
            .encode(hmac(b"SECding", format!("{ts}\nSECding").as_bytes()));
        assert_eq!(q["sign"], want);
        let d: Value = serde_json::from_str(b).unwrap();
        assert_eq!(d["msgtype"], "markdown");
        assert!(
            d["markdown"]["title"]
                .as_str()
                .unwrap()
                .contains(&format!("#{id}"))
        );
    }

    // Secrets appear in no audit entry; the robot's token neither (the host only).
    let trail = changeguard::db::audit::list(&srv.app.db, 500, None)
        .await
        .unwrap();
    for e in &trail {
        assert!(!e.details.contains(secret) && !e.details.contains("SECding"));
        assert!(!e.details.contains("ding-token"), "{}", e.details);
    }
    assert!(trail.iter().any(|e| e.action == "webhook.create"));
    other.stop().await;
});

fn url_query(path: &str) -> std::collections::HashMap<String, String> {
    let q = path.split_once('?').map(|(_, q)| q).unwrap_or_default();
    serde_urlencoded::from_str(q).unwrap()
}

crate::both_backends!(a_receiver_that_is_down_ends_in_the_dead_letters, |srv| {
    let p = setup(srv).await;
    // Bad subscriptions are refused.
    for (b, code) in [
        (
            json!({"url": "ftp://x.example/", "events": ["*"]}),
            "invalid_url",
        ),
        (
            json!({"url": "http://user:pw@x.example/", "events": ["*"]}),
            "invalid_url",
        ),
        (
            json!({"url": "http://x.example/", "events": ["nonsense"]}),
            "invalid_events",
        ),
        (
            json!({"url": "http://x.example/", "events": ["*"], "format": "slack"}),
            "invalid_format",
        ),
    ] {
        let r = srv.post("/api/v1/webhooks", &p.admin, b).await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, code).await;
    }
    assert_eq!(
        srv.post(
            "/api/v1/webhooks",
            &p.op,
            json!({"url": "http://x.example/", "events": ["*"]})
        )
        .await
        .status(),
        StatusCode::FORBIDDEN
    );

    // Nothing listens on this port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = subscribe(
        srv,
        &p.admin,
        json!({"url": format!("http://127.0.0.1:{closed}/hook?token=tok-123"), "events": ["filed"]}),
    )
    .await;
    // A receiver that redirects to another host is not followed.
    let (url, got) = receiver().await;
    subscribe(
        srv,
        &p.admin,
        json!({"url": format!("{url}/moved"), "events": ["filed"]}),
    )
    .await;
    // A robot that refuses with 200 and an errcode is not a delivery.
    let refusing = subscribe(
        srv,
        &p.admin,
        json!({"url": format!("{url}/refuse?key=k"), "events": ["filed"], "format": "wecom"}),
    )
    .await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let r = srv
        .post("/api/v1/changes", &p.op, change(at(earliest, 600), 2))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);

    let max = srv.app.policies.notifications.max_attempts as i64;
    // Retry after retry (the instance's own sender may hold a row meanwhile: go on until every
    // delivery is dead).
    for _ in 0..(max * 6) {
        changeguard::notify::worker::run_once(&srv.app)
            .await
            .unwrap();
        srv.advance(TimeDelta::hours(2));
        let rows = changeguard::db::notify::list(&srv.app.db, None, Some("dead"), 100)
            .await
            .unwrap();
        if rows.iter().filter(|r| r.channel == "webhook").count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // (Hours passed: the admin signs in again.)
    let admin = srv.admin().await;
    let rows = deliveries(srv, &admin).await;
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert_eq!(r["status"], "dead", "{r}");
        assert_eq!(r["attempts"].as_i64().unwrap(), max);
        let err = r["last_error"].as_str().unwrap();
        assert!(!err.contains("tok-123"), "no token in the error: {err}");
    }
    let to_down = rows.iter().find(|r| r["webhook_id"] == down["id"]).unwrap();
    assert!(
        to_down["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot connect")
    );
    let refused = rows
        .iter()
        .find(|r| r["webhook_id"] == refusing["id"])
        .unwrap();
    assert!(
        refused["last_error"]
            .as_str()
            .unwrap()
            .contains("errcode 93000"),
        "{refused}"
    );
    let moved = rows
        .iter()
        .find(|r| r["webhook_id"] != down["id"] && r["webhook_id"] != refusing["id"])
        .unwrap();
    assert!(
        moved["last_error"].as_str().unwrap().contains("307"),
        "{moved}"
    );
    assert!(
        got.lock()
            .unwrap()
            .iter()
            .all(|g| g.0.starts_with("/moved") || g.0.starts_with("/refuse")),
        "the other host was never asked"
    );

    // The dead letter goes back to the queue with the retry API, like an e-mail's.
    let nid = to_down["id"].as_i64().unwrap();
    let r = srv
        .call(
            Method::POST,
            &format!("/api/v1/notifications/{nid}/retry"),
            Some(&admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "pending");
    // Deleting the subscription ends its deliveries.
    let r = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/webhooks/{}", down["id"]),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    changeguard::notify::worker::run_once(&srv.app)
        .await
        .unwrap();
    let rows = deliveries(srv, &admin).await;
    let again = rows.iter().find(|r| r["id"] == nid).unwrap();
    assert!(
        again["last_error"].as_str().unwrap().contains("deleted"),
        "{again}"
    );
});
