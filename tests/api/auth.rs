//! Login, sessions and attacks on tokens.

use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, JWT_SECRET_HEX, TestServer, USER_PASSWORD, body, problem};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn sign(alg: Algorithm, key: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(key)).unwrap()
}

fn secret() -> Vec<u8> {
    hex::decode(JWT_SECRET_HEX).unwrap()
}

/// The claims of a real token, to tamper with.
fn claims_of(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

async fn me_status(srv: &TestServer, token: &str) -> StatusCode {
    srv.get("/api/v1/me", token).await.status()
}

crate::both_backends!(login_me_logout, |srv| {
    let r = srv.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let b = body(r).await;
    assert_eq!(b["token_type"], "Bearer");
    assert!(b["expires_in"].as_i64().unwrap() > 0);
    let token = b["access_token"].as_str().unwrap().to_string();

    let me = body(srv.get("/api/v1/me", &token).await).await;
    assert_eq!(me["username"], "admin");
    assert_eq!(me["roles"], json!(["admin"]));
    assert!(
        me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("user.manage"))
    );
    assert!(
        !me["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("change.approve"))
    );
    assert!(me.get("password_hash").is_none());

    let r = srv
        .call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        srv.get("/api/v1/me", &token).await,
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
    )
    .await;
});

crate::both_backends!(unknown_user_and_wrong_password_look_the_same, |srv| {
    // The fastest of three tries each (three stay under the login delay): one try can be
    // stretched by whatever else the machine runs.
    let mut unknown = std::time::Duration::MAX;
    let mut wrong = std::time::Duration::MAX;
    for _ in 0..3 {
        let t0 = Instant::now();
        let a = srv.login("nobody-here", "some long password").await;
        unknown = unknown.min(t0.elapsed());
        let t1 = Instant::now();
        let b = srv.login("admin", "a wrong long password").await;
        wrong = wrong.min(t1.elapsed());
        let a = problem(a, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        let b = problem(b, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
        assert_eq!(a, b, "same document for unknown user and wrong password");
    }
    // Both verify an argon2 hash: neither answers in a fraction of the other's time.
    let (fast, slow) = if unknown < wrong {
        (unknown, wrong)
    } else {
        (wrong, unknown)
    };
    assert!(
        slow < fast * 4 + std::time::Duration::from_millis(50),
        "{unknown:?} vs {wrong:?}"
    );
});

crate::both_backends!(failures_slow_down_but_never_lock_out, |srv| {
    for _ in 0..3 {
        problem(
            srv.login("admin", "wrong password again").await,
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
        )
        .await;
    }
    let r = srv.login("admin", ADMIN_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    problem(r, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    srv.advance(chrono::TimeDelta::seconds(retry as i64 + 1));
    // After the delay the right password works, and resets the counter.
    assert_eq!(
        srv.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::OK
    );
    problem(
        srv.login("admin", "wrong password again").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
});

crate::both_backends!(forged_and_broken_tokens_are_refused, |srv| {
    let good = srv.admin().await;
    assert_eq!(me_status(srv, &good).await, StatusCode::OK);
    let base = claims_of(&good);
    let key = secret();

    // Re-signing the genuine claims with the right key works: the checks below are not vacuous.
    assert_eq!(
        me_status(srv, &sign(Algorithm::HS256, &key, &base)).await,
        StatusCode::OK
    );

    let mut forged: Vec<(&str, String)> = vec![
        (
            "another key",
            sign(
                Algorithm::HS256,
                b"another key of thirty-two bytes!!",
                &base,
            ),
        ),
        (
            "algorithm swap to HS512",
            sign(Algorithm::HS512, &key, &base),
        ),
        (
            "algorithm swap to HS384",
            sign(Algorithm::HS384, &key, &base),
        ),
    ];
    {
        use base64::Engine;
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = e.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = e.encode(base.to_string());
        forged.push(("alg none", format!("{header}.{payload}.")));
        // Tampered payload, original signature.
        let mut tampered = base.clone();
        tampered["sub"] = json!("999");
        let sig = good.split('.').nth(2).unwrap();
        let head = good.split('.').next().unwrap();
        forged.push((
            "tampered payload",
            format!("{head}.{}.{sig}", e.encode(tampered.to_string())),
        ));
    }
    type Tamper = Box<dyn Fn(&mut Value)>;
    let variants: Vec<(&str, Tamper)> = vec![
        (
            "missing aud",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("aud");
            }),
        ),
        (
            "wrong aud",
            Box::new(|c: &mut Value| c["aud"] = json!("another-service")),
        ),
        (
            "missing iss",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("iss");
            }),
        ),
        (
            "wrong iss",
            Box::new(|c: &mut Value| c["iss"] = json!("evil")),
        ),
        (
            "string exp",
            Box::new(|c: &mut Value| c["exp"] = json!((now() + 600).to_string())),
        ),
        (
            "expired",
            Box::new(|c: &mut Value| c["exp"] = json!(now() - 120)),
        ),
        (
            "not yet valid",
            Box::new(|c: &mut Value| c["nbf"] = json!(now() + 600)),
        ),
        (
            "missing nbf",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("nbf");
            }),
        ),
        (
            "missing jti",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("jti");
            }),
        ),
        (
            "missing sub",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("sub");
            }),
        ),
        (
            "missing exp",
            Box::new(|c: &mut Value| {
                c.as_object_mut().unwrap().remove("exp");
            }),
        ),
        (
            "other user's id",
            Box::new(|c: &mut Value| c["sub"] = json!("999")),
        ),
        (
            "unknown session",
            Box::new(|c: &mut Value| c["jti"] = json!("no-such-session")),
        ),
    ];
    for (name, change) in &variants {
        let mut c = base.clone();
        change(&mut c);
        forged.push((name, sign(Algorithm::HS256, &key, &c)));
    }
    for (name, token) in forged {
        let r = srv.get("/api/v1/me", &token).await;
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{name} must be refused"
        );
    }
    // Garbage and the wrong scheme.
    let r = srv
        .client
        .get(srv.url("/api/v1/me"))
        .header("authorization", "Basic YWRtaW46eA==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = srv
        .client
        .get(srv.url("/api/v1/me"))
        .header("authorization", "Bearer not.a.jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
});

