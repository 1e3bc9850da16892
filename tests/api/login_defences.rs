//! Login defences of issue 16 (finding 4 and the login timing): behind the bank's proxy a known
//! device is never delayed by other clients' failures, and a failed login costs the same time
//! whether the username exists or not.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::json;

use crate::harness::{Options, TestServer, USER_PASSWORD};

fn behind_proxy() -> Options {
    Options {
        trusted_proxies: Some("127.0.0.1/32".into()),
        ..Options::default()
    }
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

/// A console sign-in through the proxy for the client `forwarded_for`, with a device cookie if
/// given; the answer (303 signed in, 401, 429).
async fn console_login(
    srv: &TestServer,
    username: &str,
    password: &str,
    forwarded_for: &str,
    device: Option<&str>,
) -> reqwest::Response {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = client.get(srv.url("/console/login")).send().await.unwrap();
    let csrf = set_cookie(&r, "cg_csrf").unwrap();
    let mut cookies = format!("cg_csrf={csrf}");
    if let Some(d) = device {
        cookies.push_str(&format!("; cg_device={d}"));
    }
    client
        .post(srv.url("/console/login"))
        .header(COOKIE, cookies)
        .header(ORIGIN, &srv.base)
        .header("x-forwarded-for", forwarded_for)
        .form(&[
            ("csrf", csrf.as_str()),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

crate::both_backends!(
    a_known_device_is_not_delayed_by_failures_of_other_clients,
    options = behind_proxy(),
    |srv| {
        let admin = srv.admin().await;
        srv.user_with(&admin, "op.zhang", &["tech_operator"]).await;
        srv.user_with(&admin, "op.li", &["tech_operator"]).await;
        // The owner signed in from this browser before: it carries a device cookie.
        let ok = console_login(srv, "op.zhang", USER_PASSWORD, "10.0.0.5", None).await;
        assert_eq!(ok.status(), StatusCode::SEE_OTHER);
        let device = set_cookie(&ok, "cg_device").expect("a device cookie");
        let header = ok
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .find(|v| v.to_str().unwrap().starts_with("cg_device="))
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(header.contains("HttpOnly"), "{header}");
        assert!(header.contains("Max-Age="), "{header}");
        // Another device of another account does not count for this one.
        let li = console_login(srv, "op.li", USER_PASSWORD, "10.0.0.5", None).await;
        let other_device = set_cookie(&li, "cg_device").unwrap();

        // Somebody else behind the same address guesses: three failures, then the delay.
        for _ in 0..3 {
            let r = console_login(srv, "op.zhang", "a wrong guess, again", "10.0.0.5", None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        // Two more after their delays (1 s, 2 s): the next delay (4 s) outlasts the three
        // delayed answers below, each held to the 400 ms floor.
        for wait in [2, 3] {
            srv.advance(chrono::TimeDelta::seconds(wait));
            let r = console_login(srv, "op.zhang", "a wrong guess, again", "10.0.0.5", None).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let r = console_login(srv, "op.zhang", USER_PASSWORD, "10.0.0.5", None).await;
        assert_eq!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "no device: delayed"
        );
        let r = console_login(
            srv,
            "op.zhang",
            USER_PASSWORD,
            "10.0.0.5",
            Some(&other_device),
        )
        .await;
        assert_eq!(
            r.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "another account's device: delayed"
        );
        let last = if device.ends_with('0') { '1' } else { '0' };
        let forged = format!("{}{last}", &device[..device.len() - 1]);
        let r = console_login(srv, "op.zhang", USER_PASSWORD, "10.0.0.5", Some(&forged)).await;
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "forged: delayed");

        // The owner's own browser signs in at once.
        let r = console_login(srv, "op.zhang", USER_PASSWORD, "10.0.0.5", Some(&device)).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "the known device");
    }
);

crate::both_backends!(
    a_failed_login_costs_the_same_time_for_known_and_unknown_usernames,
    |srv| {
        let admin = srv.admin().await;
        srv.user_with(&admin, "op.zhang", &["tech_operator"]).await;
        for (username, client) in [("op.zhang", "10.0.0.7"), ("nobody.here", "10.0.0.8")] {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(srv.url("/api/v1/auth/login"))
                .header("x-forwarded-for", client)
                .json(&json!({"username": username, "password": "a wrong guess, again"}))
                .send()
                .await
                .unwrap();
            let took = started.elapsed();
            crate::harness::problem(r, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
            // Never answered before the floor (400 ms), which is well above the argon2 work and
            // the audit write that only an existing username's failure costs.
            assert!(took >= Duration::from_millis(400), "{username}: {took:?}");
        }
        // A delayed attempt (429, decided before any password work) takes as long: its speed
        // tells nothing either.
        let mut statuses = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            let r = reqwest::Client::new()
                .post(srv.url("/api/v1/auth/login"))
                .header("x-forwarded-for", "10.0.0.9")
                .json(&json!({"username": "nobody.else", "password": "a wrong guess, again"}))
                .send()
                .await
                .unwrap();
            let took = started.elapsed();
            assert!(
                took >= Duration::from_millis(400),
                "{}: {took:?}",
                r.status()
            );
            statuses.push(r.status());
        }
        assert!(
            statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
            "{statuses:?}"
        );
    }
);
