//! Graded approval through the real server (分级审批): stages in order, N of M distinct people,
//! one person once, the high-risk stage, rejection, amending, delegates, reminders and
//! escalation through the scheduler, standard changes.

use chrono::TimeDelta;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::changes::{People, approve, at, change, notice_today, rfc, setup};
use crate::harness::{TestServer, USER_PASSWORD, body, problem};

async fn file(srv: &TestServer, p: &People, risk: &str) -> i64 {
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let mut req = change(at(earliest, 600), 2);
    req["risk"] = json!(risk);
    req["assignee"] = json!("op.li");
    let r = srv.post("/api/v1/changes", &p.op, req).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_i64().unwrap()
}

async fn decide(srv: &TestServer, who: &str, id: i64, step: &str, b: Value) -> reqwest::Response {
    srv.post(&format!("/api/v1/changes/{id}/{step}"), who, b)
        .await
}

async fn approved_by(srv: &TestServer, who: &str, id: i64) -> Value {
    let r = decide(srv, who, id, "approve", json!({})).await;
    let status = r.status();
    let c = body(r).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    c
}

async fn refused(srv: &TestServer, who: &str, id: i64, code: &str) -> Value {
    problem(
        decide(srv, who, id, "approve", json!({})).await,
        StatusCode::FORBIDDEN,
        code,
    )
    .await
}

