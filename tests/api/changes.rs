//! Change requests through the real server: the notice rule, the life cycle, emergencies,
//! freeze windows, conflicts, the calendar, the feed, reports.

use chrono::{DateTime, Datelike, NaiveDate, TimeDelta, Utc};
use chrono_tz::Asia::Shanghai;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use changeguard::calendar::{NoticeRule, WorkingCalendar, load_dir};

use crate::harness::{Backend, Options, TestServer, body, problem, shipped_policies};

/// Today (bank time) and the calendar in force, computed with the calendar module (never a
/// clock override in the server). In late December next year's test calendar is loaded first.
async fn test_calendar(srv: &TestServer, admin: &str) -> (NaiveDate, WorkingCalendar) {
    let today = Utc::now().with_timezone(&Shanghai).date_naive();
    let mut cal =
        WorkingCalendar::new(load_dir(&shipped_policies().join("calendars/cn")).unwrap()).unwrap();
    // The shipped calendar ends in 2026: stand-in years (test data) for anything later.
    for year in 2027..=today.year() + 1 {
        if cal.has_year(year) {
            continue;
        }
        let data = crate::workdays::test_year(year);
        let r = srv
            .call(
                Method::PUT,
                &format!("/api/v1/working-days/years/{year}"),
                Some(admin),
                Some(data.clone()),
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let mut y = data;
        y["year"] = json!(year);
        cal = cal.with_year(serde_json::from_value(y).unwrap()).unwrap();
    }
    (today, cal)
}

/// Today's notice and its earliest start (which may be a day off: the earliest start is the
/// day after the third working day).
pub async fn notice_today(srv: &TestServer, admin: &str) -> (NaiveDate, NaiveDate) {
    let (today, cal) = test_calendar(srv, admin).await;
    (
        today,
        cal.earliest_start(today, &NoticeRule::default())
            .unwrap()
            .earliest_start,
    )
}

/// The first working day on or after the earliest start of a notice filed today.
pub async fn first_working_day_to_start(srv: &TestServer, admin: &str) -> NaiveDate {
    let (today, cal) = test_calendar(srv, admin).await;
    let mut d = cal
        .earliest_start(today, &NoticeRule::default())
        .unwrap()
        .earliest_start;
    while !cal.is_working(d).unwrap() {
        d = d.succ_opt().unwrap();
    }
    d
}

/// 00:00 of `d` in Shanghai, plus `minutes`.
pub fn at(d: NaiveDate, minutes: i64) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0)
        .unwrap()
        .and_local_timezone(Shanghai)
        .unwrap()
        .with_timezone(&Utc)
        + TimeDelta::minutes(minutes)
}

pub fn rfc(t: DateTime<Utc>) -> String {
    t.with_timezone(&Shanghai).to_rfc3339()
}

pub struct People {
    pub admin: String,
    pub op: String,
    pub op2: String,
    /// 科技部负责人: the first approval stage.
    pub lead: String,
    pub mgr: String,
    pub viewer: String,
}

/// The shipped stages approve change `id`: the technology head, then the manager (an
/// emergency: the manager alone).
pub async fn approve(srv: &TestServer, lead: &str, mgr: &str, id: i64) -> Value {
    let c = body(srv.get(&format!("/api/v1/changes/{id}"), mgr).await).await;
    let people = if c["emergency"] == true {
        vec![mgr]
    } else {
        vec![lead, mgr]
    };
    let mut last = Value::Null;
    for who in people {
        let r = srv
            .post(&format!("/api/v1/changes/{id}/approve"), who, json!({}))
            .await;
        let status = r.status();
        last = body(r).await;
        assert_eq!(status, StatusCode::OK, "{last}");
    }
    assert_eq!(last["status"], "approved", "{last}");
    last
}

