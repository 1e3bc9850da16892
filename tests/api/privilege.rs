//! Dual control of privilege (issue 16, finding 1): one admin cannot make a puppet manager, a
//! temporary password opens nothing but its own change, and people see and end their sessions.

use chrono::TimeDelta;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{TEMP_PASSWORD, TestServer, USER_PASSWORD, body, problem};

/// Creates a person as an admin does (a temporary password, no role); returns the id.
async fn create(srv: &TestServer, admin: &str, username: &str) -> i64 {
    let r = srv
        .post(
            "/api/v1/users",
            admin,
            json!({"username": username, "display_name": username, "department": "电子银行部",
                   "email": format!("{username}@bank.example"), "password": TEMP_PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_i64().unwrap()
}

async fn request_role(srv: &TestServer, admin: &str, id: i64, role: &str) -> reqwest::Response {
    srv.post(
        &format!("/api/v1/users/{id}/roles"),
        admin,
        json!({"role": role}),
    )
    .await
}

async fn trail(srv: &TestServer, admin: &str) -> Vec<Value> {
    body(srv.get("/api/v1/audit?limit=200", admin).await)
        .await
        .as_array()
        .unwrap()
        .clone()
}

crate::both_backends!(one_admin_cannot_make_a_puppet_manager, |srv| {
    let p = crate::changes::setup(srv).await;
    let (admin, op) = (p.admin.clone(), p.op.clone());
    let second = srv.second_admin().await;
    srv.user_with(&admin, "he.compliance", &["compliance"])
        .await;

    // The attack: an admin creates an account with a password of their choosing and grants it
    // `manager`. The grant only asks a second person.
    let puppet = create(srv, &admin, "puppet").await;
    let r = request_role(srv, &admin, puppet, "manager").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let request = body(r).await;
    assert_eq!(request["status"], "pending", "{request}");
    assert_eq!(request["role"], "manager");
    assert_eq!(request["username"], "puppet");
    assert_eq!(request["requested_by_username"], "admin");
    let request_id = request["id"].as_i64().unwrap();
    // A second request for the same grant waits for the first.
    problem(
        request_role(srv, &admin, puppet, "manager").await,
        StatusCode::CONFLICT,
        "request_pending",
    )
    .await;

    // Signing in as the puppet with the admin's password opens only the password change; after
    // it, the puppet holds no privilege at all.
    let r = srv.login("puppet", TEMP_PASSWORD).await;
    let temp = body(r).await["access_token"].as_str().unwrap().to_string();
    srv.post(
        "/api/v1/me/password",
        &temp,
        json!({"current_password": TEMP_PASSWORD, "new_password": "the admin's own choice 1"}),
    )
    .await;
    let puppet_token = srv.token("puppet", "the admin's own choice 1").await;
    let me = body(srv.get("/api/v1/me", &puppet_token).await).await;
    assert_eq!(me["roles"], json!([]), "{me}");
    let (_, earliest) = crate::changes::notice_today(srv, &admin).await;
    let start = crate::changes::at(earliest, 600);
    let filed = body(
        srv.post("/api/v1/changes", &op, crate::changes::change(start, 2))
            .await,
    )
    .await;
    let change = filed["id"].as_i64().expect("filed");
    let r = srv
        .post(
            &format!("/api/v1/changes/{change}/approve"),
            &puppet_token,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    // The admin cannot approve their own request, nor the grantee.
    let approve = |token: String| {
        let path = format!("/api/v1/role-grants/{request_id}/approve");
        async move { srv.post(&path, &token, json!({})).await }
    };
    let doc = problem(
        approve(admin.clone()).await,
        StatusCode::FORBIDDEN,
        "self_approval",
    )
    .await;
    assert_eq!(doc["policy_ids"], json!(["sod.second_person"]));
    problem(
        approve(puppet_token.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // Who may decide sees what waits.
    let pending = body(srv.get("/api/v1/role-grants?status=pending", &second).await).await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending[0]["id"], request_id);
    problem(
        srv.get("/api/v1/role-grants?status=maybe", &second).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_status",
    )
    .await;

    // The second person approves: now the grant is in force.
    let r = approve(second.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let decided = body(r).await;
    assert_eq!(decided["status"], "active");
    assert_eq!(decided["decided_by_username"], crate::harness::SECOND_ADMIN);
    let me = body(srv.get("/api/v1/me", &puppet_token).await).await;
    assert_eq!(me["roles"], json!(["manager"]), "{me}");
    problem(
        approve(second.clone()).await,
        StatusCode::CONFLICT,
        "request_decided",
    )
    .await;

    // Even so, nobody holds admin with manager (incompatible duties), whoever asks.
    let doc = problem(
        request_role(srv, &second, puppet, "admin").await,
        StatusCode::FORBIDDEN,
        "incompatible_roles",
    )
    .await;
    assert_eq!(doc["policy_ids"], json!(["sod.incompatible_roles"]));
    problem(
        request_role(srv, &admin, puppet, "tech_operator").await,
        StatusCode::FORBIDDEN,
        "incompatible_roles",
    )
    .await;

    // The requester, the grantee and compliance are told, and every admin is asked.
    let notices = body(srv.get("/api/v1/notifications", &admin).await).await;
    let to = |kind: &str| -> Vec<String> {
        let n = notices
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["kind"] == kind && n["subject"].as_str().unwrap().contains("puppet"))
            .unwrap_or_else(|| panic!("no {kind} notice: {notices}"));
        let mut r: Vec<String> = n["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect();
        r.sort();
        r
    };
    assert_eq!(
        to("role_requested"),
        vec![
            "admin.li@bank.example",
            "admin@localhost.localdomain",
            "he.compliance@bank.example",
            "puppet@bank.example"
        ]
    );
    assert_eq!(
        to("role_decided"),
        vec![
            "admin@localhost.localdomain",
            "he.compliance@bank.example",
            "puppet@bank.example"
        ]
    );

    // A refusal needs its reason and ends the request; a request nobody decides lapses.
    let other = create(srv, &admin, "he.two").await;
    let r = request_role(srv, &admin, other, "compliance").await;
    let refused_id = body(r).await["id"].as_i64().unwrap();
    let refuse = format!("/api/v1/role-grants/{refused_id}/refuse");
    problem(
        srv.post(&refuse, &second, json!({"reason": " "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    let r = srv
        .post(
            &refuse,
            &second,
            json!({"reason": "合规部未提出申请 / not asked for by compliance"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "refused");
    let r = request_role(srv, &admin, other, "compliance").await;
    let lapsing = body(r).await["id"].as_i64().unwrap();
    srv.advance(TimeDelta::days(8));
    let second = srv.second_admin().await;
    problem(
        srv.post(
            &format!("/api/v1/role-grants/{lapsing}/approve"),
            &second,
            json!({}),
        )
        .await,
        StatusCode::CONFLICT,
        "request_expired",
    )
    .await;
    let admin = srv.admin().await;
    let expired = body(srv.get("/api/v1/role-grants?status=expired", &admin).await).await;
    assert_eq!(expired[0]["id"], lapsing, "{expired}");
    let compliance_me = srv.token("he.compliance", USER_PASSWORD).await;
    let me = body(srv.get("/api/v1/me", &compliance_me).await).await;
    assert_eq!(me["roles"], json!(["compliance"]));

    // Every step is in the audit trail, the refusals included.
    let entries = trail(srv, &admin).await;
    let count = |action: &str, outcome: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome)
            .count()
    };
    assert!(count("role.request", "ok") >= 3, "{entries:?}");
    assert!(count("role.approve", "ok") >= 1);
    assert_eq!(count("role.refuse", "ok"), 1);
    assert!(count("role_request.approve", "refused") >= 3);

    // Incompatible holdings from before the rule are found (and reported at start-up).
    let puppet_grant = format!(
        "INSERT INTO role_grants (user_id, role, granted_at) VALUES ({puppet}, 'tech_operator', '{}')",
        srv.now().to_rfc3339()
    );
    srv.sql(&[&puppet_grant]).await.unwrap();
    let found = changeguard::accounts::incompatible_holdings(&srv.app)
        .await
        .unwrap();
    assert_eq!(
        found,
        vec![(
            "puppet".to_string(),
            "manager".to_string(),
            "tech_operator".to_string()
        )]
    );
});

crate::both_backends!(a_temporary_password_opens_only_its_change, |srv| {
    let admin = srv.admin().await;
    let id = create(srv, &admin, "op.new").await;
    let r = srv.login("op.new", TEMP_PASSWORD).await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc = body(r).await;
    assert_eq!(doc["must_change_password"], true);
    let temp = doc["access_token"].as_str().unwrap().to_string();
    let me = body(srv.get("/api/v1/me", &temp).await).await;
    assert_eq!(me["must_change_password"], true);
    assert_eq!(me["permissions"], json!([]));
    problem(
        srv.get("/api/v1/changes", &temp).await,
        StatusCode::FORBIDDEN,
        "password_change_required",
    )
    .await;
    problem(
        srv.get("/api/v1/me/sessions", &temp).await,
        StatusCode::FORBIDDEN,
        "password_change_required",
    )
    .await;

    let change = |current: &str, new: &str| {
        let (current, new, temp) = (current.to_string(), new.to_string(), temp.clone());
        async move {
            srv.post(
                "/api/v1/me/password",
                &temp,
                json!({"current_password": current, "new_password": new}),
            )
            .await
        }
    };
    problem(
        change("not it at all", USER_PASSWORD).await,
        StatusCode::FORBIDDEN,
        "wrong_password",
    )
    .await;
    problem(
        change(TEMP_PASSWORD, TEMP_PASSWORD).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "password_unchanged",
    )
    .await;
    problem(
        change(TEMP_PASSWORD, "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "weak_password",
    )
    .await;
    let r = srv
        .call(
            Method::POST,
            "/api/v1/me/password",
            Some(&temp),
            Some(json!({"current_password": TEMP_PASSWORD, "new_password": USER_PASSWORD, "x": 1})),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::UNPROCESSABLE_ENTITY,
        "unknown field"
    );
    assert_eq!(
        change(TEMP_PASSWORD, USER_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    // The same session may now do what the (no) roles permit; the temporary password is gone.
    assert_eq!(
        srv.get("/api/v1/me/sessions", &temp).await.status(),
        StatusCode::OK
    );
    problem(
        srv.login("op.new", TEMP_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let own = srv.login("op.new", USER_PASSWORD).await;
    assert_eq!(body(own).await["must_change_password"], false);

    // An admin's reset is temporary again, and dies after 72 hours.
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({"password": "reset by the admin 2026"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(body(r).await["password_temporary_until"].is_string());
    let r = srv.login("op.new", "reset by the admin 2026").await;
    assert_eq!(body(r).await["must_change_password"], true);
    srv.advance(TimeDelta::hours(73));
    problem(
        srv.login("op.new", "reset by the admin 2026").await,
        StatusCode::UNAUTHORIZED,
        "temporary_password_expired",
    )
    .await;
    // A wrong password still says only that.
    problem(
        srv.login("op.new", "reset by the admin 2027").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    // The refused writes of the temporary session are in the trail.
    let admin = srv.admin().await;
    let entries = trail(srv, &admin).await;
    assert!(entries.iter().any(|e| e["action"] == "me.password"
        && e["outcome"] == "refused"
        && e["code"] == "wrong_password"));
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "user.password_change" && e["outcome"] == "ok")
    );
});

crate::both_backends!(people_see_and_end_their_sessions, |srv| {
    let admin = srv.admin().await;
    let (id, a) = srv.user_with(&admin, "op.wu", &["tech_operator"]).await;
    let b = srv.token("op.wu", USER_PASSWORD).await;
    let list = body(srv.get("/api/v1/me/sessions", &a).await).await;
    let list = list.as_array().unwrap().clone();
    // The first login's (that changed the temporary password), `a`'s and `b`'s, newest first.
    assert_eq!(list.len(), 3, "{list:?}");
    assert_eq!(list[1]["current"], true);
    assert!(list.iter().all(|s| s["address"] == "127.0.0.1"), "{list:?}");
    let other = list[0]["id"].as_str().unwrap().to_string();
    let end = |path: String, token: String| async move {
        srv.call(Method::DELETE, &path, Some(&token), None).await
    };
    assert_eq!(
        end(format!("/api/v1/me/sessions/{other}"), a.clone())
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        srv.get("/api/v1/me", &b).await.status(),
        StatusCode::UNAUTHORIZED
    );
    problem(
        end(format!("/api/v1/me/sessions/{other}"), a.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Nobody ends another person's session through their own list.
    let admin_sessions = body(srv.get("/api/v1/me/sessions", &admin).await).await;
    let admins = admin_sessions[0]["id"].as_str().unwrap().to_string();
    problem(
        end(format!("/api/v1/me/sessions/{admins}"), a.clone()).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(srv.get("/api/v1/me", &admin).await.status(), StatusCode::OK);

    // A changed password ends the other sessions and keeps this one.
    let c = srv.token("op.wu", USER_PASSWORD).await;
    let r = srv
        .post(
            "/api/v1/me/password",
            &a,
            json!({"current_password": USER_PASSWORD, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        srv.get("/api/v1/me", &c).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(srv.get("/api/v1/me", &a).await.status(), StatusCode::OK);

    // An admin sees and ends anybody's sessions; others may not.
    let path = format!("/api/v1/users/{id}/sessions");
    problem(srv.get(&path, &a).await, StatusCode::FORBIDDEN, "forbidden").await;
    let theirs = body(srv.get(&path, &admin).await).await;
    assert_eq!(theirs.as_array().unwrap().len(), 1, "{theirs}");
    assert_eq!(theirs[0]["current"], false);
    let sid = theirs[0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        end(format!("{path}/{sid}"), admin.clone()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        srv.get("/api/v1/me", &a).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let entries = trail(srv, &admin).await;
    let ended: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "session.end")
        .collect();
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(
        ended
            .iter()
            .all(|e| !e["details"].as_str().unwrap().contains(&sid)),
        "no full ids"
    );
});

// One admin must not reset another admin's password and sign in as them (then be the "second
// person" of their own requests): a privileged account's reset waits for a second person.
crate::both_backends!(a_privileged_password_reset_needs_a_second_person, |srv| {
    use crate::harness::ADMIN_PASSWORD;
    let admin = srv.admin().await;
    let second = srv.second_admin().await;
    // A third admin, from the server's console.
    let wang = changeguard::accounts::create_user(
        &srv.app,
        None,
        changeguard::accounts::CreateUser {
            username: "admin.wang".into(),
            display_name: "王管理员".into(),
            department: "科技部".into(),
            email: "admin.wang@bank.example".into(),
            password: secrecy::SecretString::from(ADMIN_PASSWORD),
        },
    )
    .await
    .unwrap();
    changeguard::accounts::grant_role_unattended(&srv.app, wang.id, "admin")
        .await
        .unwrap();
    let wang_token = srv.token("admin.wang", ADMIN_PASSWORD).await;
    let reset = |token: String, password: &'static str| {
        let path = format!("/api/v1/users/{}", wang.id);
        async move {
            srv.call(
                Method::PATCH,
                &path,
                Some(&token),
                Some(json!({"password": password, "display_name": "王管理员（新）"})),
            )
            .await
        }
    };

    // The reset is filed, not done; the other fields are changed.
    let r = reset(admin.clone(), "chosen by one admin 2026").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let filed = body(r).await;
    assert_eq!(filed["status"], "pending", "{filed}");
    assert_eq!(filed["username"], "admin.wang");
    assert_eq!(filed["requested_by_username"], "admin");
    assert!(filed.get("password_hash").is_none(), "{filed}");
    let id = filed["id"].as_i64().unwrap();
    let user = body(
        srv.get(&format!("/api/v1/users/{}", wang.id), &second)
            .await,
    )
    .await;
    assert_eq!(user["display_name"], "王管理员（新）");
    // Nothing else changed: the old password and session still work, the chosen one does not.
    assert_eq!(
        srv.get("/api/v1/me", &wang_token).await.status(),
        StatusCode::OK
    );
    problem(
        srv.login("admin.wang", "chosen by one admin 2026").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    problem(
        reset(admin.clone(), "another choice 2026").await,
        StatusCode::CONFLICT,
        "request_pending",
    )
    .await;

    // Neither the one who chose it nor the account's holder approves it.
    let approve = format!("/api/v1/password-resets/{id}/approve");
    for token in [&admin, &wang_token] {
        problem(
            srv.call(Method::POST, &approve, Some(token), None).await,
            StatusCode::FORBIDDEN,
            "self_approval",
        )
        .await;
    }
    let pending = body(
        srv.get("/api/v1/password-resets?status=pending", &second)
            .await,
    )
    .await;
    assert_eq!(pending.as_array().unwrap().len(), 1, "{pending}");
    problem(
        srv.get("/api/v1/password-resets?status=later", &second)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_status",
    )
    .await;

    // A second person approves: the password is set (temporary), the sessions end.
    let r = srv.call(Method::POST, &approve, Some(&second), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "active");
    assert_eq!(
        srv.get("/api/v1/me", &wang_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let r = srv.login("admin.wang", "chosen by one admin 2026").await;
    assert_eq!(body(r).await["must_change_password"], true);
    problem(
        srv.call(Method::POST, &approve, Some(&second), None).await,
        StatusCode::CONFLICT,
        "request_decided",
    )
    .await;

    // The holder may refuse a reset they did not ask for; the chosen password never works.
    let r = reset(second.clone(), "chosen by the second 2026").await;
    let id = body(r).await["id"].as_i64().unwrap();
    let r = srv.login("admin.wang", "chosen by one admin 2026").await;
    let temporary = body(r).await["access_token"].as_str().unwrap().to_string();
    let r = srv
        .post(
            "/api/v1/me/password",
            &temporary,
            json!({"current_password": "chosen by one admin 2026", "new_password": USER_PASSWORD}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let wang_token = srv.token("admin.wang", USER_PASSWORD).await;
    let r = srv
        .post(
            &format!("/api/v1/password-resets/{id}/refuse"),
            &wang_token,
            json!({"reason": "我没有申请 / I did not ask for this"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(body(r).await["status"], "refused");
    problem(
        srv.login("admin.wang", "chosen by the second 2026").await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;

    // Every step is audited, never with the password or its hash.
    let entries = trail(srv, &second).await;
    for action in [
        "password_reset.request",
        "password_reset.approve",
        "password_reset.refuse",
    ] {
        assert!(
            entries.iter().any(|e| e["action"] == action),
            "{action} missing"
        );
    }
    let text = serde_json::to_string(&entries).unwrap();
    assert!(!text.contains("chosen by"), "a password in the trail");
    assert!(!text.contains("$argon2"), "a hash in the trail");

    // A temporary password nobody changed dies when privilege is approved: else one admin
    // could choose it, have the role approved, and sign in as the privileged account alone.
    let fresh = create(srv, &admin, "he.fresh").await;
    let r = request_role(srv, &admin, fresh, "compliance").await;
    let request = body(r).await["id"].as_i64().unwrap();
    let r = srv
        .post(
            &format!("/api/v1/role-grants/{request}/approve"),
            &second,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    problem(
        srv.login("he.fresh", TEMP_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "temporary_password_expired",
    )
    .await;
    // A reset of an account with a privileged role pending waits for a second person too.
    let pending = create(srv, &admin, "he.pending").await;
    let r = request_role(srv, &admin, pending, "compliance").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{pending}"),
            Some(&admin),
            Some(json!({"password": "chosen while pending 2026"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);

    // An account without privilege is reset at once, as before.
    let plain = create(srv, &admin, "op.plain").await;
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{plain}"),
            Some(&admin),
            Some(json!({"password": "reset at once 2026"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
});

crate::both_backends!(
    a_delegate_of_a_manager_is_reset_only_with_a_second_person,
    |srv| {
        let admin = srv.admin().await;
        let (_, manager) = srv.user_with(&admin, "mgr.sun", &["manager"]).await;
        let (viewer, _) = srv.user_with(&admin, "viewer.li", &["viewer"]).await;
        let reset = |password: &'static str| {
            let path = format!("/api/v1/users/{viewer}");
            let admin = admin.clone();
            async move {
                srv.call(
                    Method::PATCH,
                    &path,
                    Some(&admin),
                    Some(json!({"password": password})),
                )
                .await
            }
        };
        // A viewer's password: one admin resets it.
        assert_eq!(
            reset("one admin may reset this 2026").await.status(),
            StatusCode::OK
        );
        // Named substitute of a manager (from tomorrow), the viewer comes to approve as one: a
        // reset needs a second person from now on.
        let from = (srv.now() + chrono::TimeDelta::days(1)).to_rfc3339();
        let to = (srv.now() + chrono::TimeDelta::days(4)).to_rfc3339();
        let r = srv
            .post(
                "/api/v1/me/delegations",
                &manager,
                json!({"delegate": "viewer.li", "from": from, "to": to, "reason": "休假 / leave"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = reset("no longer one admin alone 2026").await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(body(r).await["status"], "pending");
        // Nobody decides: the minute job lets it lapse and drops its hash, once.
        let later = srv.now() + chrono::TimeDelta::days(30);
        let lapse = || changeguard::db::password_resets::lapse_due(&srv.app.db, later);
        assert_eq!(lapse().await.unwrap(), 1);
        assert_eq!(lapse().await.unwrap(), 0);
    }
);
