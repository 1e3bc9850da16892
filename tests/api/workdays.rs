//! The working-day calendar and the notice rule over HTTP, and loading a new year.

use chrono::Datelike;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::{body, problem};

/// Test data standing in for next year's notice (the real 2027 notice is not in shared/data):
/// New Year's Day off, and one make-up Saturday.
pub fn year_2027() -> Value {
    json!({
        "source": "国务院办公厅关于2027年部分节假日安排的通知（测试数据 / test data）",
        "days_off": [{"date": "2027-01-01", "name": "元旦"}, {"date": "2027-02-06", "name": "春节"}, {"date": "2027-02-07", "name": "春节"},
                     {"date": "2027-02-08", "name": "春节"}, {"date": "2027-02-09", "name": "春节"}, {"date": "2027-02-10", "name": "春节"},
                     {"date": "2027-02-11", "name": "春节"}, {"date": "2027-02-12", "name": "春节"}],
        "makeup_workdays": [{"date": "2027-02-20", "name": "春节"}]
    })
}

/// Stand-in data for a year after 2027 (test data): New Year's Day off.
pub fn test_year(year: i32) -> Value {
    if year == 2027 {
        return year_2027();
    }
    json!({
        "source": format!("国务院办公厅关于{year}年部分节假日安排的通知（测试数据 / test data）"),
        "days_off": [{"date": format!("{year}-01-01"), "name": "元旦"}],
        "makeup_workdays": []
    })
}

crate::both_backends!(earliest_start_examples, |srv| {
    let admin = srv.admin().await;
    let (_, viewer) = srv.user_with(&admin, "view.only", &["viewer"]).await;
    for (notice, earliest, counted) in [
        (
            "2026-11-23",
            "2026-11-27",
            vec!["2026-11-24", "2026-11-25", "2026-11-26"],
        ),
        (
            "2026-11-27",
            "2026-12-03",
            vec!["2026-11-30", "2026-12-01", "2026-12-02"],
        ),
        (
            "2026-09-30",
            "2026-10-11",
            vec!["2026-10-08", "2026-10-09", "2026-10-10"],
        ),
        (
            "2026-02-13",
            "2026-02-26",
            vec!["2026-02-14", "2026-02-24", "2026-02-25"],
        ),
        (
            "2026-12-28",
            "2027-01-01",
            vec!["2026-12-29", "2026-12-30", "2026-12-31"],
        ),
    ] {
        let r = srv
            .get(
                &format!("/api/v1/working-days/earliest-start?notified_on={notice}"),
                &viewer,
            )
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{notice}");
        assert_eq!(
            body(r).await,
            json!({"notified_on": notice, "earliest_start": earliest, "working_days_counted": counted})
        );
    }
    let r = srv
        .get(
            "/api/v1/working-days/earliest-start?notified_on=2026-12-29",
            &viewer,
        )
        .await;
    let doc = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "calendar_year_missing").await;
    assert_eq!(doc["year"], 2027);
    for bad in ["2026-13-01", "26-1-1", "yesterday", "2026-02-30"] {
        let r = srv
            .get(
                &format!("/api/v1/working-days/earliest-start?notified_on={bad}"),
                &viewer,
            )
            .await;
        problem(r, StatusCode::BAD_REQUEST, "invalid_date").await;
    }
    problem(
        srv.get("/api/v1/working-days/earliest-start", &viewer)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_query",
    )
    .await;
});

crate::both_backends!(days_in_a_range, |srv| {
    let admin = srv.admin().await;
    let days = body(
        srv.get("/api/v1/working-days?from=2026-09-30&to=2026-10-11", &admin)
            .await,
    )
    .await;
    let days = days.as_array().unwrap();
    assert_eq!(days.len(), 12);
    assert_eq!(
        days[0],
        json!({"date": "2026-09-30", "working": true, "kind": "workday", "name": null})
    );
    assert_eq!(days[1]["kind"], "holiday");
    assert_eq!(days[1]["working"], false);
    assert!(days[1]["name"].as_str().unwrap().contains("国庆"));
    assert_eq!(
        days[10],
        json!({"date": "2026-10-10", "working": true, "kind": "makeup_workday", "name": days[10]["name"]})
    );
    assert_eq!(days[11]["kind"], "weekend");
    let r = srv
        .get("/api/v1/working-days?from=2020-01-01&to=2023-01-01", &admin)
        .await;
    problem(r, StatusCode::BAD_REQUEST, "range_too_long").await;
    let r = srv
        .get("/api/v1/working-days?from=2026-12-30&to=2027-01-02", &admin)
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "calendar_year_missing").await;
});