pub async fn setup(srv: &TestServer) -> People {
    let admin = srv.admin().await;
    for (key, name) in [("core-db", "核心数据库"), ("cs-platform", "客户服务平台")] {
        let r = srv
            .post(
                "/api/v1/systems",
                &admin,
                json!({"key": key, "name": name, "owner_department": "科技部"}),
            )
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let (_, op) = srv.user_with(&admin, "op.zhang", &["tech_operator"]).await;
    let (_, op2) = srv.user_with(&admin, "op.li", &["tech_operator"]).await;
    let (_, lead) = srv.user_with(&admin, "lead.wang", &["tech_lead"]).await;
    let (_, mgr) = srv.user_with(&admin, "mgr.chen", &["manager"]).await;
    let (_, viewer) = srv.user_with(&admin, "view.wu", &["viewer"]).await;
    People {
        admin,
        op,
        op2,
        lead,
        mgr,
        viewer,
    }
}

pub fn change(start: DateTime<Utc>, hours: i64) -> Value {
    json!({
        "title": "客户服务平台升级 v2.3 / platform upgrade",
        "category": "software_upgrade",
        "systems": ["cs-platform"],
        "description": "升级到 2.3.0",
        "impact": "服务中断 30 分钟",
        "risk": "medium",
        "rollback_plan": "回退到 2.2.9 镜像",
        "planned_start": rfc(start),
        "planned_end": rfc(start + TimeDelta::hours(hours)),
    })
}

crate::both_backends!(
    late_notice_is_refused_and_the_earliest_day_accepted,
    |srv| {
        let p = setup(srv).await;
        let (today, earliest) = notice_today(srv, &p.admin).await;

        // One minute before 00:00 of the earliest day: refused, with the earliest start.
        let r = srv
            .post("/api/v1/changes", &p.op, change(at(earliest, -1), 2))
            .await;
        let doc = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "insufficient_notice").await;
        assert_eq!(doc["earliest_start"], earliest.to_string());
        assert_eq!(doc["notified_on"], today.to_string());
        let detail = doc["detail"].as_str().unwrap();
        assert!(
            detail.contains(&earliest.to_string())
                && detail.contains("工作日")
                && detail.contains("working days"),
            "{detail}"
        );
        // Nothing stored but the refusal's audit entry.
        assert_eq!(
            body(srv.get("/api/v1/changes", &p.viewer).await).await,
            json!([])
        );
        let audit = body(srv.get("/api/v1/audit?limit=1", &p.admin).await).await;
        assert_eq!(audit[0]["action"], "change.create");
        assert_eq!(audit[0]["outcome"], "refused");
        assert_eq!(audit[0]["code"], "insufficient_notice");

        // 00:00 of the earliest day: accepted. A client cannot back-date the notice.
        let mut req = change(at(earliest, 0), 2);
        req["notified_at"] = json!("2020-01-01T00:00:00Z");
        problem(
            srv.post("/api/v1/changes", &p.op, req).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        )
        .await;
        let r = srv
            .post("/api/v1/changes", &p.op, change(at(earliest, 0), 2))
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let c = body(r).await;
        assert_eq!(c["status"], "submitted");
        assert_eq!(c["notified_on"], today.to_string());
        assert_eq!(c["earliest_start"], earliest.to_string());
        assert_eq!(c["requester"]["username"], "op.zhang");
        assert_eq!(c["assignee"]["username"], "op.zhang");
        assert_eq!(c["conflicts"], json!([]));
        let notified: DateTime<Utc> = c["notified_at"].as_str().unwrap().parse().unwrap();
        assert!((Utc::now() - notified).num_seconds().abs() < 60);
    }
);

