//! Permissions: every route is gated; separation of duties; grants take effect at once.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Backend, Options, TestServer, body, problem, shipped_policies};
use changeguard::http::guard::{Access, RouteTable};

fn table() -> RouteTable {
    let (_, doc) = changeguard::http::api();
    RouteTable::from_openapi(&serde_json::to_value(&doc).unwrap()).unwrap()
}

fn concrete(path: &str) -> String {
    path.replace("{id}", "1")
        .replace("{role}", "viewer")
        .replace("{permission}", "change.read")
        .replace("{key}", "core")
        .replace("{year}", "2027")
}

#[test]
fn every_route_declares_its_access() {
    let t = table();
    assert!(t.0.len() >= 15, "{} routes", t.0.len());
    let public: Vec<_> =
        t.0.iter()
            .filter(|(_, i)| i.access == Access::Public)
            .map(|((m, p), _)| format!("{m} {p}"))
            .collect();
    let mut public = public;
    public.sort();
    assert_eq!(
        public,
        vec![
            // The gate's public keys: for offline verification of admissions.
            "GET /.well-known/jwks.json",
            // The feed authenticates with the personal token in its URL.
            "GET /api/v1/calendar.ics",
            "GET /healthz",
            "GET /readyz",
            "POST /api/v1/auth/login"
        ]
    );
    for ((_, _), info) in &t.0 {
        if let Access::Permission(p) = &info.access {
            let actions = changeguard::policy::Policies::load(&shipped_policies()).unwrap();
            assert!(
                actions.authorizer.is_action(p),
                "route permission {p} is not in the Cedar schema"
            );
        }
    }
}

crate::both_backends!(
    every_route_is_401_without_token_and_403_without_permission,
    |srv| {
        let admin = srv.admin().await;
        let (_, nobody) = srv.user_with(&admin, "no.roles", &[]).await;
        let mut checked = 0;
        for ((method, path), info) in &table().0 {
            let url = concrete(path);
            let body = if matches!(*method, Method::GET | Method::DELETE) {
                None
            } else {
                Some(json!({}))
            };
            match &info.access {
                Access::Public => continue,
                Access::Authenticated => {
                    let r = srv.call(method.clone(), &url, None, body.clone()).await;
                    problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
                }
                Access::Permission(p) => {
                    let r = srv.call(method.clone(), &url, None, body.clone()).await;
                    problem(r, StatusCode::UNAUTHORIZED, "unauthenticated").await;
                    let r = srv
                        .call(method.clone(), &url, Some(&nobody), body.clone())
                        .await;
                    let doc = problem(r, StatusCode::FORBIDDEN, "forbidden").await;
                    assert_eq!(
                        doc["policy_ids"],
                        json!([]),
                        "{method} {path} ({p}): denied by default"
                    );
                }
            }
            checked += 1;
        }
        assert!(checked >= 12);
    }
);

crate::both_backends!(nobody_grants_a_role_to_themselves, |srv| {
    let admin = srv.admin().await;
    let me = body(srv.get("/api/v1/me", &admin).await).await;
    let id = me["id"].as_i64().unwrap();
    let r = srv
        .post(
            &format!("/api/v1/users/{id}/roles"),
            &admin,
            json!({"role": "compliance"}),
        )
        .await;
    let doc = problem(r, StatusCode::FORBIDDEN, "self_grant").await;
    assert_eq!(doc["policy_ids"], json!(["sod.no_self_grant"]));
    let me = body(srv.get("/api/v1/me", &admin).await).await;
    assert_eq!(me["roles"], json!(["admin"]), "nothing was granted");
});

