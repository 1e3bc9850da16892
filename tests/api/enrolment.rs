//! The second factor on by default (issue 16, finding 2): the shipped `totp_required_roles`
//! give a holder of those roles without a confirmed factor a session that may only enrol one
//! (and change a temporary password); the bootstrap admin enrols at the first login; recovery
//! codes carry 120 bits and sign in once.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use changeguard::vault::totp;

use crate::harness::{
    ADMIN_PASSWORD, Options, TEMP_PASSWORD, TestServer, USER_PASSWORD, body, problem,
};
use crate::vault::aligned_step;

fn shipped() -> Options {
    Options {
        second_factor_at_login: true,
        ..Options::default()
    }
}

async fn login(srv: &TestServer, username: &str, password: &str, totp: Option<&str>) -> Value {
    let mut doc = json!({"username": username, "password": password});
    if let Some(code) = totp {
        doc["totp"] = json!(code);
    }
    let r = srv
        .call(Method::POST, "/api/v1/auth/login", None, Some(doc))
        .await;
    assert_eq!(r.status(), StatusCode::OK, "login {username}");
    body(r).await
}

fn token(doc: &Value) -> String {
    doc["access_token"].as_str().unwrap().to_string()
}

/// Enrols and confirms a second factor with `token`; returns the secret.
async fn enrol_and_confirm(srv: &TestServer, token: &str) -> Vec<u8> {
    let e = body(srv.post("/api/v1/me/totp", token, json!({})).await).await;
    let secret = totp::decode(e["secret"].as_str().unwrap()).unwrap();
    let step = aligned_step(srv);
    let r = srv
        .post(
            "/api/v1/me/totp/confirm",
            token,
            json!({"code": totp::code_at(&secret, step - 1)}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    secret
}

/// Nothing but enrolment works with an enrolment-only token.
async fn only_enrolment(srv: &TestServer, token: &str) {
    let me = body(srv.get("/api/v1/me", token).await).await;
    assert_eq!(me["enrolment_required"], true, "{me}");
    assert_eq!(me["permissions"], json!([]), "{me}");
    problem(
        srv.get("/api/v1/changes", token).await,
        StatusCode::FORBIDDEN,
        "enrolment_required",
    )
    .await;
    problem(
        srv.post(
            "/api/v1/systems",
            token,
            json!({"key": "cs-platform", "name": "客户服务平台", "owner_department": "科技部"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "enrolment_required",
    )
    .await;
}

crate::both_backends!(
    the_bootstrap_admin_enrols_at_the_first_login_and_nothing_more,
    options = shipped(),
    |srv| {
        let first = login(srv, "admin", ADMIN_PASSWORD, None).await;
        assert_eq!(first["enrolment_required"], true, "{first}");
        assert_eq!(first["must_change_password"], false, "{first}");
        let limited = token(&first);
        only_enrolment(srv, &limited).await;

        let secret = enrol_and_confirm(srv, &limited).await;
        // The session that enrolled holds both factors now: its limit is lifted.
        assert_eq!(
            srv.get("/api/v1/changes", &limited).await.status(),
            StatusCode::OK
        );
        let me = body(srv.get("/api/v1/me", &limited).await).await;
        assert_eq!(me["enrolment_required"], false, "{me}");

        // From now on the password alone is not enough.
        let r = srv.login("admin", ADMIN_PASSWORD).await;
        problem(r, StatusCode::UNAUTHORIZED, "totp_required").await;
        let step = aligned_step(srv);
        let full = login(
            srv,
            "admin",
            ADMIN_PASSWORD,
            Some(&totp::code_at(&secret, step)),
        )
        .await;
        assert_eq!(full["enrolment_required"], false, "{full}");
        let admin = token(&full);

        // The refused attempts are in the trail, as the admin's.
        let trail = body(srv.get("/api/v1/audit?limit=200", &admin).await).await;
        let refused: Vec<&Value> = trail
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["code"] == "enrolment_required")
            .collect();
        assert!(!refused.is_empty(), "{trail}");
        assert!(refused.iter().all(|e| e["actor"] == "admin"), "{refused:?}");

        // Recovery codes: 120 bits each, and each signs in once instead of a code.
        let codes = body(
            srv.post(
                "/api/v1/me/totp/recovery-codes",
                &admin,
                json!({"code": totp::code_at(&secret, step + 1)}),
            )
            .await,
        )
        .await;
        let codes: Vec<String> = serde_json::from_value(codes["codes"].clone()).unwrap();
        assert_eq!(codes.len(), 10);
        for c in &codes {
            let chars: String = c.chars().filter(|c| *c != '-').collect();
            assert_eq!(chars.len(), 24, "{c}");
            assert!(totp::decode(&chars).is_some_and(|b| b.len() == 15), "{c}");
        }
        let by_code = login(srv, "admin", ADMIN_PASSWORD, Some(&codes[3])).await;
        assert_eq!(by_code["enrolment_required"], false);
        let again = srv
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(json!({"username": "admin", "password": ADMIN_PASSWORD, "totp": codes[3]})),
            )
            .await;
        problem(again, StatusCode::UNAUTHORIZED, "totp_invalid").await;
    }
);

crate::both_backends!(
    new_staff_change_the_temporary_password_then_enrol,
    options = shipped(),
    |srv| {
        let first = login(srv, "admin", ADMIN_PASSWORD, None).await;
        let admin = token(&first);
        enrol_and_confirm(srv, &admin).await;

        let mut ids = Vec::new();
        for (username, role) in [("op.zhang", "tech_operator"), ("audit.liu", "auditor")] {
            let user = body(
                srv.post(
                    "/api/v1/users",
                    &admin,
                    json!({"username": username, "display_name": username, "department": "科技部",
                           "email": format!("{username}@bank.example"), "password": TEMP_PASSWORD}),
                )
                .await,
            )
            .await;
            let r = srv
                .post(
                    &format!("/api/v1/users/{}/roles", user["id"]),
                    &admin,
                    json!({"role": role}),
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED, "{role}");
            ids.push(user["id"].as_i64().unwrap());
        }

        // A listed role: the temporary password first, then the second factor.
        let first = login(srv, "op.zhang", TEMP_PASSWORD, None).await;
        assert_eq!(first["must_change_password"], true, "{first}");
        assert_eq!(first["enrolment_required"], true, "{first}");
        let op = token(&first);
        problem(
            srv.post("/api/v1/me/totp", &op, json!({})).await,
            StatusCode::FORBIDDEN,
            "password_change_required",
        )
        .await;
        let r = srv
            .post(
                "/api/v1/me/password",
                &op,
                json!({"current_password": TEMP_PASSWORD, "new_password": USER_PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        only_enrolment(srv, &op).await;
        enrol_and_confirm(srv, &op).await;
        assert_eq!(
            srv.get("/api/v1/changes", &op).await.status(),
            StatusCode::OK
        );

        // A role the list does not name (auditor): the password is enough.
        let first = login(srv, "audit.liu", TEMP_PASSWORD, None).await;
        assert_eq!(first["enrolment_required"], false, "{first}");
        let auditor = token(&first);
        let r = srv
            .post(
                "/api/v1/me/password",
                &auditor,
                json!({"current_password": TEMP_PASSWORD, "new_password": USER_PASSWORD}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            srv.get("/api/v1/changes", &auditor).await.status(),
            StatusCode::OK
        );
        let again = login(srv, "audit.liu", USER_PASSWORD, None).await;
        assert_eq!(again["enrolment_required"], false, "{again}");

        // A listed role granted later ends the sessions opened without a factor: the next
        // sign-in may only enrol one.
        let before = token(&again);
        let r = srv
            .post(
                &format!("/api/v1/users/{}/roles", ids[1]),
                &admin,
                json!({"role": "tech_operator"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(
            srv.get("/api/v1/me", &before).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            srv.get("/api/v1/me", &auditor).await.status(),
            StatusCode::UNAUTHORIZED
        );
        let next = login(srv, "audit.liu", USER_PASSWORD, None).await;
        assert_eq!(next["enrolment_required"], true, "{next}");
        only_enrolment(srv, &token(&next)).await;
        // A role the list does not name ends nothing.
        let r = srv
            .post(
                &format!("/api/v1/users/{}/roles", ids[1]),
                &admin,
                json!({"role": "viewer"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let me = body(srv.get("/api/v1/me", &token(&next)).await).await;
        assert_eq!(me["enrolment_required"], true, "{me}");
    }
);

#[test]
fn the_shipped_policies_ask_a_second_factor_of_the_privileged_and_the_operators() {
    let text =
        std::fs::read_to_string(crate::harness::shipped_policies().join("security.toml")).unwrap();
    let doc: toml::Value = toml::from_str(&text).unwrap();
    let roles: Vec<&str> = doc["totp_required_roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(roles, ["admin", "manager", "compliance", "tech_operator"]);
}

/// A person made from the server's console (no temporary password) with `roles`.
async fn person(srv: &TestServer, username: &str, roles: &[&str]) -> changeguard::db::users::User {
    let user = changeguard::accounts::create_user(
        &srv.app,
        None,
        changeguard::accounts::CreateUser {
            username: username.into(),
            display_name: format!("{username} 测试"),
            department: "科技部".into(),
            email: format!("{username}@bank.example"),
            password: secrecy::SecretString::from(USER_PASSWORD),
        },
    )
    .await
    .unwrap();
    for role in roles {
        changeguard::accounts::grant_role_unattended(&srv.app, user.id, role)
            .await
            .unwrap();
    }
    user
}

/// `delegator` names `delegate` as substitute from `from` hours from now, for `days` days (from
/// the domain: a delegator's own sign-in needs a factor of their own, another test's business).
async fn delegate(
    srv: &TestServer,
    delegator: changeguard::db::users::User,
    delegate: &str,
    from: i64,
    days: i64,
) {
    let now = srv.now();
    let who = changeguard::accounts::principal_for(&srv.app, delegator, now)
        .await
        .unwrap();
    let offset = chrono::FixedOffset::east_opt(8 * 3600).unwrap();
    changeguard::changes::delegations::delegate(
        &srv.app,
        &who,
        changeguard::changes::delegations::Delegate {
            delegate: delegate.into(),
            from: (now + chrono::TimeDelta::hours(from)).with_timezone(&offset),
            to: (now + chrono::TimeDelta::days(days)).with_timezone(&offset),
            reason: "出差 / away".into(),
        },
    )
    .await
    .unwrap();
}

crate::both_backends!(
    a_delegate_decides_in_the_delegators_role_so_needs_its_second_factor,
    options = shipped(),
    |srv| {
        let manager = person(srv, "mgr.zhao", &["manager"]).await;
        person(srv, "viewer.qian", &["viewer"]).await;
        // A viewer needs no second factor: a full session with the password alone.
        let before = login(srv, "viewer.qian", USER_PASSWORD, None).await;
        assert_eq!(before["enrolment_required"], false, "{before}");
        let session = token(&before);
        assert_eq!(
            srv.get("/api/v1/changes", &session).await.status(),
            StatusCode::OK
        );

        // The manager names the viewer as substitute, from in an hour.
        delegate(srv, manager, "viewer.qian", 1, 3).await;

        // Deciding as a manager: the session without a factor is over, and the next one only
        // enrols a factor (even before the delegation starts: it is granted).
        problem(
            srv.get("/api/v1/changes", &session).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
        let after = login(srv, "viewer.qian", USER_PASSWORD, None).await;
        assert_eq!(after["enrolment_required"], true, "{after}");
        only_enrolment(srv, &token(&after)).await;

        // A delegator who needs no factor yet (a head of department) names a substitute: their
        // session stays; once the delegator is granted a role that needs one, it ends too.
        let lead = person(srv, "lead.wu", &["tech_lead"]).await;
        person(srv, "viewer.zhou", &["viewer"]).await;
        let session = token(&login(srv, "viewer.zhou", USER_PASSWORD, None).await);
        delegate(srv, lead.clone(), "viewer.zhou", 0, 2).await;
        assert_eq!(
            srv.get("/api/v1/changes", &session).await.status(),
            StatusCode::OK
        );
        changeguard::accounts::grant_role_unattended(&srv.app, lead.id, "tech_operator")
            .await
            .unwrap();
        problem(
            srv.get("/api/v1/changes", &session).await,
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        )
        .await;
    }
);