crate::both_backends!(bad_filings_are_refused_and_store_nothing, |srv| {
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let ok = change(at(earliest, 60), 2);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"category": "painting"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_category",
        ),
        (
            json!({"category": "hardware"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_action",
        ),
        (
            json!({"category": "hardware", "action": "paint"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_action",
        ),
        (
            json!({"action": "install"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_action",
        ),
        (
            json!({"systems": ["mainframe"]}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_system",
        ),
        (
            json!({"systems": []}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_systems",
        ),
        (
            json!({"planned_end": rfc(at(earliest, 30))}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_window",
        ),
        (
            json!({"planned_end": rfc(at(earliest, 60 * 24 * 20))}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_window",
        ),
        (
            json!({"risk": "extreme"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"planned_start": "next tuesday"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"planned_start": "2026-12-03T10:00:00"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"assignee": "view.wu"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_assignee",
        ),
        (
            json!({"assignee": "nobody"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_assignee",
        ),
        (
            json!({"status": "approved"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            json!({"emergency": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "justification_required",
        ),
        (
            json!({"title": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
    ];
    for (patch, status, code) in cases {
        let mut req = ok.clone();
        for (k, v) in patch.as_object().unwrap() {
            req[k] = v.clone();
        }
        problem(srv.post("/api/v1/changes", &p.op, req).await, status, code).await;
    }
    // Viewers cannot file; nothing was stored.
    problem(
        srv.post("/api/v1/changes", &p.viewer, ok.clone()).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_eq!(
        body(srv.get("/api/v1/changes", &p.viewer).await).await,
        json!([])
    );
    // A database change with an action and another assignee is fine.
    let mut req = ok.clone();
    req["category"] = json!("database");
    req["action"] = json!("schema");
    req["systems"] = json!(["core-db"]);
    req["assignee"] = json!("op.li");
    let c = body(srv.post("/api/v1/changes", &p.op, req).await).await;
    assert_eq!(c["assignee"]["username"], "op.li");
    assert_eq!(c["action"], "schema");
});

crate::both_backends!(approval_separation_of_duties_and_transitions, |srv| {
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let id = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 120), 2))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let path = |step: &str| format!("/api/v1/changes/{id}/{step}");

    // The requester may not approve (nor anybody else who is not an approver of the stage);
    // a manager who filed it may not approve it either.
    problem(
        srv.post(&path("approve"), &p.op, json!({})).await,
        StatusCode::FORBIDDEN,
        "self_approval",
    )
    .await;
    problem(
        srv.post(&path("approve"), &p.viewer, json!({})).await,
        StatusCode::FORBIDDEN,
        "not_an_approver_of_this_stage",
    )
    .await;
    // Nobody is granted both (incompatible duties); somebody who holds both from before the rule
    // still never approves their own change.
    let (op_id, _) = srv.user_with(&p.admin, "op.only", &["tech_operator"]).await;
    problem(
        srv.post(
            &format!("/api/v1/users/{op_id}/roles"),
            &p.admin,
            json!({"role": "manager"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "incompatible_roles",
    )
    .await;
    let (_, both) = srv
        .user_holding_by_hand(&p.admin, "op.mgr", &["tech_operator", "manager"])
        .await;
    let own = body(
        srv.post("/api/v1/changes", &both, change(at(earliest, 600), 1))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let doc = problem(
        srv.post(&format!("/api/v1/changes/{own}/approve"), &both, json!({}))
            .await,
        StatusCode::FORBIDDEN,
        "self_approval",
    )
    .await;
    assert_eq!(doc["policy_ids"], json!(["sod.no_self_approval"]));
    // Start before approval is not a transition; complete neither.
    problem(
        srv.call(Method::POST, &path("start"), Some(&p.op), None)
            .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    problem(
        srv.post(
            &path("complete"),
            &p.op,
            json!({"outcome": "succeeded", "notes": "x"}),
        )
        .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;

    // Stage 1, the technology head; then stage 2, the management department.
    let c = body(srv.post(&path("approve"), &p.lead, json!({})).await).await;
    assert_eq!(c["status"], "submitted");
    assert_eq!(c["approval"]["current_stage"], 1);
    let r = srv
        .post(
            &path("approve"),
            &p.mgr,
            json!({"comment": "同意 / approved"}),
        )
        .await;
    let c = body(r).await;
    assert_eq!(c["status"], "approved");
    assert!(c["approved_at"].is_string());
    problem(
        srv.post(&path("approve"), &p.mgr, json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    problem(
        srv.post(&path("reject"), &p.mgr, json!({"reason": "late"}))
            .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    // Only the assignee starts, and only inside the window (which is days away).
    problem(
        srv.call(Method::POST, &path("start"), Some(&p.op2), None)
            .await,
        StatusCode::FORBIDDEN,
        "not_assignee",
    )
    .await;
    problem(
        srv.call(Method::POST, &path("start"), Some(&p.op), None)
            .await,
        StatusCode::CONFLICT,
        "outside_window",
    )
    .await;
    // Only the requester cancels.
    problem(
        srv.post(&path("cancel"), &p.op2, json!({"reason": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "not_requester",
    )
    .await;
    problem(
        srv.post(&path("cancel"), &p.op, json!({})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let c = body(
        srv.post(
            &path("cancel"),
            &p.op,
            json!({"reason": "供应商推迟 / vendor delay"}),
        )
        .await,
    )
    .await;
    assert_eq!(c["status"], "cancelled");
    problem(
        srv.post(&path("cancel"), &p.op, json!({"reason": "again"}))
            .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;

    // Reject path.
    let id2 = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 300), 1))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let c = body(
        srv.post(
            &format!("/api/v1/changes/{id2}/reject"),
            &p.lead,
            json!({"reason": "回退方案不充分 / weak rollback plan"}),
        )
        .await,
    )
    .await;
    assert_eq!(c["status"], "rejected");

    // The timeline and the audit trail name who did what.
    let detail = body(srv.get(&format!("/api/v1/changes/{id}"), &p.viewer).await).await;
    let steps: Vec<_> = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["to_status"].clone(), e["actor"].clone()))
        .collect();
    assert_eq!(
        steps,
        vec![
            (json!("submitted"), json!("op.zhang")),
            (json!("submitted"), json!("lead.wang")),
            (json!("approved"), json!("mgr.chen")),
            (json!("cancelled"), json!("op.zhang"))
        ]
    );
    let audit = body(srv.get("/api/v1/audit?limit=50", &p.admin).await).await;
    let approve = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "change.approve" && e["outcome"] == "ok")
        .unwrap();
    assert_eq!(approve["actor"], "mgr.chen");
    assert!(
        approve["policy_ids"]
            .as_str()
            .unwrap()
            .contains("role.manager")
    );
    let refused = audit
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "change.approve" && e["code"] == "self_approval")
        .unwrap();
    assert_eq!(refused["actor"], "op.mgr");
    assert_eq!(
        body(srv.get("/api/v1/audit/verify", &p.admin).await).await["ok"],
        true
    );
});

crate::both_backends!(emergency_path, |srv| {
    let p = setup(srv).await;
    let now = Utc::now();
    let mut req = change(now - TimeDelta::minutes(5), 2);
    req["emergency"] = json!(true);
    req["justification"] = json!("生产故障，客户无法登录 / production outage");
    let c = body(srv.post("/api/v1/changes", &p.op, req).await).await;
    assert_eq!(c["status"], "submitted");
    assert_eq!(c["emergency"], true);
    let id = c["id"].as_i64().unwrap();
    let path = |step: &str| format!("/api/v1/changes/{id}/{step}");
    // Never starts before approval.
    problem(
        srv.call(Method::POST, &path("start"), Some(&p.op), None)
            .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    assert_eq!(
        body(srv.post(&path("approve"), &p.mgr, json!({})).await).await["status"],
        "approved"
    );
    let c = body(
        srv.call(Method::POST, &path("start"), Some(&p.op), None)
            .await,
    )
    .await;
    assert_eq!(c["status"], "in_progress");
    problem(
        srv.post(
            &path("complete"),
            &p.op2,
            json!({"outcome": "succeeded", "notes": "x"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "not_assignee",
    )
    .await;
    problem(
        srv.post(
            &path("complete"),
            &p.op,
            json!({"outcome": "exploded", "notes": "x"}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;
    let c = body(
        srv.post(
            &path("complete"),
            &p.op,
            json!({"outcome": "succeeded", "notes": "已恢复 / restored"}),
        )
        .await,
    )
    .await;
    assert_eq!(c["status"], "completed");
    assert_eq!(c["outcome"], "succeeded");
    assert_eq!(
        c["review_pending"], true,
        "open until the post-implementation review"
    );
    problem(
        srv.post(&path("review"), &p.op, json!({"notes": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let c = body(
        srv.post(
            &path("review"),
            &p.mgr,
            json!({"notes": "根因已查明 / root cause found"}),
        )
        .await,
    )
    .await;
    assert_eq!(c["review_pending"], false);
    problem(
        srv.post(&path("review"), &p.mgr, json!({"notes": "again"}))
            .await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;
    // Somebody holding both roles neither approves a change assigned to them nor reviews an
    // emergency they carried out.
    let (_, both) = srv
        .user_holding_by_hand(&p.admin, "op.mgr", &["tech_operator", "manager"])
        .await;
    let mut req = change(now - TimeDelta::minutes(5), 2);
    req["emergency"] = json!(true);
    req["justification"] = json!("磁盘故障 / disk failure");
    req["assignee"] = json!("op.mgr");
    let id2 = body(srv.post("/api/v1/changes", &p.op, req).await).await["id"]
        .as_i64()
        .unwrap();
    let path2 = |step: &str| format!("/api/v1/changes/{id2}/{step}");
    let doc = problem(
        srv.post(&path2("approve"), &both, json!({})).await,
        StatusCode::FORBIDDEN,
        "self_approval",
    )
    .await;
    assert_eq!(doc["policy_ids"], json!(["sod.no_self_approval"]));
    assert_eq!(
        body(srv.post(&path2("approve"), &p.mgr, json!({})).await).await["status"],
        "approved"
    );
    srv.call(Method::POST, &path2("start"), Some(&both), None)
        .await;
    let done = body(
        srv.post(
            &path2("complete"),
            &both,
            json!({"outcome": "rolled_back", "notes": "已回退"}),
        )
        .await,
    )
    .await;
    assert_eq!(done["status"], "completed");
    let doc = problem(
        srv.post(&path2("review"), &both, json!({"notes": "x"}))
            .await,
        StatusCode::FORBIDDEN,
        "self_review",
    )
    .await;
    assert_eq!(doc["policy_ids"], json!(["sod.independent_review"]));
    // Flagged on the calendar.
    let today = now.with_timezone(&Shanghai).date_naive();
    let days = body(
        srv.get(&format!("/api/v1/calendar?from={today}&to={today}"), &p.mgr)
            .await,
    )
    .await;
    assert_eq!(days[0]["changes"][0]["emergency"], true);
});

crate::both_backends!(approved_changes_never_started_expire, |srv| {
    let p = setup(srv).await;
    let now = Utc::now();
    let mut req = change(now - TimeDelta::minutes(10), 1);
    req["planned_end"] = json!(rfc(now + TimeDelta::seconds(2)));
    req["emergency"] = json!(true);
    req["justification"] = json!("紧急补丁 / hotfix");
    let id = body(srv.post("/api/v1/changes", &p.op, req).await).await["id"]
        .as_i64()
        .unwrap();
    let approved = body(
        srv.post(&format!("/api/v1/changes/{id}/approve"), &p.mgr, json!({}))
            .await,
    )
    .await;
    assert_eq!(approved["status"], "approved");
    assert_eq!(
        changeguard::changes::expire_overdue(&srv.app)
            .await
            .unwrap(),
        0
    );
    srv.advance(TimeDelta::seconds(3));
    assert_eq!(
        changeguard::changes::expire_overdue(&srv.app)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        changeguard::changes::expire_overdue(&srv.app)
            .await
            .unwrap(),
        0,
        "once"
    );
    let c = body(srv.get(&format!("/api/v1/changes/{id}"), &p.viewer).await).await;
    assert_eq!(c["status"], "expired");
    assert_eq!(
        c["events"].as_array().unwrap().last().unwrap()["actor"],
        Value::Null
    );
});

crate::both_backends!(rescheduling_checks_the_original_notice, |srv| {
    let p = setup(srv).await;
    let (today, earliest) = notice_today(srv, &p.admin).await;
    let id = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 600), 2))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    approve(srv, &p.lead, &p.mgr, id).await;
    let change_path = format!("/api/v1/changes/{id}");
    let patch = |b: Value| srv.call(Method::PATCH, &change_path, Some(&p.op), Some(b));
    // Earlier than the original notice allows: refused with the original notice date.
    let doc = problem(
        patch(
            json!({"planned_start": rfc(at(earliest, -60)), "planned_end": rfc(at(earliest, 60))}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "insufficient_notice",
    )
    .await;
    assert_eq!(doc["notified_on"], today.to_string());
    problem(
        patch(json!({"category": "hardware"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "immutable_field",
    )
    .await;
    problem(
        patch(json!({"systems": ["core-db"]})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "immutable_field",
    )
    .await;
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/changes/{id}"),
            Some(&p.op2),
            Some(json!({"title": "x"})),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "not_requester").await;
    // A later window: back to submitted, approval cleared, still the original notice.
    let c = body(patch(json!({"planned_start": rfc(at(earliest, 60 * 24 + 600)), "planned_end": rfc(at(earliest, 60 * 24 + 720))})).await).await;
    assert_eq!(c["status"], "submitted");
    assert_eq!(c["approved_at"], Value::Null);
    assert_eq!(c["notified_on"], today.to_string());
    assert_eq!(c["planned_start"], json!(at(earliest, 60 * 24 + 600)));
});

crate::both_backends!(conflicts_calendar_feed_and_report, |srv| {
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    // Two overlapping windows on the same system, one on another system.
    let a = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 22 * 60), 4))
            .await,
    )
    .await;
    let b = body(
        srv.post("/api/v1/changes", &p.op2, change(at(earliest, 23 * 60), 1))
            .await,
    )
    .await;
    let mut other = change(at(earliest, 22 * 60), 4);
    other["systems"] = json!(["core-db"]);
    other["category"] = json!("database");
    other["action"] = json!("update");
    let c = body(srv.post("/api/v1/changes", &p.op, other).await).await;
    let (a, b, c) = (a["id"].as_i64().unwrap(), b, c["id"].as_i64().unwrap());
    assert_eq!(b["conflicts"][0]["id"], a);
    let a_view = body(srv.get(&format!("/api/v1/changes/{a}"), &p.mgr).await).await;
    assert_eq!(a_view["conflicts"].as_array().unwrap().len(), 1);
    let b = b["id"].as_i64().unwrap();
    // Filters.
    let list = body(srv.get("/api/v1/changes?system=core-db", &p.mgr).await).await;
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![c]
    );
    let list = body(
        srv.get(
            "/api/v1/changes?category=software_upgrade&status=submitted",
            &p.mgr,
        )
        .await,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    for item in list.as_array().unwrap() {
        let other = if item["id"] == a { b } else { a };
        assert_eq!(
            item["conflicts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_i64().unwrap())
                .collect::<Vec<_>>(),
            vec![other]
        );
    }
    problem(
        srv.get("/api/v1/changes?status=done", &p.mgr).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;

    // The calendar: change A runs 22:00 to 02:00, so it shows on the earliest day and the next.
    let day0 = earliest;
    let day1 = earliest.succ_opt().unwrap();
    let day2 = day1.succ_opt().unwrap();
    let days = body(
        srv.get(
            &format!(
                "/api/v1/calendar?from={}&to={}",
                day0.pred_opt().unwrap(),
                day2
            ),
            &p.mgr,
        )
        .await,
    )
    .await;
    let days = days.as_array().unwrap();
    assert_eq!(days.len(), 4);
    let ids = |d: &Value| {
        d["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(ids(&days[0]), Vec::<i64>::new());
    assert_eq!(ids(&days[1]), vec![a, c, b]);
    assert_eq!(ids(&days[2]), vec![a, c]);
    assert_eq!(ids(&days[3]), Vec::<i64>::new());
    let on_day1 = &days[1]["changes"].as_array().unwrap()[0];
    assert_eq!(on_day1["conflicts"], json!([b]));
    assert!(days[1]["kind"].is_string() && days[1]["working"].is_boolean());
    problem(
        srv.get("/api/v1/calendar?from=2026-01-01&to=2027-06-01", &p.mgr)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_range",
    )
    .await;
    problem(
        srv.get("/api/v1/calendar?from=2026-01-01", &p.mgr).await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;

    // The personal feed, parsed back by an iCalendar parser.
    let feed = body(
        srv.call(Method::POST, "/api/v1/me/calendar-feed", Some(&p.mgr), None)
            .await,
    )
    .await;
    let token = feed["token"].as_str().unwrap().to_string();
    assert!(
        feed["url"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/api/v1/calendar.ics?token={token}"))
    );
    let r = srv
        .client
        .get(srv.url(&format!("/api/v1/calendar.ics?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    let text = r.text().await.unwrap();
    let parsed: icalendar::Calendar = text.parse().unwrap();
    use icalendar::Component;
    let events: Vec<_> = parsed.events().collect();
    assert_eq!(events.len(), 3);
    let ev = events
        .iter()
        .find(|e| e.get_uid() == Some(&format!("change-{a}@changeguard")))
        .unwrap();
    assert_eq!(ev.property_value("STATUS"), Some("TENTATIVE"));
    assert!(ev.get_summary().unwrap().contains("软件升级"));
    assert!(text.contains("DTSTART;TZID=Asia/Shanghai:"), "{text}");
    assert!(text.contains("BEGIN:VTIMEZONE"), "{text}");
    // Approve A: CONFIRMED, same UID.
    approve(srv, &p.lead, &p.mgr, a).await;
    let text = srv
        .client
        .get(srv.url(&format!("/api/v1/calendar.ics?token={token}")))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let parsed: icalendar::Calendar = text.parse().unwrap();
    let ev = parsed
        .events()
        .find(|e| e.get_uid() == Some(&format!("change-{a}@changeguard")))
        .unwrap()
        .clone();
    assert_eq!(ev.property_value("STATUS"), Some("CONFIRMED"));
    // Rotating invalidates the old token; revoking ends it.
    let new = body(
        srv.call(Method::POST, "/api/v1/me/calendar-feed", Some(&p.mgr), None)
            .await,
    )
    .await;
    let r = srv
        .client
        .get(srv.url(&format!("/api/v1/calendar.ics?token={token}")))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED, "invalid_feed_token").await;
    assert_eq!(
        srv.call(
            Method::DELETE,
            "/api/v1/me/calendar-feed",
            Some(&p.mgr),
            None
        )
        .await
        .status(),
        StatusCode::NO_CONTENT
    );
    let r = srv
        .client
        .get(srv.url(&format!(
            "/api/v1/calendar.ics?token={}",
            new["token"].as_str().unwrap()
        )))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::UNAUTHORIZED, "invalid_feed_token").await;

    // The report.
    srv.post("/api/v1/changes", &p.op, change(at(earliest, -1), 1))
        .await; // refused: late
    let from = Utc::now().with_timezone(&Shanghai).date_naive();
    let to = day2;
    let rep = body(
        srv.get(
            &format!("/api/v1/reports/changes?from={from}&to={to}"),
            &p.viewer,
        )
        .await,
    )
    .await;
    assert_eq!(rep["total"], 3);
    assert_eq!(
        rep["by_category"],
        json!({"database": 1, "software_upgrade": 2})
    );
    assert_eq!(rep["by_status"], json!({"approved": 1, "submitted": 2}));
    assert_eq!(rep["emergency"], 0);
    assert_eq!(rep["refused_insufficient_notice"], 1);
    assert_eq!(rep["success_rate"], Value::Null);
});

/// A freeze window (a copy of the shipped policies with one enabled) refuses normal changes
/// planned inside it, but not emergencies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freeze_windows_refuse_normal_changes() {
    for backend in [Backend::Sqlite, Backend::Postgres] {
        if backend == Backend::Postgres && crate::harness::postgres_url().is_none() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        crate::rbac::copy_dir(&shipped_policies(), dir.path());
        let probe = TestServer::start(backend).await;
        let admin = probe.admin().await;
        let (_, earliest) = notice_today(&probe, &admin).await;
        probe.stop().await;
        let file = dir.path().join("change-policy.toml");
        let mut text = std::fs::read_to_string(&file).unwrap();
        let (s, e) = (
            at(earliest, 0).with_timezone(&Shanghai),
            at(earliest, 3 * 24 * 60).with_timezone(&Shanghai),
        );
        text.push_str(&format!(
            "\n[[freeze_windows]]\nname = \"年终决算 / Year-end closing\"\nstart = {}\nend = {}\n",
            s.to_rfc3339(),
            e.to_rfc3339()
        ));
        // Software upgrades go through one stage, the deputy's (a category's own stages).
        text.push_str(
            "\n[[categories.software_upgrade.stages]]\nname = \"deputy\"\ntitle_zh = \"副经理审批\"\ntitle_en = \"Deputy\"\nrole = \"deputy\"\n",
        );
        std::fs::write(&file, text).unwrap();
        // A deputy who may approve normal changes but not emergencies.
        let roles = dir.path().join("roles.toml");
        let text = std::fs::read_to_string(&roles).unwrap().replacen(
            "grantable = [\"admin\",",
            "grantable = [\"deputy\", \"admin\",",
            1,
        );
        std::fs::write(
            &roles,
            text + "\n[roles.deputy]\ntitle_zh = \"副经理\"\ntitle_en = \"Deputy\"\ndescription = \"审批普通变更 / Approves normal changes\"\n",
        )
        .unwrap();
        let cedar = dir.path().join("rbac/roles.cedar");
        let text = std::fs::read_to_string(&cedar).unwrap();
        std::fs::write(
            &cedar,
            text + "\n@id(\"role.deputy\")\npermit (principal in Role::\"deputy\", action in [Action::\"change.read\", Action::\"change.approve\"], resource);\n",
        )
        .unwrap();

        let srv = TestServer::start_with(
            backend,
            Options {
                policies: dir.path().to_path_buf(),
                ..Options::default()
            },
        )
        .await;
        let p = setup(&srv).await;
        notice_today(&srv, &p.admin).await;
        let doc = problem(
            srv.post("/api/v1/changes", &p.op, change(at(earliest, 600), 2))
                .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "freeze_window",
        )
        .await;
        assert!(
            doc["freeze_window"]["name"]
                .as_str()
                .unwrap()
                .contains("年终决算")
        );
        // After the window: fine. An emergency inside it: accepted.
        let after = body(
            srv.post(
                "/api/v1/changes",
                &p.op,
                change(at(earliest, 3 * 24 * 60), 2),
            )
            .await,
        )
        .await;
        assert_eq!(after["status"], "submitted");
        let after_id = after["id"].as_i64().unwrap();
        let mut req = change(at(earliest, 600), 2);
        req["emergency"] = json!(true);
        req["justification"] = json!("安全漏洞 / security hole");
        let urgent = body(srv.post("/api/v1/changes", &p.op, req).await).await;
        assert_eq!(urgent["emergency"], true);
        let urgent_id = urgent["id"].as_i64().unwrap();

        // Rescheduling a normal change into the window is refused, and changes nothing.
        let doc = problem(
            srv.call(
                Method::PATCH,
                &format!("/api/v1/changes/{after_id}"),
                Some(&p.op),
                Some(json!({"planned_start": rfc(at(earliest, 600)), "planned_end": rfc(at(earliest, 720))})),
            )
            .await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "freeze_window",
        )
        .await;
        assert!(doc["detail"].as_str().unwrap().contains("封网期"));
        let kept = body(srv.get(&format!("/api/v1/changes/{after_id}"), &p.op).await).await;
        assert_eq!(kept["planned_start"], after["planned_start"]);

        // The deputy approves normal changes, never emergencies.
        let (_, deputy) = srv.user_with(&p.admin, "deputy.he", &["deputy"]).await;
        problem(
            srv.post(
                &format!("/api/v1/changes/{urgent_id}/approve"),
                &deputy,
                json!({}),
            )
            .await,
            StatusCode::FORBIDDEN,
            "emergency_approval_required",
        )
        .await;
        let still = body(
            srv.get(&format!("/api/v1/changes/{urgent_id}"), &p.op)
                .await,
        )
        .await;
        assert_eq!(still["status"], "submitted");
        let approved = body(
            srv.post(
                &format!("/api/v1/changes/{after_id}/approve"),
                &deputy,
                json!({}),
            )
            .await,
        )
        .await;
        assert_eq!(approved["status"], "approved");
        srv.stop().await;
    }
}