crate::both_backends!(stages_are_approved_in_order_by_distinct_people, |srv| {
    let p = setup(srv).await;
    let (_, mgr2) = srv.user_with(&p.admin, "mgr.zhao", &["manager"]).await;
    let (_, comp) = srv.user_with(&p.admin, "comp.sun", &["compliance"]).await;
    let id = file(srv, &p, "medium").await;
    let c = body(srv.get(&format!("/api/v1/changes/{id}"), &p.viewer).await).await;
    let stages = &c["approval"]["stages"];
    assert_eq!(stages.as_array().unwrap().len(), 2, "{c}");
    assert_eq!(stages[0]["role"], "tech_lead");
    assert_eq!(stages[0]["state"], "current");
    assert_eq!(stages[1]["role"], "manager");
    assert_eq!(c["approval"]["current_stage"], 0);

    // Out of order: the manager's stage is not the current one.
    let doc = refused(srv, &p.mgr, id, "not_an_approver_of_this_stage").await;
    assert!(
        doc["detail"].as_str().unwrap().contains("科技部负责人审批"),
        "{doc}"
    );
    // The requester and the assignee never approve; a viewer is nobody's approver.
    refused(srv, &p.op, id, "self_approval").await;
    refused(srv, &p.op2, id, "self_approval").await;
    refused(srv, &p.viewer, id, "not_an_approver_of_this_stage").await;
    let c = approved_by(srv, &p.lead, id).await;
    assert_eq!(c["status"], "submitted");
    assert_eq!(c["approval"]["current_stage"], 1);
    assert_eq!(c["approval"]["stages"][0]["state"], "approved");
    assert_eq!(
        c["approval"]["stages"][0]["approvals"][0]["by"]["username"],
        "lead.wang"
    );
    refused(srv, &p.lead, id, "not_an_approver_of_this_stage").await;
    let c = approved_by(srv, &p.mgr, id).await;
    assert_eq!(c["status"], "approved");
    assert_eq!(c["approval"]["current_stage"], Value::Null);
    problem(
        decide(srv, &mgr2, id, "approve", json!({})).await,
        StatusCode::CONFLICT,
        "invalid_transition",
    )
    .await;

    // High risk: a third stage of two more people (managers or compliance).
    let id = file(srv, &p, "high").await;
    approved_by(srv, &p.lead, id).await;
    let c = approved_by(srv, &p.mgr, id).await;
    assert_eq!(c["status"], "submitted");
    assert_eq!(c["approval"]["current_stage"], 2);
    assert_eq!(c["approval"]["stages"][2]["needed"], 2);
    // One person counts once across all stages.
    let doc = refused(srv, &p.mgr, id, "not_an_approver_of_this_stage").await;
    assert!(
        doc["detail"].as_str().unwrap().contains("只计一次"),
        "{doc}"
    );
    let c = approved_by(srv, &comp, id).await;
    assert_eq!(c["status"], "submitted", "one of two");
    refused(srv, &comp, id, "not_an_approver_of_this_stage").await;
    let c = approved_by(srv, &mgr2, id).await;
    assert_eq!(c["status"], "approved");
    let by: Vec<&str> = c["approval"]["stages"][2]["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["by"]["username"].as_str().unwrap())
        .collect();
    assert_eq!(by, vec!["comp.sun", "mgr.zhao"]);

    // Every decision is an audit entry naming its stage.
    let trail = body(srv.get("/api/v1/audit?limit=100", &p.admin).await).await;
    let stages: Vec<i64> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "change.approve" && e["outcome"] == "ok")
        .map(|e| {
            let details: Value = serde_json::from_str(e["details"].as_str().unwrap()).unwrap();
            details["stage"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(stages.len(), 6, "{trail}");
    assert!(stages.contains(&2));
});

crate::both_backends!(a_rejection_rejects_and_amending_clears_every_stage, |srv| {
    let p = setup(srv).await;
    let id = file(srv, &p, "medium").await;
    approved_by(srv, &p.lead, id).await;
    let r = decide(
        srv,
        &p.mgr,
        id,
        "reject",
        json!({"reason": "回退方案不充分 / weak rollback plan"}),
    )
    .await;
    let c = body(r).await;
    assert_eq!(c["status"], "rejected");
    assert_eq!(c["approval"]["stages"][0]["state"], "approved");
    assert_eq!(c["approval"]["stages"][1]["state"], "rejected");
    assert_eq!(
        c["approval"]["stages"][1]["rejection"]["by"]["username"],
        "mgr.chen"
    );

    // Amending after stage 1 clears it: the technology head approves again.
    let id = file(srv, &p, "medium").await;
    approved_by(srv, &p.lead, id).await;
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/changes/{id}"),
            Some(&p.op),
            Some(json!({"title": "客户服务平台升级 v2.4 / platform upgrade"})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let c = body(r).await;
    assert_eq!(c["status"], "submitted");
    assert_eq!(c["approval"]["current_stage"], 0);
    assert_eq!(c["approval"]["stages"][0]["approvals"], json!([]));
    refused(srv, &p.mgr, id, "not_an_approver_of_this_stage").await;
    // Raising the risk brings the third stage.
    let r = srv
        .call(
            Method::PATCH,
            &format!("/api/v1/changes/{id}"),
            Some(&p.op),
            Some(json!({"risk": "high"})),
        )
        .await;
    let c = body(r).await;
    assert_eq!(c["approval"]["stages"].as_array().unwrap().len(), 3, "{c}");
    approve(srv, &p.lead, &p.mgr, file(srv, &p, "low").await).await;
});

crate::both_backends!(a_delegate_decides_within_the_period_only, |srv| {
    let p = setup(srv).await;
    let now = srv.now();
    let period = |from: chrono::DateTime<chrono::Utc>, days: i64| json!({"from": rfc(from), "to": rfc(from + TimeDelta::days(days))});
    let delegation = |delegate: &str, from, days, reason: &str| {
        let mut b = period(from, days);
        b["delegate"] = json!(delegate);
        b["reason"] = json!(reason);
        b
    };
    // Refusals: to a role incompatible with the delegator's, to nobody, for too long, a
    // delegator who approves nothing.
    for (who, b, code) in [
        (
            &p.mgr,
            delegation("op.li", now, 2, "休假"),
            "incompatible_delegate",
        ),
        (
            &p.mgr,
            delegation("ghost", now, 2, "休假"),
            "invalid_delegate",
        ),
        (
            &p.mgr,
            delegation("mgr.chen", now, 2, "休假"),
            "invalid_delegate",
        ),
        (
            &p.mgr,
            delegation("view.wu", now, 120, "休假"),
            "invalid_period",
        ),
        (
            &p.op,
            delegation("view.wu", now, 2, "休假"),
            "nothing_to_delegate",
        ),
    ] {
        problem(
            srv.post("/api/v1/me/delegations", who, b).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
        )
        .await;
    }
    problem(
        srv.post(
            "/api/v1/me/delegations",
            &p.lead,
            json!({"delegate": "op.li", "from": rfc(now), "to": rfc(now), "reason": "x", "extra": 1}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_body",
    )
    .await;

    // The technology head, away for two days, names op.li (a compatible role).
    let r = srv
        .post(
            "/api/v1/me/delegations",
            &p.lead,
            delegation("op.li", now, 2, "出差 / business trip"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let d = body(r).await;
    assert_eq!(d["in_force"], true);
    assert_eq!(d["delegate"]["username"], "op.li");
    problem(
        srv.post(
            "/api/v1/me/delegations",
            &p.lead,
            delegation("view.wu", now + TimeDelta::days(1), 2, "again"),
        )
        .await,
        StatusCode::CONFLICT,
        "delegation_overlaps",
    )
    .await;
    let mine = body(srv.get("/api/v1/me/delegations", &p.op2).await).await;
    assert_eq!(mine["received"][0]["delegator"]["username"], "lead.wang");

    // op.li decides stage 1 of op.zhang's change for the head, recorded as on behalf of.
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let id = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 600), 2))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    let c = approved_by(srv, &p.op2, id).await;
    let a = &c["approval"]["stages"][0]["approvals"][0];
    assert_eq!(a["by"]["username"], "op.li");
    assert_eq!(a["on_behalf_of"]["username"], "lead.wang");
    // Stage 2 is the manager's: the head is no approver of it (and counted already).
    refused(srv, &p.lead, id, "not_an_approver_of_this_stage").await;

    // Never for a change the delegate requested or carries out.
    let own = body(
        srv.post("/api/v1/changes", &p.op2, change(at(earliest, 900), 2))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    refused(srv, &p.op2, own, "self_approval").await;
    problem(
        decide(
            srv,
            &p.op2,
            own,
            "approve",
            json!({"on_behalf_of": "mgr.chen"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "self_approval",
    )
    .await;

    // After the period: nothing.
    let other = body(
        srv.post("/api/v1/changes", &p.op, change(at(earliest, 1200), 2))
            .await,
    )
    .await["id"]
        .as_i64()
        .unwrap();
    srv.advance(TimeDelta::days(2) + TimeDelta::minutes(1));
    let op2 = srv.token("op.li", USER_PASSWORD).await;
    refused(srv, &op2, other, "not_an_approver_of_this_stage").await;
    problem(
        decide(
            srv,
            &op2,
            other,
            "approve",
            json!({"on_behalf_of": "lead.wang"}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "no_delegation",
    )
    .await;
    // A revoked delegation ends at once.
    let lead = srv.token("lead.wang", USER_PASSWORD).await;
    let d = body(
        srv.post(
            "/api/v1/me/delegations",
            &lead,
            delegation("op.li", srv.now(), 1, "再次出差"),
        )
        .await,
    )
    .await;
    let r = srv
        .call(
            Method::DELETE,
            &format!("/api/v1/me/delegations/{}", d["id"]),
            Some(&lead),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    refused(srv, &op2, other, "not_an_approver_of_this_stage").await;
});

/// The outbox rows of `kind` about change `id`.
async fn notices(srv: &TestServer, reader: &str, id: i64, kind: &str) -> Vec<Value> {
    body(
        srv.get(&format!("/api/v1/notifications?change_id={id}"), reader)
            .await,
    )
    .await
    .as_array()
    .unwrap()
    .iter()
    .filter(|n| n["kind"] == kind)
    .cloned()
    .collect()
}

crate::both_backends!(a_waiting_stage_is_reminded_then_escalated_once, |srv| {
    let p = setup(srv).await;
    let id = file(srv, &p, "medium").await;
    let filed = srv.now();
    let app = &srv.app;
    let calendar = app.calendar().await.unwrap();
    let policy = &app.policies.change;
    let waited = |now| {
        calendar
            .working_minutes(
                (filed, now),
                policy.timezone,
                (policy.approval.work_starts, policy.approval.work_ends),
            )
            .unwrap()
    };
    // Moves the clock by quarter hours until the stage has waited `minutes` working minutes.
    let wait_until = |minutes: i64| {
        while waited(srv.now()) < minutes {
            srv.advance(TimeDelta::minutes(15));
        }
    };
    let other = srv.second_instance().await;
    // Not yet due: nothing.
    assert_eq!(
        changeguard::changes::nudge_waiting(app, srv.now())
            .await
            .unwrap(),
        0
    );
    wait_until(4 * 60);
    // The scheduler reminds the stage's approvers (the technology head) once; the other
    // instance, and a later run, send nothing more.
    changeguard::notify::schedule::tick(app, srv.now())
        .await
        .unwrap();
    assert_eq!(
        changeguard::changes::nudge_waiting(&other.app, srv.now())
            .await
            .unwrap(),
        0
    );
    let mgr = srv.token("mgr.chen", USER_PASSWORD).await;
    let reminders = notices(srv, &mgr, id, "approval_reminder").await;
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(
        reminders[0]["recipients"],
        json!(["lead.wang@bank.example"])
    );
    assert!(
        notices(srv, &mgr, id, "approval_escalated")
            .await
            .is_empty()
    );

    // Later: escalated to the stage's escalate_to role (manager), once across instances.
    wait_until(8 * 60);
    let now = srv.now();
    let (a, b) = tokio::join!(
        changeguard::changes::nudge_waiting(app, now),
        changeguard::changes::nudge_waiting(&other.app, now)
    );
    assert_eq!(a.unwrap() + b.unwrap(), 1, "sent once");
    changeguard::notify::schedule::tick(&other.app, now + TimeDelta::minutes(5))
        .await
        .unwrap();
    let mgr = srv.token("mgr.chen", USER_PASSWORD).await;
    let escalated = notices(srv, &mgr, id, "approval_escalated").await;
    assert_eq!(escalated.len(), 1, "{escalated:?}");
    let to = escalated[0]["recipients"].to_string();
    assert!(
        to.contains("mgr.chen@bank.example") && to.contains("op.zhang"),
        "{to}"
    );
    assert_eq!(notices(srv, &mgr, id, "approval_reminder").await.len(), 1);
    let admin = srv.admin().await;
    let trail = body(srv.get("/api/v1/audit?limit=50", &admin).await).await;
    let nudges = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"]
                .as_str()
                .unwrap()
                .starts_with("change.approval_")
        })
        .count();
    assert_eq!(nudges, 2);

    // Stage 1 approved: stage 2 waits afresh (nothing due yet).
    let lead = srv.token("lead.wang", USER_PASSWORD).await;
    approved_by(srv, &lead, id).await;
    assert_eq!(
        changeguard::changes::nudge_waiting(app, srv.now())
            .await
            .unwrap(),
        0
    );
    other.stop().await;
});

crate::both_backends!(
    a_standard_change_is_approved_at_filing_but_keeps_the_notice_rule,
    |srv| {
        let p = setup(srv).await;
        let (_, earliest) = notice_today(srv, &p.admin).await;
        let templates = body(srv.get("/api/v1/standard-changes", &p.op).await).await;
        assert!(
            templates
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["key"] == "core_db_statistics"),
            "{templates}"
        );
        let window = |start| json!({"planned_start": rfc(start), "planned_end": rfc(start + TimeDelta::hours(1))});
        let path = "/api/v1/standard-changes/core_db_statistics/changes";
        // Art. 20 applies: too early is refused, and nothing is stored.
        let too_early = at(earliest.pred_opt().unwrap(), 600);
        problem(
            srv.post(path, &p.op, window(too_early)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "insufficient_notice",
        )
        .await;
        let mut bad = window(at(earliest, 600));
        bad["systems"] = json!(["cs-platform"]);
        problem(
            srv.post(path, &p.op, bad).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_systems",
        )
        .await;
        problem(
            srv.post(path, &p.mgr, window(at(earliest, 600))).await,
            StatusCode::FORBIDDEN,
            "forbidden",
        )
        .await;
        problem(
            srv.post(
                "/api/v1/standard-changes/nope/changes",
                &p.op,
                window(at(earliest, 600)),
            )
            .await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
        let listed = body(srv.get("/api/v1/changes", &p.viewer).await).await;
        assert_eq!(listed.as_array().unwrap().len(), 0, "nothing stored");

        let r = srv.post(path, &p.op, window(at(earliest, 600))).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let c = body(r).await;
        assert_eq!(c["status"], "approved");
        assert_eq!(c["category"], "database");
        assert_eq!(c["action"], "update");
        assert_eq!(c["approved_by"], Value::Null);
        assert_eq!(
            c["approval"]["standard_change"]["key"],
            "core_db_statistics"
        );
        assert_eq!(c["approval"]["stages"], json!([]));
        let id = c["id"].as_i64().unwrap();
        let detail = body(srv.get(&format!("/api/v1/changes/{id}"), &p.viewer).await).await;
        let last = detail["events"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(last["to_status"], "approved");
        assert!(
            last["comment"].as_str().unwrap().contains("变更咨询委员会"),
            "{last}"
        );
        // The management department is still notified (Art. 20).
        let mgr_notices = notices(srv, &p.mgr, id, "filed").await;
        assert_eq!(mgr_notices.len(), 1);
    }
);
