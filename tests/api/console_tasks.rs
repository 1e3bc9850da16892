//! The console pages for everyday work, in a real browser on both databases: the change list
//! filtered and exported (the CSV and the XLSX read back), and the inbox worked by a technology
//! head, a manager and a compliance officer (change approvals, a disclosure's two approvals).

use chrono::{Datelike, NaiveDate, TimeZone};
use chrono_tz::Asia::Shanghai;
use fantoccini::Locator;
use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde_json::{Value, json};

use crate::browser::Browser;
use crate::changes::{notice_today, setup};
use crate::harness::{TestServer, body};

/// Files a change as `token` starting at 22:00 (bank time) on `day`.
async fn file(srv: &TestServer, token: &str, day: NaiveDate, fields: Value) -> i64 {
    let start = Shanghai
        .from_local_datetime(&day.and_hms_opt(22, 0, 0).unwrap())
        .unwrap();
    let mut c = crate::changes::change(start.to_utc(), 1);
    for (k, v) in fields.as_object().unwrap() {
        c[k] = v.clone();
    }
    let r = srv.post("/api/v1/changes", token, c).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    body(r).await["id"].as_i64().unwrap()
}

/// GETs `href` with the browser's cookies (the session is HttpOnly; WebDriver can read it).
async fn download(b: &Browser, srv: &TestServer, href: &str) -> (String, Vec<u8>) {
    let jar: Vec<String> = b
        .client
        .get_all_cookies()
        .await
        .unwrap()
        .iter()
        .map(|c| format!("{}={}", c.name(), c.value()))
        .collect();
    let r = reqwest::Client::new()
        .get(srv.url(href))
        .header(COOKIE, jar.join("; "))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{href}");
    let kind = r.headers()["content-type"].to_str().unwrap().to_string();
    (kind, r.bytes().await.unwrap().to_vec())
}

async fn href(b: &Browser, css: &str) -> String {
    b.client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap()
}

async fn rows(b: &Browser) -> Vec<String> {
    let mut ids = Vec::new();
    for e in b
        .client
        .find_all(Locator::Css("table.changes tbody tr"))
        .await
        .unwrap()
    {
        ids.push(e.attr("data-change").await.unwrap().unwrap());
    }
    ids
}