crate::both_backends!(loading_next_year, |srv| {
    let admin = srv.admin().await;
    let (_, viewer) = srv.user_with(&admin, "view.only", &["viewer"]).await;
    let status = body(srv.get("/api/v1/working-days/status", &viewer).await).await;
    let years: Vec<i64> = status["years"]
        .as_array()
        .unwrap()
        .iter()
        .map(|y| y["year"].as_i64().unwrap())
        .collect();
    assert_eq!(years, (2004..=2026).collect::<Vec<_>>());
    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Asia::Shanghai)
        .date_naive();
    if today.year() == 2026 {
        assert_eq!(status["next_year_loaded"], false);
        assert_eq!(
            status["warning"].is_string(),
            today.month() >= 11,
            "{status}"
        );
    }

    // Only calendar.manage may load a year.
    let r = srv
        .call(
            Method::PUT,
            "/api/v1/working-days/years/2027",
            Some(&viewer),
            Some(year_2027()),
        )
        .await;
    problem(r, StatusCode::FORBIDDEN, "forbidden").await;
    // Validation: a date outside the year, a date twice, a make-up day on a weekday.
    for (bad, why) in [
        (
            json!({"source": "x", "days_off": [{"date": "2026-12-31", "name": "元旦"}], "makeup_workdays": []}),
            "2026-12-31",
        ),
        (
            json!({"source": "x", "days_off": [{"date": "2027-01-01", "name": "元旦"}, {"date": "2027-01-01", "name": "元旦"}], "makeup_workdays": []}),
            "2027-01-01",
        ),
        (
            json!({"source": "x", "days_off": [], "makeup_workdays": [{"date": "2027-01-04", "name": "元旦"}]}),
            "2027-01-04",
        ),
        (
            json!({"source": "", "days_off": [], "makeup_workdays": []}),
            "source",
        ),
    ] {
        let r = srv
            .call(
                Method::PUT,
                "/api/v1/working-days/years/2027",
                Some(&admin),
                Some(bad),
            )
            .await;
        let doc = problem(r, StatusCode::UNPROCESSABLE_ENTITY, "calendar_invalid").await;
        assert!(doc["detail"].as_str().unwrap().contains(why), "{doc}");
    }
    let r = srv.call(Method::PUT, "/api/v1/working-days/years/2027", Some(&admin), Some(json!({"source": "x", "days_off": [{"date": "2027-13-01", "name": "x"}], "makeup_workdays": []}))).await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    // Nothing was stored by the refusals.
    let r = srv
        .get(
            "/api/v1/working-days/earliest-start?notified_on=2026-12-29",
            &viewer,
        )
        .await;
    problem(r, StatusCode::UNPROCESSABLE_ENTITY, "calendar_year_missing").await;

    let r = srv
        .call(
            Method::PUT,
            "/api/v1/working-days/years/2027",
            Some(&admin),
            Some(year_2027()),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let loaded = body(r).await;
    assert_eq!(loaded["days_off"], 8);
    assert_eq!(loaded["replaced"], false);
    // In force at once: 12-30, 12-31, then 2027-01-01 is a day off, so Mon 01-04 is the third.
    let r = body(
        srv.get(
            "/api/v1/working-days/earliest-start?notified_on=2026-12-29",
            &viewer,
        )
        .await,
    )
    .await;
    assert_eq!(r["earliest_start"], "2027-01-05");
    // Shared by another instance on the same database (and so kept across restarts).
    let other = srv.second_instance().await;
    let token = other.admin().await;
    let r = body(
        other
            .get(
                "/api/v1/working-days/earliest-start?notified_on=2026-12-29",
                &token,
            )
            .await,
    )
    .await;
    assert_eq!(r["earliest_start"], "2027-01-05");
    let status = body(other.get("/api/v1/working-days/status", &token).await).await;
    assert_eq!(
        status["years"].as_array().unwrap().last().unwrap()["year"],
        2027
    );
    other.stop().await;
    // Audited.
    let audit = body(srv.get("/api/v1/audit?limit=10", &admin).await).await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "calendar.load_year" && e["outcome"] == "ok")
    );
});