crate::both_backends!(the_last_admin_stays, |srv| {
    let admin = srv.admin().await;
    let id = body(srv.get("/api/v1/me", &admin).await).await["id"]
        .as_i64()
        .unwrap();
    let helper = srv.second_admin().await;
    let helper_id = body(srv.get("/api/v1/me", &helper).await).await["id"]
        .as_i64()
        .unwrap();
    let (second_id, second) = srv.user_with(&admin, "second.admin", &["admin"]).await;
    // Several admins: one may demote another (taking a privilege away needs no second person).
    let demote = |who: i64, by: &str| {
        let path = format!("/api/v1/users/{who}/roles/admin");
        let by = by.to_string();
        async move { srv.call(Method::DELETE, &path, Some(&by), None).await }
    };
    assert_eq!(demote(id, &second).await.status(), StatusCode::NO_CONTENT);

    // An admin whose grant runs out does not count: else the service would be left without
    // one when it does.
    let (temp_id, _) = srv.user_with(&second, "temp.admin", &[]).await;
    let expires = (srv.now() + chrono::TimeDelta::hours(1)).to_rfc3339();
    let r = srv
        .post(
            &format!("/api/v1/users/{temp_id}/roles"),
            &second,
            json!({"role": "admin", "expires_at": expires}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let request = body(r).await["id"].as_i64().unwrap();
    let r = srv
        .post(
            &format!("/api/v1/role-grants/{request}/approve"),
            &helper,
            json!({}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        demote(helper_id, &second).await.status(),
        StatusCode::NO_CONTENT
    );

    // Now `second` is the last admin with a grant that cannot run out: nobody can take it away,
    // not even themselves.
    problem(
        demote(second_id, &second).await,
        StatusCode::FORBIDDEN,
        "last_admin",
    )
    .await;
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{second_id}"),
            Some(&second),
            Some(json!({"active": false})),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "last_admin").await;
    assert_eq!(
        srv.get("/api/v1/me", &second).await.status(),
        StatusCode::OK
    );
    // A lone admin cannot make another admin through the API (nobody is there to approve):
    // the server's console can (`changeguard user create --role admin`, or this).
    changeguard::accounts::grant_role_unattended(&srv.app, temp_id, "admin")
        .await
        .unwrap();
    // With a permanent grant, the other admin does count.
    assert_eq!(
        demote(second_id, &second).await.status(),
        StatusCode::NO_CONTENT
    );
});

crate::both_backends!(revoking_a_role_takes_effect_on_the_next_request, |srv| {
    let admin = srv.admin().await;
    let (id, op) = srv.user_with(&admin, "li.na", &["compliance"]).await;
    assert_eq!(
        srv.get("/api/v1/audit?limit=1", &op).await.status(),
        StatusCode::OK
    );
    let check = body(
        srv.get("/api/v1/authz/check?permission=audit.read", &op)
            .await,
    )
    .await;
    assert_eq!(check, json!({"permission": "audit.read", "allowed": true}));
    let r = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/users/{id}/roles/compliance"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    problem(
        srv.get("/api/v1/audit?limit=1", &op).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let check = body(
        srv.get("/api/v1/authz/check?permission=audit.read", &op)
            .await,
    )
    .await;
    assert_eq!(check["allowed"], false);
});

crate::both_backends!(expired_grants_do_not_count, |srv| {
    let admin = srv.admin().await;
    let (id, op) = srv.user_with(&admin, "temp.worker", &[]).await;
    let soon = (chrono::Utc::now() + chrono::TimeDelta::seconds(2)).to_rfc3339();
    let r = srv
        .post(
            &format!("/api/v1/users/{id}/roles"),
            &admin,
            json!({"role": "auditor", "expires_at": soon}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        srv.get("/api/v1/audit?limit=1", &op).await.status(),
        StatusCode::OK
    );
    srv.advance(chrono::TimeDelta::seconds(3));
    assert_eq!(
        srv.get("/api/v1/audit?limit=1", &op).await.status(),
        StatusCode::FORBIDDEN
    );
    let past = (chrono::Utc::now() - chrono::TimeDelta::seconds(60)).to_rfc3339();
    let r = srv
        .post(
            &format!("/api/v1/users/{id}/roles"),
            &admin,
            json!({"role": "auditor", "expires_at": past}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_expiry").await;
});

crate::both_backends!(what_a_user_may_do, |srv| {
    let admin = srv.admin().await;
    let (id, op) = srv.user_with(&admin, "op.zhao", &["tech_operator"]).await;
    let of = |id: i64| format!("/api/v1/users/{id}/permissions");
    let may = body(srv.get(&of(id), &admin).await).await;
    assert_eq!(may["username"], "op.zhao");
    assert_eq!(may["roles"], json!(["tech_operator"]));
    // The same answer the user gets about themselves.
    let me = body(srv.get("/api/v1/me", &op).await).await;
    assert_eq!(may["permissions"], me["permissions"]);
    let perms = may["permissions"].as_array().unwrap();
    assert!(perms.contains(&json!("change.create")));
    assert!(!perms.contains(&json!("change.approve")));
    // Disabled: nothing, whatever roles remain.
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let may = body(srv.get(&of(id), &admin).await).await;
    assert_eq!(may["active"], false);
    assert_eq!(may["roles"], json!(["tech_operator"]));
    assert_eq!(may["permissions"], json!([]));
    problem(
        srv.get(&of(9999), &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
});

crate::both_backends!(who_holds_a_permission, |srv| {
    let admin = srv.admin().await;
    srv.user_with(&admin, "mgr.chen", &["manager"]).await;
    srv.user_with(&admin, "op.liu", &["tech_operator"]).await;
    let holders = body(
        srv.get("/api/v1/permissions/change.approve/holders", &admin)
            .await,
    )
    .await;
    let names: Vec<_> = holders
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["username"].clone(), h["role"].clone()))
        .collect();
    assert_eq!(names, vec![(json!("mgr.chen"), json!("manager"))]);
    problem(
        srv.get("/api/v1/permissions/no.such/holders", &admin).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let roles = body(srv.get("/api/v1/roles", &admin).await).await;
    let op = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "tech_operator")
        .unwrap();
    assert_eq!(op["title_zh"], "科技部操作员");
    assert!(
        op["permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("change.create"))
    );
});

crate::both_backends!(server_owned_fields_cannot_be_set, |srv| {
    let admin = srv.admin().await;
    for extra in [
        json!({"id": 99}),
        json!({"active": false}),
        json!({"created_at": "2020-01-01T00:00:00Z"}),
        json!({"password_hash": "x"}),
    ] {
        let mut b = json!({"username": "sneaky", "display_name": "x", "department": "科技部", "email": "s@bank.example", "password": "a long enough password"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        problem(
            srv.post("/api/v1/users", &admin, b).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
    }
    let (id, _) = srv.user_with(&admin, "plain.user", &[]).await;
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/users/{id}"),
            Some(&admin),
            Some(json!({"username": "renamed"})),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let r = srv
        .post(
            &format!("/api/v1/users/{id}/roles"),
            &admin,
            json!({"role": "viewer", "granted_by": 1}),
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
});

/// Escalation through grantable roles: a role that may grant only `viewer` cannot grant more.
#[tokio::test]
async fn no_escalation_through_grantable_roles() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shipped_policies(), dir.path());
    let roles = dir.path().join("roles.toml");
    let mut text = std::fs::read_to_string(&roles)
        .unwrap()
        .replace("\"viewer\"]", "\"viewer\", \"helpdesk\"]");
    text.push_str("\n[roles.helpdesk]\ntitle_zh = \"服务台\"\ntitle_en = \"Help desk\"\ngrantable = [\"viewer\"]\n");
    std::fs::write(&roles, text).unwrap();
    std::fs::write(
        dir.path().join("rbac/helpdesk.cedar"),
        "@id(\"role.helpdesk\")\npermit (principal in Role::\"helpdesk\", action in [Action::\"role.grant\", Action::\"user.read\"], resource);\n",
    )
    .unwrap();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && crate::harness::postgres_url().is_none() {
            continue;
        }
        let srv = TestServer::start_with(
            backend,
            Options {
                policies: dir.path().to_path_buf(),
                ..Options::default()
            },
        )
        .await;
        let admin = srv.admin().await;
        let (_, desk) = srv.user_with(&admin, "help.desk", &["helpdesk"]).await;
        let (target, _) = srv.user_with(&admin, "new.hire", &[]).await;
        let r = srv
            .post(
                &format!("/api/v1/users/{target}/roles"),
                &desk,
                json!({"role": "viewer"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        for role in ["admin", "manager", "helpdesk"] {
            let r = srv
                .post(
                    &format!("/api/v1/users/{target}/roles"),
                    &desk,
                    json!({"role": role}),
                )
                .await;
            let doc = problem(r, StatusCode::FORBIDDEN, "role_not_grantable").await;
            assert_eq!(doc["policy_ids"], json!(["sod.only_grantable_roles"]));
        }
        srv.stop().await;
    }
}

pub use crate::harness::copy_dir;

/// A policy edit whose `forbid` fails to evaluate (Cedar would skip it and let the `permit`s
/// through): the request is denied, and the refusal names the policy that failed.
#[tokio::test]
async fn a_policy_that_fails_to_evaluate_denies_and_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&shipped_policies(), dir.path());
    std::fs::write(
        dir.path().join("rbac/broken.cedar"),
        "@id(\"broken.overflow\")\nforbid (principal, action == Action::\"system.manage\", resource)\n\
         when { principal.username != \"\" && 9223372036854775807 + 1 > 0 };\n",
    )
    .unwrap();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && crate::harness::postgres_url().is_none() {
            continue;
        }
        let srv = TestServer::start_with(
            backend,
            Options {
                policies: dir.path().to_path_buf(),
                ..Options::default()
            },
        )
        .await;
        let admin = srv.admin().await;
        let doc = problem(
            srv.post("/api/v1/systems", &admin, json!({})).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        assert_eq!(doc["policy_ids"], json!(["broken.overflow"]), "{doc}");
        // What the erroring policy does not touch is decided as before; the refusal is audited
        // with the policy that failed.
        let trail = body(srv.get("/api/v1/audit?limit=20", &admin).await).await;
        let refused = trail
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["outcome"] == "refused" && e["code"] == "forbidden")
            .unwrap_or_else(|| panic!("{trail}"));
        assert_eq!(refused["policy_ids"], "[\"broken.overflow\"]", "{refused}");
        srv.stop().await;
    }
}