crate::both_backends!(the_change_list_filters_and_exports, |srv| {
    let Some(b) = Browser::start(&format!("{:?}", srv.backend).to_lowercase()).await else {
        return;
    };
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let core = file(
        srv,
        &p.op,
        earliest,
        json!({"title": "核心数据库升级 <i>一期</i>", "systems": ["core-db"], "risk": "high"}),
    )
    .await;
    let formula = file(
        srv,
        &p.op2,
        earliest.succ_opt().unwrap(),
        json!({"title": "=HYPERLINK(\"http://evil.example\",\"补丁\")", "risk": "low"}),
    )
    .await;
    let third = file(
        srv,
        &p.op,
        earliest.succ_opt().unwrap(),
        json!({"title": "客户服务平台补丁", "description": "修复 50% 的_慢查询"}),
    )
    .await;

    b.login(srv, "op.zhang").await;
    b.goto(srv, "/console/changes").await;
    assert_eq!(
        rows(&b).await,
        [core, formula, third].map(|i| i.to_string()),
        "all three, earliest start first"
    );
    let page = b.text_of("table.changes").await;
    assert!(
        page.contains("核心数据库升级 <i>一期</i>")
            && page.contains("高")
            && page.contains("已提交"),
        "words, not codes; the title shown, not run: {page}"
    );
    // Free text finds the description, literally: `50%` and `_` are not wildcards.
    b.submit("form#change-filters", &[("q", "50% 的_慢")]).await;
    b.wait_text("p.exports", "CSV").await;
    assert_eq!(rows(&b).await, [third.to_string()]);
    b.submit("form#change-filters", &[("q", "5_%")]).await;
    b.wait_for("p.empty").await;
    // Filters combine: high risk on the core database.
    b.goto(
        srv,
        "/console/changes?risk=high&system=core-db&sort=start_desc",
    )
    .await;
    assert_eq!(rows(&b).await, [core.to_string()]);
    b.shot("change-list").await;
    b.fits("change list, 1366 wide").await;

    // The export carries the same filter.
    let csv_href = href(&b, "#export-csv").await;
    assert!(csv_href.contains("risk=high"), "{csv_href}");
    let (kind, csv) = download(&b, srv, &csv_href).await;
    assert_eq!(kind, "text/csv; charset=utf-8");
    assert_eq!(&csv[..3], b"\xEF\xBB\xBF", "UTF-8 with a BOM for Excel");
    let mut reader = csv::Reader::from_reader(&csv[3..]);
    assert_eq!(reader.headers().unwrap().get(1), Some("标题"));
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].get(0), Some(core.to_string().as_str()));
    assert_eq!(records[0].get(1), Some("核心数据库升级 <i>一期</i>"));
    assert_eq!(records[0].get(5), Some("高"));

    // The whole list, in English, as XLSX and CSV: a formula title stays text.
    b.goto(srv, "/console/lang/en").await;
    b.goto(srv, "/console/changes").await;
    let (kind, xlsx) = download(&b, srv, &href(&b, "#export-xlsx").await).await;
    assert_eq!(
        kind,
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    );
    use calamine::Reader as _;
    let mut book = calamine::Xlsx::new(std::io::Cursor::new(xlsx)).unwrap();
    let sheet = book.worksheet_range("Changes").unwrap();
    let cells: Vec<Vec<String>> = sheet
        .rows()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect();
    assert_eq!(cells[0][1], "Title");
    assert_eq!(cells.len(), 4, "{cells:?}");
    assert_eq!(cells[2][0], formula.to_string());
    assert!(cells[2][1].starts_with("=HYPERLINK"), "{cells:?}");
    assert_eq!(cells[2][5], "low");
    let (_, csv) = download(&b, srv, &href(&b, "#export-csv").await).await;
    let text = String::from_utf8(csv).unwrap();
    assert!(
        text.contains("\"'=HYPERLINK(\"\"http://evil.example\"\",\"\"补丁\"\")\""),
        "a spreadsheet reads it as text: {text}"
    );
    // Each export is in the audit trail: who, which form, how many rows, which query.
    let r = srv.get("/api/v1/audit?limit=100", &p.admin).await;
    let exports: Vec<Value> = body(r)
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "change.export")
        .map(|e| serde_json::from_str(e["details"].as_str().unwrap()).unwrap())
        .collect();
    let seen: Vec<(String, u64)> = exports
        .iter()
        .map(|e| {
            (
                e["format"].as_str().unwrap().to_string(),
                e["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("csv".into(), 3), ("xlsx".into(), 3), ("csv".into(), 1)],
        "newest first: {exports:?}"
    );
    // The effective filter; of a text search only that there was one.
    assert_eq!(exports[2]["filter"]["risk"], "high", "{exports:?}");
    assert_eq!(exports[2]["filter"]["system"], "core-db", "{exports:?}");
    assert_eq!(exports[2]["filter"]["sort"], "start_desc", "{exports:?}");
    assert_eq!(exports[2]["filter"]["text_search"], false, "{exports:?}");
    b.goto(srv, "/console/lang/zh").await;

    // My changes: only what I filed.
    b.goto(srv, "/console").await;
    b.click("a[href='/console/changes?mine=1']").await;
    b.wait_text("h1", "我的变更").await;
    assert_eq!(rows(&b).await, [core, third].map(|i| i.to_string()));
    // A calendar day links to its list.
    b.goto(srv, &format!("/console?date={earliest}")).await;
    b.click(&format!("td[data-date='{earliest}'] a.daylist"))
        .await;
    b.wait_text("h1", "变更列表").await;
    assert_eq!(rows(&b).await, [core.to_string()]);
    // A filter the server cannot read is explained, not a 500.
    b.goto(srv, "/console/changes?status=done").await;
    assert!(b.text().await.contains("未知状态"));
    b.client.set_window_size(390, 844).await.unwrap();
    b.goto(srv, "/console/changes").await;
    b.fits("change list on a phone").await;
    b.shot("change-list-phone").await;
    b.client.set_window_size(1366, 900).await.unwrap();
    b.stop().await;
});

crate::both_backends!(the_inbox_is_worked_by_each_role, |srv| {
    let Some(b) = Browser::start(&format!("{:?}", srv.backend).to_lowercase()).await else {
        return;
    };
    let p = setup(srv).await;
    srv.user_with(&p.admin, "comp.liu", &["compliance"]).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let id = file(srv, &p.op, earliest, json!({})).await;

    // The technology head signs in to the inbox: stage 1 waits for them, counted in the header.
    b.login(srv, "lead.wang").await;
    assert_eq!(
        b.client.current_url().await.unwrap().path(),
        "/console/inbox"
    );
    assert_eq!(b.text_of("#nav-inbox .count").await, "1");
    let list = b.text_of("#approvals-list").await;
    assert!(
        list.contains(&format!("{id}")) && list.contains("已提交"),
        "{list}"
    );
    b.shot("inbox").await;
    b.fits("inbox").await;
    // Tab reaches the task's link.
    let mut reached = false;
    for _ in 0..40 {
        b.tab().await;
        let href = b
            .client
            .execute("return document.activeElement.getAttribute('href')", vec![])
            .await
            .unwrap();
        if href.as_str() == Some(&format!("/console/changes/{id}")) {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the change in the inbox");
    b.click(&format!("#approvals-list a[href='/console/changes/{id}']"))
        .await;
    b.click("button.approve").await;
    b.wait_for("li.stage.approved").await;
    b.goto(srv, "/console/inbox").await;
    b.wait_for("p.empty").await;
    assert!(
        b.client
            .find(Locator::Css("#nav-inbox .count"))
            .await
            .is_err()
    );
    b.logout().await;

    // Now the manager's stage waits; and a disclosure request.
    let r = srv
        .post(
            "/api/v1/assets",
            &p.admin,
            json!({"name": "核心系统设计文档 <v3>", "kind": "document",
                   "location": "档案室 A-12", "custodian": "op.li"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let asset = body(r).await["id"].as_i64().unwrap();
    // The operator asks from the register's page.
    b.login(srv, "op.zhang").await;
    b.goto(srv, "/console/assets").await;
    b.submit(
        &format!("[data-asset='{asset}'] form.disclosure-request"),
        &[
            ("recipient", "审计事务所"),
            ("purpose", "年度外部审计 <script>x</script>"),
        ],
    )
    .await;
    b.wait_for(&format!("[data-asset='{asset}'] tr[data-disclosure]"))
        .await;
    let row = b
        .text_of(&format!("[data-asset='{asset}'] tr[data-disclosure]"))
        .await;
    assert!(
        row.contains("待审批") && row.contains("<script>x</script>"),
        "{row}"
    );
    let disclosure: i64 = b
        .client
        .find(Locator::Css(&format!(
            "[data-asset='{asset}'] tr[data-disclosure]"
        )))
        .await
        .unwrap()
        .attr("data-disclosure")
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    b.shot("assets").await;
    b.fits("assets").await;
    b.logout().await;
    b.login(srv, "mgr.chen").await;
    assert_eq!(b.text_of("#nav-inbox .count").await, "2");
    let card = b
        .text_of(&format!("[data-disclosure='{disclosure}']"))
        .await;
    assert!(
        card.contains("核心系统设计文档 <v3>") && card.contains("<script>x</script>"),
        "shown as text: {card}"
    );
    b.shot("inbox-manager").await;
    b.submit(
        &format!("[data-disclosure='{disclosure}'] form:first-of-type"),
        &[],
    )
    .await;
    b.wait_for("#approvals-list").await;
    b.wait_gone(&format!("[data-disclosure='{disclosure}']"))
        .await;
    b.logout().await;

    // The requester is never offered it; compliance gives the second approval.
    b.login(srv, "op.zhang").await;
    b.goto(srv, "/console/inbox").await;
    assert!(
        b.client
            .find(Locator::Css(&format!("[data-disclosure='{disclosure}']")))
            .await
            .is_err()
    );
    b.logout().await;
    b.login(srv, "comp.liu").await;
    let card = b
        .text_of(&format!("[data-disclosure='{disclosure}']"))
        .await;
    assert!(card.contains("已有一方批准"), "{card}");
    b.submit(
        &format!("[data-disclosure='{disclosure}'] form:first-of-type"),
        &[],
    )
    .await;
    b.wait_for("p.empty").await;
    let list = body(
        srv.get(&format!("/api/v1/assets/{asset}/disclosures"), &p.mgr)
            .await,
    )
    .await;
    assert_eq!(list[0]["status"], "approved", "{list}");
    b.goto(srv, "/console/assets").await;
    let row = b
        .text_of(&format!("tr[data-disclosure='{disclosure}']"))
        .await;
    assert!(row.contains("已批准"), "{row}");
    b.stop().await;
});

crate::both_backends!(the_reports_page_draws_the_apis_figures, |srv| {
    let Some(b) = Browser::start(&format!("{:?}", srv.backend).to_lowercase()).await else {
        return;
    };
    let p = setup(srv).await;
    let (today, earliest) = notice_today(srv, &p.admin).await;
    let first = file(srv, &p.op, earliest, json!({"risk": "low"})).await;
    let second = file(
        srv,
        &p.op2,
        earliest.succ_opt().unwrap(),
        json!({"category": "database", "action": "update", "systems": ["core-db"]}),
    )
    .await;
    // One filing refused for late notice: it counts in the period of its refusal.
    let start = Shanghai
        .from_local_datetime(&earliest.pred_opt().unwrap().and_hms_opt(22, 0, 0).unwrap())
        .unwrap();
    let r = srv
        .post(
            "/api/v1/changes",
            &p.op,
            crate::changes::change(start.to_utc(), 1),
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let from = today - chrono::Duration::days(7);
    let to = earliest + chrono::Duration::days(7);
    let api = body(
        srv.get(
            &format!("/api/v1/reports/changes?from={from}&to={to}"),
            &p.mgr,
        )
        .await,
    )
    .await;
    assert_eq!(api["total"], 2, "{api}");
    assert_eq!(api["refused_insufficient_notice"], 1, "{api}");

    b.login(srv, "mgr.chen").await;
    b.goto(srv, &format!("/console/reports?from={from}&to={to}"))
        .await;
    let charts = b
        .client
        .find_all(Locator::Css("figure.chart svg"))
        .await
        .unwrap();
    assert_eq!(charts.len(), 3, "three charts drawn by the server");
    let svg = b.client.source().await.unwrap();
    assert!(
        svg.contains("软件升级") && svg.contains("每周变更数"),
        "labels in the SVG"
    );
    for key in [
        "total",
        "emergency",
        "refused_insufficient_notice",
        "unauthorized_changes",
    ] {
        let n = b
            .text_of(&format!("#report-figures tr[data-figure='{key}'] td.n"))
            .await;
        assert_eq!(n, api[key].to_string(), "{key}");
    }
    for (category, n) in api["by_category"].as_object().unwrap() {
        let shown = b
            .text_of(&format!(
                "#report-figures tr[data-figure='category.{category}'] td.n"
            ))
            .await;
        assert_eq!(shown, n.to_string(), "{category}");
    }
    b.shot("reports").await;
    b.fits("reports, 1366 wide").await;

    // The weekly figures as CSV: the weeks' changes add up to the period's total.
    let (kind, csv) = download(&b, srv, &href(&b, "#report-csv").await).await;
    assert_eq!(kind, "text/csv; charset=utf-8");
    let mut reader = csv::Reader::from_reader(&csv[3..]);
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header[0], "周（周一）");
    let emergencies = header.iter().position(|h| h == "紧急变更").unwrap();
    let refused = header.iter().position(|h| h == "通知不足被拒").unwrap();
    let (mut changes, mut refusals) = (0, 0);
    for rec in reader.records().map(Result::unwrap) {
        changes += (1..emergencies)
            .map(|i| rec[i].parse::<i64>().unwrap())
            .sum::<i64>();
        refusals += rec[refused].parse::<i64>().unwrap();
    }
    assert_eq!(changes, 2);
    assert_eq!(refusals, 1);

    // The printable monthly schedule lists the month's changes in start order.
    b.goto(
        srv,
        &format!(
            "/console/reports/schedule?month={}",
            earliest.format("%Y-%m")
        ),
    )
    .await;
    let mut listed = Vec::new();
    for e in b
        .client
        .find_all(Locator::Css("#schedule tbody tr[data-change]"))
        .await
        .unwrap()
    {
        listed.push(e.attr("data-change").await.unwrap().unwrap());
    }
    let expected: Vec<String> = [(first, earliest), (second, earliest.succ_opt().unwrap())]
        .iter()
        .filter(|(_, d)| d.month() == earliest.month())
        .map(|(id, _)| id.to_string())
        .collect();
    assert_eq!(listed, expected);
    b.shot("schedule").await;
    b.stop().await;
});

/// The id at the end of the page's path (`/console/changes/{id}`).
async fn page_id(b: &Browser) -> i64 {
    let url = b.client.current_url().await.unwrap();
    url.path().rsplit('/').next().unwrap().parse().unwrap()
}

/// Whether the element `css` is there and laid out (as the eye sees it, whatever hides it).
async fn shown(b: &Browser, css: &str) -> bool {
    b.client
        .execute(
            "var e = document.querySelector(arguments[0]); \
             return !!e && e.getClientRects().length > 0;",
            vec![json!(css)],
        )
        .await
        .unwrap()
        .as_bool()
        .unwrap()
}

crate::both_backends!(
    the_filing_form_offers_the_register_the_actions_and_the_templates,
    |srv| {
        let Some(b) = Browser::start(&format!("{:?}", srv.backend).to_lowercase()).await else {
            return;
        };
        let p = setup(srv).await;
        let (_, earliest) = notice_today(srv, &p.admin).await;
        b.login(srv, "op.zhang").await;
        b.goto(srv, "/console/changes/new").await;

        // The systems come from the register, narrowed by what is typed.
        assert!(shown(&b, "#systems input[value='core-db']").await);
        assert!(shown(&b, "#systems input[value='cs-platform']").await);
        b.client
            .find(Locator::Css("#systems-filter"))
            .await
            .unwrap()
            .send_keys("核心")
            .await
            .unwrap();
        assert!(shown(&b, "#systems input[value='core-db']").await);
        assert!(!shown(&b, "#systems input[value='cs-platform']").await);
        b.click("#systems input[value='core-db']").await;

        // The action list offers the chosen category's actions only; the risks are in words.
        let form = b
            .client
            .form(Locator::Css("form#file-change"))
            .await
            .unwrap();
        form.set_by_name("category", "software_upgrade")
            .await
            .unwrap();
        let change = "document.getElementById('category').dispatchEvent(new Event('change'))";
        b.client.execute(change, vec![]).await.unwrap();
        assert!(
            b.client
                .find(Locator::Css("#action optgroup"))
                .await
                .is_err()
        );
        form.set_by_name("category", "database").await.unwrap();
        b.client.execute(change, vec![]).await.unwrap();
        assert!(
            b.client
                .find(Locator::Css("#action optgroup[data-category='hardware']"))
                .await
                .is_err()
        );
        let actions = b.text_of("#action").await;
        assert!(
            actions.contains("修改数据") && !actions.contains("更换设备"),
            "{actions}"
        );
        form.set_by_name("action", "update").await.unwrap();
        let risks = b.text_of("#risk").await;
        assert!(
            risks.contains("低 — ") && risks.contains("高 — "),
            "{risks}"
        );
        form.set_by_name("risk", "low").await.unwrap();
        for (field, value) in [
            ("title", "核心库索引重建"),
            ("description", "重建 t_acct 的索引"),
            ("rollback_plan", "删除新索引"),
            ("planned_start", &format!("{earliest}T22:00")),
            ("planned_end", &format!("{earliest}T23:00")),
        ] {
            form.set_by_name(field, value).await.unwrap();
        }
        b.shot("file-form").await;
        b.fits("filing form").await;
        b.click("form#file-change button[type=submit]").await;
        b.wait_for("p.status").await;
        let id = page_id(&b).await;
        let c = body(srv.get(&format!("/api/v1/changes/{id}"), &p.admin).await).await;
        assert_eq!(c["systems"], json!(["core-db"]), "{c}");
        assert_eq!(c["action"], "update");
        assert_eq!(c["risk"], "low");

        // A standard change is filed from its template and approved by it at once.
        b.goto(srv, "/console/changes/new").await;
        let css = "form[data-template='core_db_statistics']";
        b.wait_for(css).await;
        let t = b.client.form(Locator::Css(css)).await.unwrap();
        t.set_by_name("planned_start", &format!("{earliest}T01:00"))
            .await
            .unwrap();
        t.set_by_name("planned_end", &format!("{earliest}T02:00"))
            .await
            .unwrap();
        b.click(&format!("{css} button[type=submit]")).await;
        b.wait_text("p.status", "已批准").await;
        let std_id = page_id(&b).await;
        let c = body(
            srv.get(&format!("/api/v1/changes/{std_id}"), &p.admin)
                .await,
        )
        .await;
        assert_eq!(c["status"], "approved", "{c}");
        assert_eq!(c["systems"], json!(["core-db"]));
        b.stop().await;
    }
);