crate::both_backends!(disable_and_password_change_end_sessions, |srv| {
    let admin = srv.admin().await;
    let (id, token) = srv.user_with(&admin, "op.zhang", &["tech_operator"]).await;
    assert_eq!(me_status(srv, &token).await, StatusCode::OK);

    // A password change ends every session of the user.
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({"password": "a brand new password"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(me_status(srv, &token).await, StatusCode::UNAUTHORIZED);
    problem(
        srv.login("op.zhang", "a long enough password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let token = srv.token("op.zhang", "a brand new password").await;

    // Disabling ends them too, and the user cannot sign in any more (same answer as a wrong password).
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(body(r).await["active"], false);
    assert_eq!(me_status(srv, &token).await, StatusCode::UNAUTHORIZED);
    problem(
        srv.login("op.zhang", "a brand new password").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
});

/// Asks `path` until it answers `want` (at most 5 s); how long that took.
async fn answers_within(srv: &TestServer, path: &str, token: &str, want: StatusCode) -> Duration {
    let start = Instant::now();
    loop {
        let got = srv.get(path, token).await.status();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{path}: still {got} after 5 s, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until `srv` answers repeated requests from its session cache (its database watcher
/// listens), so the checks that follow exercise the cache, not a fresh read.
async fn cache_in_use(srv: &TestServer, token: &str) {
    let start = Instant::now();
    loop {
        let before = srv.app.sessions.hits();
        assert_eq!(me_status(srv, token).await, StatusCode::OK);
        assert_eq!(me_status(srv, token).await, StatusCode::OK);
        if srv.app.sessions.hits() > before {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the session cache is never used"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const CHECK: &str = "/api/v1/authz/check?permission=change.create";

async fn may_file(srv: &TestServer, token: &str) -> bool {
    body(srv.get(CHECK, token).await).await["allowed"] == true
}

crate::both_backends!(cached_sessions_end_with_what_ends_them, |srv| {
    let admin = srv.admin().await;
    let (id, token) = srv.user_with(&admin, "op.cache", &["tech_operator"]).await;
    let other = srv.second_instance().await;
    cache_in_use(srv, &token).await;
    cache_in_use(&other, &token).await;
    assert!(may_file(srv, &token).await && may_file(&other, &token).await);

    // A revoked role: the very next request on the instance that revoked it; the other
    // instance as soon as the database tells it.
    let r = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{id}/roles/tech_operator"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(!may_file(srv, &token).await, "next request, same instance");
    let start = Instant::now();
    while may_file(&other, &token).await {
        assert!(start.elapsed() < Duration::from_secs(5), "other instance");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let revoke_lag = start.elapsed();

    // Logout on the other instance.
    let r = other
        .call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(me_status(&other, &token).await, StatusCode::UNAUTHORIZED);
    let logout_lag = answers_within(srv, "/api/v1/me", &token, StatusCode::UNAUTHORIZED).await;

    // Somebody with database access disables the user behind the service's back.
    let token = srv.token("op.cache", USER_PASSWORD).await;
    cache_in_use(srv, &token).await;
    cache_in_use(&other, &token).await;
    srv.sql(&["UPDATE users SET active = FALSE WHERE username = 'op.cache'"])
        .await
        .unwrap();
    let sql_lag = answers_within(srv, "/api/v1/me", &token, StatusCode::UNAUTHORIZED).await;
    let sql_lag_other =
        answers_within(&other, "/api/v1/me", &token, StatusCode::UNAUTHORIZED).await;
    eprintln!(
        "{:?}: seen by the other instance after: revoke {revoke_lag:?}, logout {logout_lag:?}; \
         direct SQL seen after {sql_lag:?} / {sql_lag_other:?}",
        srv.backend
    );
    other.stop().await;
});

crate::both_backends!(weak_passwords_are_refused, |srv| {
    let admin = srv.admin().await;
    for pw in [
        "short",
        "password1234",
        "aaaaaaaaaaaaaaaa",
        "wang.wei-is-my-name",
    ] {
        let r = srv
            .post("/api/v1/users", &admin, json!({"username": "wang.wei", "display_name": "王伟", "department": "科技部", "email": "w@bank.example", "password": pw}))
            .await;
        problem(r, StatusCode::UNPROCESSABLE_ENTITY, "weak_password").await;
    }
    // Nothing was created by the refusals.
    let users = body(srv.get("/api/v1/users", &admin).await).await;
    assert_eq!(users.as_array().unwrap().len(), 1);
});

crate::both_backends!(parallel_guesses_do_not_slip_past_the_delay, |srv| {
    let _ = srv.admin().await;
    // Eight wrong guesses at once: each attempt is counted before its password is checked, so
    // only the three free ones reach the hash; the rest wait.
    let attempts = (0..8).map(|_| srv.login("admin", "a wrong guess at once"));
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|r| r.status())
        .collect();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let delayed = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((refused, delayed), (3, 5), "{statuses:?}");
});

// 127.0.0.0/8 is loopback on Linux: each client below connects from an address of its own, as
// a guesser spreading attempts over many machines would.
crate::both_backends!(guesses_spread_over_addresses_slow_the_account_down, |srv| {
    let attempt_from = |n: u8| {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, n]))
            .build()
            .unwrap();
        let url = srv.url("/api/v1/auth/login");
        async move {
            client
                .post(url)
                .json(&json!({"username": "admin", "password": "a guess from afar"}))
                .send()
                .await
                .unwrap()
        }
    };
    // The owner signs in from their usual address (the harness's client, 127.0.0.1).
    let _ = srv.admin().await;
    // Nine failures from nine addresses: each address is within its own three free ones, and
    // so is the account.
    for n in 2..11 {
        let r = attempt_from(n).await;
        problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    // Two more at once from two more addresses: the tenth failure of the account starts its
    // delay, so the other one waits — whichever comes second.
    let (a, b) = tokio::join!(attempt_from(11), attempt_from(12));
    let mut statuses = [a.status(), b.status()];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS]
    );
    let waited = if a.status() == StatusCode::TOO_MANY_REQUESTS {
        a
    } else {
        b
    };
    let retry: u64 = waited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    // The owner, at their usual address, is not kept out by guesses from elsewhere, and their
    // success does not lift the delay for the others.
    assert_eq!(
        srv.login("admin", ADMIN_PASSWORD).await.status(),
        StatusCode::OK
    );
    let r = attempt_from(13).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A slow-down, not a lock-out: after the delay a new address may try again.
    srv.advance(chrono::TimeDelta::seconds(retry as i64 + 1));
    let r = attempt_from(14).await;
    problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
});

// The scheduler forgets throttle keys idle for a day and addresses unused for 90 days; the
// others stay.
crate::both_backends!(stale_login_records_are_pruned, |srv| {
    use changeguard::db::users as users_db;
    let db = &srv.app.db;
    let now = chrono::Utc::now();
    let long_ago = now - chrono::TimeDelta::days(120);
    let mut tx = changeguard::deed::Deed::open(&srv.app).await.unwrap();
    users_db::set_throttle(&mut tx, "stale|key", 5, long_ago)
        .await
        .unwrap();
    users_db::set_throttle(&mut tx, "fresh|key", 5, now)
        .await
        .unwrap();
    tx.commit_bookkeeping(changeguard::deed::Bookkeeping::LoginThrottle)
        .await
        .unwrap();
    users_db::remember_address(db, "op.old", "10.0.0.1", long_ago)
        .await
        .unwrap();
    users_db::remember_address(db, "op.new", "10.0.0.2", now)
        .await
        .unwrap();

    // A minute slot ahead: the server's own scheduler may have claimed the current one already.
    let ran = changeguard::notify::schedule::tick(&srv.app, now + chrono::TimeDelta::minutes(2))
        .await
        .unwrap();
    assert!(ran.0.iter().any(|(job, _)| *job == "expiry"));

    let mut tx = db.begin().await.unwrap();
    assert!(
        users_db::throttle_for_update(&mut tx, "stale|key")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        users_db::throttle_for_update(&mut tx, "fresh|key")
            .await
            .unwrap()
            .is_some()
    );
    drop(tx);
    let since = now - chrono::TimeDelta::days(200);
    assert!(
        !users_db::known_address(db, "op.old", "10.0.0.1", since)
            .await
            .unwrap()
    );
    assert!(
        users_db::known_address(db, "op.new", "10.0.0.2", since)
            .await
            .unwrap()
    );
});

/// Logs `admin` in with an `X-Forwarded-For` header.
async fn login_forwarded(srv: &TestServer, forwarded_for: &str) {
    let r = reqwest::Client::new()
        .post(srv.url("/api/v1/auth/login"))
        .header("x-forwarded-for", forwarded_for)
        .json(&serde_json::json!({"username": "admin", "password": crate::harness::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

// X-Forwarded-For names the client only when the peer is a trusted proxy
// (CHANGEGUARD_TRUSTED_PROXIES); from anybody else it is ignored.
crate::both_backends!(forwarded_for_counts_only_from_trusted_proxies, |srv| {
    use changeguard::db::users::known_address;
    let since = srv.now() - chrono::TimeDelta::days(1);
    login_forwarded(srv, "203.0.113.7").await;
    assert!(
        !known_address(&srv.app.db, "admin", "203.0.113.7", since)
            .await
            .unwrap()
    );
    assert!(
        known_address(&srv.app.db, "admin", "127.0.0.1", since)
            .await
            .unwrap()
    );

    let behind_proxy = srv
        .second_instance_with(crate::harness::Options {
            trusted_proxies: Some("127.0.0.1/32".into()),
            ..crate::harness::Options::default()
        })
        .await;
    login_forwarded(&behind_proxy, "198.51.100.1, 203.0.113.7").await;
    assert!(
        known_address(&srv.app.db, "admin", "203.0.113.7", since)
            .await
            .unwrap()
    );
    assert!(
        !known_address(&srv.app.db, "admin", "198.51.100.1", since)
            .await
            .unwrap()
    );
    behind_proxy.stop().await;
});
