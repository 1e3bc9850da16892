//! Bad input gets a problem document, never a 500; operations endpoints; headers.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{body, problem};

crate::both_backends!(bad_requests_are_problems, |srv| {
    let admin = srv.admin().await;
    let post = |body: &'static str, ct: &'static str| {
        srv.client
            .post(srv.url("/api/v1/users"))
            .bearer_auth(&admin)
            .header("content-type", ct)
            .body(body)
            .send()
    };
    problem(
        post("{not json", "application/json").await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_request",
    )
    .await;
    problem(
        post(r#"{"username": 5}"#, "application/json")
            .await
            .unwrap(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    problem(
        post("{}", "text/plain").await.unwrap(),
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let huge = format!("{{\"username\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    // A client of its own: the server closes a connection whose body it refused to read.
    let r = reqwest::Client::new()
        .post(srv.url("/api/v1/users"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    problem(
        srv.get("/api/v1/users/abc", &admin).await,
        StatusCode::BAD_REQUEST,
        "invalid_path",
    )
    .await;
    problem(
        srv.get("/api/v1/users/424242", &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        srv.get("/api/v1/nothing-here", &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    problem(
        srv.call(Method::PUT, "/api/v1/me", Some(&admin), None)
            .await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
    problem(
        srv.get("/api/v1/audit?limit=abc", &admin).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
    let r = srv.post("/api/v1/users", &admin, json!({"username": "Bad Name!", "display_name": "x", "department": "科技部", "email": "b@bank.example", "password": "a long enough password"})).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_username").await;
    let r = srv.post("/api/v1/users", &admin, json!({"username": "ok.name", "display_name": "x", "department": "科技部", "email": "not-an-email", "password": "a long enough password"})).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_email").await;
    srv.user_with(&admin, "dup.user", &[]).await;
    let r = srv.post("/api/v1/users", &admin, json!({"username": "dup.user", "display_name": "x", "department": "科技部", "email": "d@bank.example", "password": "a long enough password"})).await;
    problem(r, StatusCode::CONFLICT, "username_taken").await;
    let r = srv
        .post("/api/v1/users/1/roles", &admin, json!({"role": "wizard"}))
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_role").await;
});

crate::both_backends!(operations_endpoints_and_headers, |srv| {
    let r = srv.client.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for h in [
        "x-request-id",
        "x-content-type-options",
        "x-frame-options",
        "content-security-policy",
        "referrer-policy",
    ] {
        assert!(r.headers().contains_key(h), "missing {h}");
    }
    let r = srv.client.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(body(r).await["status"], "ready");
    // A request id sent by the client is kept.
    let r = srv
        .client
        .get(srv.url("/healthz"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    // One that would forge log fields, or a huge one, is replaced by a fresh id.
    for forged in ["a status=200 actor=admin".to_string(), "x".repeat(129)] {
        let r = srv
            .client
            .get(srv.url("/healthz"))
            .header("x-request-id", &forged)
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap();
        assert_ne!(id, forged);
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    let admin = srv.admin().await;
    let text = srv.get("/metrics", &admin).await.text().await.unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    let doc = body(
        srv.client
            .get(srv.url("/api/v1/openapi.json"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert!(doc["paths"]["/api/v1/users"]["post"]["security"][0]["bearer"][0] == "user.manage");
    let r = srv.client.get(srv.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("swagger"));
});

crate::both_backends!(
    metrics_answer_a_bearer_of_ops_metrics_or_on_their_own_address,
    options = crate::harness::Options {
        metrics_listen: true,
        ..Default::default()
    },
    |srv| {
        // Not public on the service's address: no token 401, a person without the permission 403.
        let r = srv.client.get(srv.url("/metrics")).send().await.unwrap();
        problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
        let admin = srv.admin().await;
        let (_, op) = srv
            .user_with(&admin, "op.metrics", &["tech_operator"])
            .await;
        problem(
            srv.get("/metrics", &op).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        // A Prometheus with a service account of the monitoring role.
        let (_, scraper) = crate::gate::machine(srv, &admin, "prometheus", "monitoring").await;
        let r = srv.get("/metrics", &scraper).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.text().await.unwrap().contains("http_requests_total"));
        // ... which may do nothing else.
        problem(
            srv.get("/api/v1/users", &scraper).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        // The metrics address serves /metrics without a token, and nothing else.
        let base = srv.metrics_base.clone().expect("metrics_listen is on");
        let r = srv
            .client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.text().await.unwrap().contains("http_requests_total"));
        for path in [
            "/api/v1/users",
            "/healthz",
            "/console",
            "/api/v1/openapi.json",
        ] {
            let r = srv
                .client
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap();
            problem(r, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
);

// A secret typed into the wrong field of a refused body never comes back in the answer nor
// reaches the audit trail: serde's message loses the value, keeps the field and what it expected.
crate::both_backends!(
    body_errors_do_not_quote_values_into_the_audit_trail,
    |srv| {
        let admin = srv.admin().await;
        let base = json!({"name": "核心库 / core db", "system": "core-db", "account": "dba",
                      "kind": "password", "secret": "s", "rotation_days": 90});
        for (field, value, kept) in [
            (
                "rotation_days",
                json!("Hunter2-days-secret"),
                "rotation_days",
            ),
            ("secret", json!(424_242_424_242_i64), "secret"),
        ] {
            let mut b = base.clone();
            b[field] = value;
            let doc = problem(
                srv.post("/api/v1/credentials", &admin, b).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
            )
            .await;
            let detail = doc["detail"].as_str().unwrap();
            assert!(detail.contains(kept), "{detail}");
            assert!(
                !detail.contains("Hunter2") && !detail.contains("424242424242"),
                "{detail}"
            );
        }
        let trail = body(srv.get("/api/v1/audit?limit=50", &admin).await).await;
        let refused: Vec<&serde_json::Value> = trail
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["code"] == "invalid_body")
            .collect();
        assert_eq!(refused.len(), 2, "{trail}");
        let text = trail.to_string();
        assert!(
            !text.contains("Hunter2") && !text.contains("424242424242"),
            "{text}"
        );
    }
);
