//! Control characters in any text a client sends: a 422 `invalid_text` naming the field, on
//! both databases (PostgreSQL refuses a NUL in TEXT, which used to surface as a 500), and
//! nothing written.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::changes::{at, change, notice_today, setup};
use crate::harness::{body, problem};

crate::both_backends!(control_characters_are_refused_by_field, |srv| {
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let start = at(earliest, 9 * 60);

    // A NUL, an escape and a line break in a one-line field; each names its field.
    for (field, value) in [
        ("title", "升级\u{0}v2"),
        ("title", "升级\nv2"),
        ("description", "\u{1b}[31m红色"),
        ("rollback_plan", "回退\u{7}"),
        ("impact", "a\rb"),
    ] {
        let mut c = change(start, 2);
        c[field] = json!(value);
        let doc = problem(
            srv.post("/api/v1/changes", &p.op, c).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_text",
        )
        .await;
        assert_eq!(doc["field"], field, "{doc}");
        let detail = doc["detail"].as_str().unwrap();
        assert!(
            detail.contains(field) && detail.contains("控制字符"),
            "{detail}"
        );
    }
    // Inside a list: the path names the element.
    let mut c = change(start, 2);
    c["systems"] = json!(["cs-platform", "core\u{0}"]);
    let doc = problem(
        srv.post("/api/v1/changes", &p.op, c).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "systems[1]");

    // A bad key is named by a placeholder, never echoed (the refusal is audited; a NUL in the
    // audit entry was a 500 on PostgreSQL), and so is a bad query parameter name.
    let doc = problem(
        srv.post("/api/v1/changes", &p.op, json!({"x\u{0}y": 1}))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "<key>");
    let doc = problem(
        srv.get("/api/v1/changes?sys%00tem=x", &p.viewer).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "<name>");

    // Multi-line fields keep their line breaks (CRLF from a browser's textarea too) and tabs.
    let mut c = change(start, 2);
    c["description"] = json!("第一步：停服务\r\n第二步：\t升级\n第三步：验证");
    let r = srv.post("/api/v1/changes", &p.op, c).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let filed = body(r).await;
    assert_eq!(
        filed["description"],
        "第一步：停服务\r\n第二步：\t升级\n第三步：验证"
    );

    // The register, the accounts, a path and a query parameter.
    let doc = problem(
        srv.post(
            "/api/v1/systems",
            &p.admin,
            json!({"key": "pay-gw", "name": "支付\u{0}网关", "owner_department": "科技部"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "name");
    let doc = problem(
        srv.call(
            Method::PATCH,
            "/api/v1/systems/cs-platform",
            Some(&p.admin),
            Some(json!({"owner_department": "科技部\u{0}"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "owner_department");
    let doc = problem(
        srv.post(
            "/api/v1/users",
            &p.admin,
            json!({"username": "new.user", "display_name": "王\u{0}五", "department": "科技部",
                   "email": "w@bank.example", "password": "a long enough password"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "display_name");
    let doc = problem(
        srv.call(
            Method::PATCH,
            "/api/v1/systems/cs%00platform",
            Some(&p.admin),
            Some(json!({"name": "x"})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "key");
    let doc = problem(
        srv.get("/api/v1/changes?system=cs%00platform", &p.viewer)
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "system");
    // A NUL in a login's username is refused before the login like in any body (the
    // domain's own check answers a wrong login for a control character that gets that far).
    problem(
        srv.login("admin\u{0}", "whatever it is").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    // In a secret field the refusal names the field, never where or which character.
    let doc = problem(
        srv.login("admin", "pass\u{1}word").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_text",
    )
    .await;
    assert_eq!(doc["field"], "password");
    assert!(doc.get("position").is_none(), "{doc}");
    assert!(!doc["detail"].as_str().unwrap().contains("U+"), "{doc}");

    // Nothing of the refused requests was written: one change, the two systems of the setup,
    // no new user, names unchanged; the trail still verifies.
    let changes = body(srv.get("/api/v1/changes", &p.viewer).await).await;
    assert_eq!(changes.as_array().unwrap().len(), 1, "{changes}");
    let systems = body(srv.get("/api/v1/systems", &p.viewer).await).await;
    assert_eq!(systems.as_array().unwrap().len(), 2, "{systems}");
    assert!(
        systems
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["owner_department"] == "科技部")
    );
    let users = body(srv.get("/api/v1/users", &p.admin).await).await;
    assert!(
        users
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["username"] != "new.user")
    );
    let v = body(srv.get("/api/v1/audit/verify", &p.admin).await).await;
    assert_eq!(v["ok"], true, "{v}");
});

// The change list's query: control characters and huge values are a 422 naming the parameter,
// wrong types a 400, on both databases (PostgreSQL refuses a NUL in a bound TEXT).
crate::both_backends!(the_change_list_query_refuses_bad_text, |srv| {
    let p = setup(srv).await;
    for (query, field) in [
        ("q=%E5%8D%87%00", "q"),
        ("requester=op%1Bzhang", "requester"),
        ("system=cs%00", "system"),
        (&*format!("assignee={}", "x".repeat(201)), "assignee"),
    ] {
        let r = srv.get(&format!("/api/v1/changes?{query}"), &p.op).await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY, "{query}");
        let doc = body(r).await;
        assert_eq!(doc["field"], field, "{doc}");
    }
    for query in [
        "offset=-1",
        "risk=extreme",
        "emergency=perhaps",
        "sort=random",
    ] {
        let r = srv.get(&format!("/api/v1/changes?{query}"), &p.op).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{query}");
    }
    // Literal words: `%` and `_` are no wildcards.
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let r = srv
        .post("/api/v1/changes", &p.op, change(at(earliest, 9 * 60), 2))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for (q, found) in [
        ("%25", 0),
        ("_", 0),
        ("%E5%8D%87%E7%BA%A7", 1),
        ("PLATFORM", 1),
    ] {
        let r = srv.get(&format!("/api/v1/changes?q={q}"), &p.op).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await.as_array().unwrap().len(), found, "{q}");
    }
});
