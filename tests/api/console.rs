//! The web console in a real browser (Debian's chromium + chromedriver, headless) against the
//! real server: log in, file a change refused for late notice and read why, refile, approve as a
//! manager, find it on the calendar, read the verified audit trail. Screenshots of the main pages
//! go to `test-artifacts/console/`. In CI a missing browser is a failure, not a skip.

use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use fantoccini::Locator;
use serde_json::json;

use crate::changes::{notice_today, setup};
use crate::harness::TestServer;

use crate::browser::Browser;

crate::both_backends!(a_notice_filed_refused_refiled_approved_and_seen, |srv| {
    let Some(b) = Browser::start(&format!("{:?}", srv.backend).to_lowercase()).await else {
        return;
    };
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let too_early = earliest.pred_opt().unwrap();

    // An operator files one day too early: the page warns before submitting, the server refuses.
    b.login(srv, "op.zhang").await;
    b.shot("calendar").await;
    b.goto(srv, "/console/changes/new").await;
    b.file(too_early, "客户服务平台升级 <b>v2.3</b>").await;
    let hint = b.text_of("#notice-check").await;
    assert!(
        hint.contains("通知期不足") && hint.contains(&earliest.to_string()),
        "{hint}"
    );
    b.shot("file-refused-live").await;
    b.click("form#file-change button[type=submit]").await;
    b.wait_for("p.flash.error").await;
    let refusal = b.text_of("p.flash.error").await;
    assert!(
        refusal.contains("通知时间不足") && refusal.contains(&format!("最早可于 {earliest}")),
        "{refusal}"
    );
    b.shot("file-refused").await;

    // Refiled on the earliest day: accepted, on its own page; the title is shown, not executed.
    b.file(earliest, "客户服务平台升级 <b>v2.3</b>").await;
    b.click("form#file-change button[type=submit]").await;
    b.wait_for("p.status").await;
    let url = b.client.current_url().await.unwrap();
    let id: i64 = url.path().rsplit('/').next().unwrap().parse().unwrap();
    let page = b.text().await;
    assert!(
        page.contains("已提交") && page.contains("<b>v2.3</b>"),
        "{page}"
    );
    // The operator is offered no approval.
    assert!(b.client.find(Locator::Css("button.approve")).await.is_err());
    b.shot("change-submitted").await;
    b.logout().await;

    // The manager is not offered stage 1: the technology head approves it first; then the
    // manager approves stage 2.
    b.login(srv, "mgr.chen").await;
    b.goto(srv, &format!("/console/changes/{id}")).await;
    let stages = b.text_of("ol.stages").await;
    assert!(
        stages.contains("科技部负责人审批") && stages.contains("待审批"),
        "{stages}"
    );
    assert!(b.client.find(Locator::Css("button.approve")).await.is_err());
    b.logout().await;
    b.login(srv, "lead.wang").await;
    b.goto(srv, &format!("/console/changes/{id}")).await;
    b.click("button.approve").await;
    b.wait_for("li.stage.approved").await;
    b.shot("change-stage-1-approved").await;
    b.logout().await;
    b.login(srv, "mgr.chen").await;
    b.goto(srv, &format!("/console/changes/{id}")).await;
    b.click("button.approve").await;
    b.wait_for("p.status.approved").await;
    b.shot("change-approved").await;

    // On the calendar, on the right day and only there.
    b.goto(
        srv,
        &format!("/console?month={}-{:02}", earliest.year(), earliest.month()),
    )
    .await;
    let cell = b
        .client
        .find(Locator::Css(&format!("td[data-date='{earliest}']")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(cell.contains(&format!("#{id}")), "{cell}");
    let link = format!("a[href='/console/changes/{id}']");
    assert_eq!(
        b.client.find_all(Locator::Css(&link)).await.unwrap().len(),
        1
    );
    b.shot("calendar-with-change").await;
    b.fits("month view, 1366 wide").await;
    // The keyboard reaches the skip link first, and the focus is visible.
    let (class, outline) = b.tab().await;
    assert_eq!((class.as_str(), outline.as_str()), ("skip", "solid"));

    // The week view of that day, from the day's own link: the same change, on the same day.
    b.click(&format!("td[data-date='{earliest}'] .date a"))
        .await;
    b.wait_for("table.calendar.week").await;
    let cell = b.text_of(&format!("td[data-date='{earliest}']")).await;
    assert!(
        cell.contains(&format!("#{id}")) && cell.contains("周"),
        "{cell}"
    );
    assert!(
        cell.contains("22:00"),
        "the planned window, bank time: {cell}"
    );
    assert_eq!(
        b.client
            .find_all(Locator::Css("table.calendar.week td.day"))
            .await
            .unwrap()
            .len(),
        7
    );
    b.fits("week view, 1366 wide").await;
    b.shot("week").await;
    b.click("a[rel=next]").await;
    b.wait_for(&format!(
        "td[data-date='{}']",
        earliest + chrono::Duration::days(7)
    ))
    .await;
    b.click("a[rel=prev]").await;
    b.wait_for(&format!(
        "td[data-date='{earliest}'] a[href='/console/changes/{id}']"
    ))
    .await;

    // The change's timeline: filed, then approved by the manager; and the e-mails it sent.
    b.goto(srv, &format!("/console/changes/{id}")).await;
    let events = b
        .client
        .find_all(Locator::Css("ol.timeline li.event"))
        .await
        .unwrap();
    assert_eq!(events.len(), 3);
    let timeline = b.text_of("ol.timeline").await;
    assert!(
        timeline.contains("已提交") && timeline.contains("已批准") && timeline.contains("年"),
        "{timeline}"
    );
    let emails = b.text_of("table.notices").await;
    assert!(
        emails.contains("filed") && emails.contains("@bank.example"),
        "{emails}"
    );
    b.shot("change-timeline").await;

    // The notification queue: a dead letter is offered for retry, and retried.
    let mut tries = 0;
    let nid = loop {
        tries += 1;
        assert!(tries < 150, "no notice was sent");
        let list = crate::harness::body(srv.get("/api/v1/notifications", &p.mgr).await).await;
        let sent: Vec<i64> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["status"] == "sent")
            .filter_map(|n| n["id"].as_i64())
            .collect();
        if let Some(first) = sent.first() {
            break *first;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    srv.sql(&[&format!(
        "UPDATE outbox SET status = 'dead', last_error = 'smtp 550 <mailbox unavailable>' WHERE id = {nid}"
    )])
    .await
    .unwrap();
    b.goto(srv, "/console/admin/notifications").await;
    let queue = b.text_of("table.notices").await;
    assert!(
        queue.contains("死信") && queue.contains("<mailbox unavailable>"),
        "{queue}"
    );
    b.fits("notification queue").await;
    b.shot("notifications").await;
    b.goto(srv, "/console/admin/notifications?status=dead")
        .await;
    b.click(&format!("tr[data-notice='{nid}'] button.retry"))
        .await;
    // Retried: no longer a dead letter.
    b.wait_gone(&format!("tr[data-notice='{nid}']")).await;

    // The personal iCalendar feed: its link is shown once.
    b.goto(srv, "/console").await;
    b.click("form#feed-create button").await;
    b.wait_for("#feed-url").await;
    let url = b
        .client
        .find(Locator::Css("#feed-url"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(url.contains("/api/v1/calendar.ics?token="), "{url}");
    b.shot("calendar-feed").await;

    // The second factor, from the link in the header: the QR code drawn by the server.
    b.click("a[href='/console/me/totp']").await;
    b.wait_for("form[action='/console/me/totp'] button").await;
    b.click("form[action='/console/me/totp'] button").await;
    b.wait_for("figure.qr svg").await;
    let qr = b
        .client
        .find(Locator::Css("figure.qr svg"))
        .await
        .unwrap()
        .rectangle()
        .await
        .unwrap();
    assert!(qr.2 >= 200.0 && qr.3 >= 200.0, "QR code drawn {qr:?}");
    b.shot("totp-enrol").await;

    // English instead of Chinese, then back.
    b.goto(srv, "/console").await;
    b.click("a.lang").await;
    b.wait_for("html[lang='en']").await;
    let nav = b.text_of("nav.main-nav").await;
    assert!(
        nav.contains("Calendar") && !nav.contains("变更日历"),
        "{nav}"
    );
    assert!(b.text_of("h1").await.starts_with("Change calendar"));
    b.shot("calendar-en").await;
    b.click("a.lang").await;
    b.wait_for("html[lang='zh-CN']").await;
    assert!(b.text_of("h1").await.starts_with("变更日历"));

    // A phone's width: nothing scrolls sideways.
    b.client.set_window_size(390, 844).await.unwrap();
    for page in [
        format!("/console?view=week&date={earliest}"),
        format!("/console?month={}-{:02}", earliest.year(), earliest.month()),
        format!("/console/changes/{id}"),
        "/console/admin/notifications".into(),
    ] {
        b.goto(srv, &page).await;
        b.fits(&format!("{page} on a phone")).await;
    }
    b.goto(srv, &format!("/console?view=week&date={earliest}"))
        .await;
    b.shot("week-phone").await;
    b.client.set_window_size(1366, 900).await.unwrap();
    b.logout().await;

    // The admin grants a role with an expiry, registers a system, loads next year's calendar.
    b.login_with(srv, "admin", crate::harness::ADMIN_PASSWORD)
        .await;
    b.goto(srv, "/console/admin/users").await;
    let users = b.text_of("table.users").await;
    assert!(
        users.contains("op.zhang") && users.contains("tech_operator"),
        "{users}"
    );
    b.fits("users").await;
    b.shot("users").await;
    b.click("tr[data-user='view.wu'] a").await;
    b.wait_for("form#grant-role").await;
    let until = chrono::Utc::now().date_naive() + chrono::Duration::days(30);
    b.submit(
        "form#grant-role",
        &[
            ("role", "auditor"),
            ("expires_at", &format!("{until}T18:00")),
        ],
    )
    .await;
    let grant = b.wait_text("tr[data-role='auditor']", "年").await;
    assert!(
        grant.contains(&format!(
            "{}年{}月{}日 18:00",
            until.year(),
            until.month(),
            until.day()
        )),
        "{grant}"
    );
    b.fits("user").await;
    b.shot("user-grant").await;

    b.goto(srv, "/console/admin/systems").await;
    b.submit(
        "form#new-system",
        &[
            ("key", "pay-gw"),
            ("name", "支付网关 <gw>"),
            ("owner_department", "科技部"),
        ],
    )
    .await;
    let systems = b.wait_text("table.systems", "pay-gw").await;
    assert!(
        systems.contains("支付网关 <gw>") && systems.contains("cs-platform"),
        "{systems}"
    );
    b.fits("systems").await;
    b.shot("systems").await;

    b.goto(srv, "/console/admin/calendar").await;
    let next_year = chrono::Utc::now().year() + 1;
    let data = crate::workdays::test_year(next_year);
    let lines = |v: &serde_json::Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{} {}",
                    d["date"].as_str().unwrap(),
                    d["name"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let source = format!("国务院办公厅关于{next_year}年部分节假日安排的通知（控制台加载）");
    b.submit(
        "form#load-year",
        &[
            ("year", &next_year.to_string()),
            ("source", &source),
            ("days_off", &lines(&data["days_off"])),
            ("makeup_workdays", &lines(&data["makeup_workdays"])),
        ],
    )
    .await;
    let years = b
        .wait_text(&format!("tr[data-year='{next_year}']"), "控制台加载")
        .await;
    assert!(years.contains("控制台加载"), "{years}");
    b.fits("calendar years").await;
    b.shot("calendar-years").await;
    b.logout().await;

    // An auditor reads the audit trail: the refusal and the approval are there, the chain holds.
    srv.user_with(&p.admin, "audit.sun", &["auditor"]).await;
    // view.wu was granted auditor in the console: the audit menu is there, until it expires.
    b.login(srv, "view.wu").await;
    b.wait_for("a[href='/console/audit']").await;
    b.logout().await;
    b.login(srv, "audit.sun").await;
    assert!(
        b.client
            .find(Locator::Css("a[href='/console/changes/new']"))
            .await
            .is_err()
    );
    b.goto(srv, "/console/audit").await;
    let audit = b.text().await;
    assert!(audit.contains("链校验通过"), "{audit}");
    assert!(
        audit.contains("change.create") && audit.contains("insufficient_notice"),
        "{audit}"
    );
    assert!(audit.contains("change.approve"), "{audit}");
    assert!(
        audit.contains("role.grant") && audit.contains("notification.retry"),
        "{audit}"
    );
    b.shot("audit").await;
    b.stop().await;
});

// Without a browser: every console page needs a session and its permission, every form its
// CSRF token and our own origin; refusals write nothing.
crate::both_backends!(
    console_pages_need_a_session_the_permission_and_the_token,
    |srv| {
        use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
        use reqwest::{StatusCode, redirect::Policy};
        let p = setup(srv).await;
        let client = reqwest::Client::builder()
            .redirect(Policy::none())
            .build()
            .unwrap();
        let cookie_of = |r: &reqwest::Response, name: &str| {
            r.headers()
                .get_all(SET_COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .find_map(|v| v.strip_prefix(&format!("{name}=")))
                .map(|v| v.split(';').next().unwrap().to_string())
        };
        // No session: every page sends to the login.
        for page in [
            "/console",
            "/console/audit",
            "/console/changes/new",
            "/console/changes/1",
            "/console/changes",
            "/console/changes.csv",
            "/console/changes.xlsx",
            "/console/inbox",
            "/console/start",
            "/console/vault",
            "/console/vault/1",
        ] {
            let r = client.get(srv.url(page)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
            assert_eq!(r.headers()[LOCATION], "/console/login");
        }
        // A viewer signs in.
        let r = client.get(srv.url("/console/login")).send().await.unwrap();
        let csrf = cookie_of(&r, "cg_csrf").unwrap();
        let login = || {
            client
                .post(srv.url("/console/login"))
                .header(COOKIE, format!("cg_csrf={csrf}"))
                .header(ORIGIN, &srv.base)
                .form(&[
                    ("csrf", csrf.as_str()),
                    ("username", "view.wu"),
                    ("password", "a long enough password"),
                ])
                .send()
        };
        let r = login().await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let session = cookie_of(&r, "cg_session").unwrap();
        let csrf = cookie_of(&r, "cg_csrf").unwrap();
        // Another session of the same person has another token: each is bound to its session.
        let other = login().await.unwrap();
        let other_session = cookie_of(&other, "cg_session").unwrap();
        let other_csrf = cookie_of(&other, "cg_csrf").unwrap();
        assert_ne!(csrf, other_csrf);
        let jar = format!("cg_session={session}; cg_csrf={csrf}");
        let get = |path: &str| client.get(srv.url(path)).header(COOKIE, jar.clone()).send();
        assert_eq!(get("/console").await.unwrap().status(), StatusCode::OK);
        assert_eq!(
            get("/console/audit").await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            get("/console/changes/new").await.unwrap().status(),
            StatusCode::FORBIDDEN
        );
        // Forms: a missing token, another origin, a missing permission — all refused.
        let form = [
            ("csrf", csrf.as_str()),
            ("title", "x"),
            ("category", "software_upgrade"),
        ];
        let r = client
            .post(srv.url("/console/changes/new"))
            .header(COOKIE, jar.clone())
            .header(ORIGIN, &srv.base)
            .form(&[("title", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = client
            .post(srv.url("/console/changes/new"))
            .header(COOKIE, jar.clone())
            .header(ORIGIN, "http://evil.example")
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = client
            .post(srv.url("/console/changes/new"))
            .header(COOKIE, jar.clone())
            .header(ORIGIN, &srv.base)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let changes = crate::harness::body(srv.get("/api/v1/changes", &p.admin).await).await;
        assert_eq!(changes.as_array().unwrap().len(), 0);
        // A viewer may read the list, and is given no second-person approval: refused, audited.
        assert_eq!(
            get("/console/changes").await.unwrap().status(),
            StatusCode::OK
        );
        // A date PostgreSQL cannot store is the reader's mistake, explained, never a 500.
        for page in [
            "/console/changes?from=-5000-01-01",
            "/console/changes.csv?to=99999-01-01",
            "/console/reports?from=-5000-01-01&to=2026-01-01",
            "/console/reports/schedule?month=-5000-01",
        ] {
            assert_eq!(
                get(page).await.unwrap().status(),
                StatusCode::BAD_REQUEST,
                "{page}"
            );
        }
        // The vault is not theirs to read, nor its forms to use.
        for page in ["/console/vault", "/console/vault/1"] {
            assert_eq!(
                get(page).await.unwrap().status(),
                StatusCode::FORBIDDEN,
                "{page}"
            );
        }
        for (task, operation) in [
            ("inbox/disclosure/1", "disclosure.approve"),
            ("inbox/grant/1", "credential.grant_approve"),
            ("inbox/role/1", "role_request.approve"),
            ("vault/1/reveal", "credential.reveal"),
            ("vault/1/rotate", "credential.rotate"),
            ("vault/1/grants", "credential.grant"),
            ("vault/1/grants/1/revoke", "credential.grant_revoke"),
        ] {
            let r = client
                .post(srv.url(&format!("/console/{task}")))
                .header(COOKIE, jar.clone())
                .header(ORIGIN, &srv.base)
                .form(&[("csrf", csrf.as_str()), ("verdict", "approve")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{task}");
            let trail =
                crate::harness::body(srv.get("/api/v1/audit?limit=5", &p.admin).await).await;
            assert!(
                trail
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["action"] == operation
                        && e["outcome"] == "refused"
                        && e["actor"] == "view.wu"),
                "{operation} refused and audited: {trail}"
            );
        }
        // A form post must name our origin: neither Origin nor Referer is refused; the token of
        // another session is refused.
        let logout = |jar: String, csrf: String| {
            client
                .post(srv.url("/console/logout"))
                .header(COOKIE, jar)
                .form(&[("csrf", csrf)])
        };
        let r = logout(jar.clone(), csrf.clone()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let other_jar = format!("cg_session={other_session}; cg_csrf={csrf}");
        let r = logout(other_jar, csrf.clone())
            .header(ORIGIN, &srv.base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let r = logout(jar.clone(), csrf.clone())
            .header(
                reqwest::header::REFERER,
                format!("{}/evil", "http://evil.example"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(get("/console").await.unwrap().status(), StatusCode::OK);
        // Logout ends the session for the console too (a Referer of our own pages will do).
        let r = logout(jar.clone(), csrf.clone())
            .header(reqwest::header::REFERER, srv.url("/console"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            get("/console").await.unwrap().status(),
            StatusCode::SEE_OTHER
        );
    }
);

// On https the console's cookies are Secure and carry the `__Host-` prefix (path /, no domain),
// so no sibling host of the bank's domain can plant or read them.
crate::both_backends!(
    on_https_the_console_cookies_are_host_only,
    options = crate::harness::Options {
        public_url: Some("https://changeguard.bank.example".into()),
        ..crate::harness::Options::default()
    },
    |srv| {
        use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
        let admin = srv.admin().await;
        srv.user_with(&admin, "view.wu", &["viewer"]).await;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let headers = |r: &reqwest::Response| -> Vec<String> {
            r.headers()
                .get_all(SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().to_string())
                .collect()
        };
        let r = client.get(srv.url("/console/login")).send().await.unwrap();
        let set = headers(&r);
        let csrf = set
            .iter()
            .find_map(|v| v.strip_prefix("__Host-cg_csrf="))
            .expect("a __Host- CSRF cookie")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let r = client
            .post(srv.url("/console/login"))
            .header(COOKIE, format!("__Host-cg_csrf={csrf}"))
            .header(ORIGIN, &srv.base)
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "view.wu"),
                ("password", crate::harness::USER_PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
        let set = headers(&r);
        for name in ["__Host-cg_session=", "__Host-cg_csrf=", "__Host-cg_device="] {
            let c = set
                .iter()
                .find(|v| v.starts_with(name))
                .unwrap_or_else(|| panic!("{name} in {set:?}"));
            for attr in ["Secure", "HttpOnly", "Path=/;", "SameSite=Strict"] {
                assert!(format!("{c};").contains(attr), "{attr} in {c}");
            }
            assert!(!c.contains("Domain="), "{c}");
        }
        assert!(!set.iter().any(|v| v.starts_with("cg_session=")), "{set:?}");
    }
);

/// A browser without a browser: the console's cookies, by hand.
struct Console<'a> {
    srv: &'a TestServer,
    client: reqwest::Client,
    session: String,
    csrf: String,
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_string())
}

impl<'a> Console<'a> {
    async fn login(srv: &'a TestServer, user: &str, password: &str) -> Console<'a> {
        use reqwest::header::COOKIE;
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let r = client.get(srv.url("/console/login")).send().await.unwrap();
        let csrf = set_cookie(&r, "cg_csrf").unwrap();
        let r = client
            .post(srv.url("/console/login"))
            .header(COOKIE, format!("cg_csrf={csrf}"))
            .header(reqwest::header::ORIGIN, &srv.base)
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", user),
                ("password", password),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "login {user}");
        Console {
            srv,
            session: set_cookie(&r, "cg_session").unwrap(),
            csrf: set_cookie(&r, "cg_csrf").unwrap(),
            client,
        }
    }

    fn jar(&self) -> String {
        format!("cg_session={}; cg_csrf={}", self.session, self.csrf)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.srv.url(path))
            .header(reqwest::header::COOKIE, self.jar())
            .send()
            .await
            .unwrap()
    }

    /// Posts `fields`, with this browser's CSRF token unless `token` is false, from `origin`
    /// (none: from the console's own origin, as a browser sends it).
    async fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        token: bool,
        origin: Option<&str>,
    ) -> reqwest::Response {
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        if token {
            form.push(("csrf", &self.csrf));
        }
        let mut req = self
            .client
            .post(self.srv.url(path))
            .header(reqwest::header::COOKIE, self.jar())
            .form(&form);
        req = req.header(reqwest::header::ORIGIN, origin.unwrap_or(&self.srv.base));
        req.send().await.unwrap()
    }
}

// Every admin page needs a session and its permission (the nav shows it only to holders); every
// admin form needs its permission, this browser's CSRF token and our own origin; a refusal
// writes nothing (but the audit entry of the refusal).
crate::both_backends!(
    admin_pages_and_forms_need_permission_token_and_origin,
    |srv| {
        use reqwest::StatusCode;
        let p = setup(srv).await;
        let mgr_id = crate::harness::body(srv.get("/api/v1/users", &p.admin).await)
            .await
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "mgr.chen")
            .unwrap()["id"]
            .as_i64()
            .unwrap();
        // Something in the outbox to retry: a filed change notifies management.
        let (_, earliest) = notice_today(srv, &p.admin).await;
        let start = format!("{earliest}T22:00:00+08:00");
        let end = format!("{earliest}T23:00:00+08:00");
        let r = srv
            .post(
                "/api/v1/changes",
                &p.op,
                json!({"title": "t", "category": "software_upgrade", "systems": ["cs-platform"],
                   "description": "d", "risk": "low", "rollback_plan": "r",
                   "planned_start": start, "planned_end": end}),
            )
            .await;
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
        // Once the sender is done with it (else it could mark it sent after it was made dead).
        let mut tries = 0;
        let nid = loop {
            let notices =
                crate::harness::body(srv.get("/api/v1/notifications", &p.admin).await).await;
            if notices[0]["status"] == "sent" || tries == 100 {
                break notices[0]["id"].as_i64().unwrap();
            }
            tries += 1;
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        srv.sql(&[&format!(
            "UPDATE outbox SET status = 'dead' WHERE id = {nid}"
        )])
        .await
        .unwrap();

        let pages = [
            "/console/admin/users",
            &format!("/console/admin/users/{mgr_id}"),
            "/console/admin/systems",
            "/console/admin/calendar",
            "/console/admin/notifications",
            "/console?view=week",
        ];
        // No session: to the login.
        let anon = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        for page in pages {
            let r = anon.get(srv.url(page)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        }

        // A viewer: calendar, week, systems register and loaded years; not users nor the queue.
        let viewer = Console::login(srv, "view.wu", "a long enough password").await;
        for (page, status) in [
            ("/console/admin/users", StatusCode::FORBIDDEN),
            (pages[1], StatusCode::FORBIDDEN),
            ("/console/admin/notifications", StatusCode::FORBIDDEN),
            ("/console/admin/systems", StatusCode::OK),
            ("/console/admin/calendar", StatusCode::OK),
            ("/console?view=week", StatusCode::OK),
        ] {
            assert_eq!(viewer.get(page).await.status(), status, "{page}");
        }
        let home = viewer.get("/console").await.text().await.unwrap();
        assert!(
            !home.contains("/console/admin/users")
                && !home.contains("/console/admin/notifications")
        );
        let systems = viewer
            .get("/console/admin/systems")
            .await
            .text()
            .await
            .unwrap();
        assert!(
            !systems.contains("form method=\"post\" action=\"/console/admin/systems"),
            "no forms for a viewer"
        );
        let years = viewer
            .get("/console/admin/calendar")
            .await
            .text()
            .await
            .unwrap();
        assert!(!years.contains("id=\"load-year\""));

        let state = || async {
            let users = crate::harness::body(srv.get("/api/v1/users", &p.admin).await).await;
            let mgr =
                crate::harness::body(srv.get(&format!("/api/v1/users/{mgr_id}"), &p.admin).await)
                    .await;
            let systems = crate::harness::body(srv.get("/api/v1/systems", &p.admin).await).await;
            let years =
                crate::harness::body(srv.get("/api/v1/working-days/status", &p.admin).await).await;
            let dead =
                crate::harness::body(srv.get("/api/v1/notifications?status=dead", &p.admin).await)
                    .await;
            json!([users, mgr, systems, years["years"], dead])
        };
        let before = state().await;
        let next_year = (chrono::Utc::now().year() + 2).to_string();
        let grant_path = format!("/console/admin/users/{mgr_id}/roles");
        let active_path = format!("/console/admin/users/{mgr_id}/active");
        let revoke_path = format!("/console/admin/users/{mgr_id}/roles/manager/revoke");
        let retry_path = format!("/console/admin/notifications/{nid}/retry");
        let forms: Vec<(&str, Vec<(&str, &str)>)> = vec![
            (
                "/console/admin/users",
                vec![
                    ("username", "new.user"),
                    ("display_name", "新用户"),
                    ("department", "科技部"),
                    ("email", "new.user@bank.example"),
                    ("password", "a long enough password"),
                ],
            ),
            (&grant_path, vec![("role", "auditor"), ("expires_at", "")]),
            (&active_path, vec![("active", "false")]),
            (&revoke_path, vec![]),
            (
                "/console/admin/systems",
                vec![
                    ("key", "pay-gw"),
                    ("name", "支付网关"),
                    ("owner_department", "科技部"),
                ],
            ),
            (
                "/console/admin/systems/cs-platform",
                vec![("name", "改名"), ("owner_department", "科技部")],
            ),
            (
                "/console/admin/calendar",
                vec![
                    ("year", &next_year),
                    ("source", "通知"),
                    ("days_off", "2028-01-01 元旦"),
                    ("makeup_workdays", ""),
                ],
            ),
            (&retry_path, vec![]),
        ];
        let admin = Console::login(srv, "admin", crate::harness::ADMIN_PASSWORD).await;
        let mgr = Console::login(srv, "mgr.chen", "a long enough password").await;
        for (path, fields) in &forms {
            // The viewer holds none of these permissions.
            let r = viewer.post(path, fields, true, None).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "viewer {path}");
            // Those who hold it: without the token, and from another origin.
            let holder = if path.contains("notifications") {
                &mgr
            } else {
                &admin
            };
            let r = holder.post(path, fields, false, None).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "no token {path}");
            let r = holder
                .post(path, fields, true, Some("http://evil.example"))
                .await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "other origin {path}");
        }
        assert_eq!(state().await, before, "refusals wrote nothing");
        // The viewer's refusals are audited like the API's.
        let audit = crate::harness::body(srv.get("/api/v1/audit?limit=50", &p.admin).await).await;
        let refused: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["outcome"] == "refused" && e["actor"] == "view.wu")
            .filter_map(|e| e["action"].as_str())
            .collect();
        for op in [
            "user.create",
            "role.grant",
            "user.update",
            "role.revoke",
            "system.create",
            "system.update",
            "calendar.load_year",
            "notification.retry",
        ] {
            assert!(refused.contains(&op), "{op} in {refused:?}");
        }

        // With the permission, the token and our origin, the same forms work.
        let r = admin
            .post(&grant_path, &forms[1].1, true, Some(&srv.base))
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = mgr.post(&retry_path, &[], true, None).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = admin
            .post("/console/admin/users", &forms[0].1, true, None)
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let r = admin
            .post(
                "/console/admin/systems/cs-platform",
                &forms[5].1,
                true,
                None,
            )
            .await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let systems = crate::harness::body(srv.get("/api/v1/systems", &p.admin).await).await;
        assert!(
            systems
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["key"] == "cs-platform" && x["name"] == "改名")
        );
        // Deeds done in the console record the policies that permitted them, as the API's do.
        let audit = crate::harness::body(srv.get("/api/v1/audit?limit=20", &p.admin).await).await;
        for action in ["user.create", "system.update", "notification.retry"] {
            let e = audit
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["action"] == action && e["outcome"] == "ok")
                .unwrap_or_else(|| panic!("{action} in {audit}"));
            assert_ne!(e["policy_ids"], "[]", "{action}: {e}");
        }
        // Disabled, then enabled again.
        for active in ["false", "true"] {
            let r = admin
                .post(&active_path, &[("active", active)], true, None)
                .await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER);
            let u =
                crate::harness::body(srv.get(&format!("/api/v1/users/{mgr_id}"), &p.admin).await)
                    .await;
            assert_eq!(u["active"].to_string(), active);
        }
        let after = state().await;
        assert_ne!(after, before);
        // A domain refusal is explained on the page, in the chosen language.
        let r = admin
            .post("/console/admin/users", &forms[0].1, true, None)
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT);
        let page = r.text().await.unwrap();
        assert!(
            page.contains("class=\"flash error\"") && !page.contains(" / "),
            "{page}"
        );
    }
);

// The console session is renewed while it is alive, and never once it is over.
crate::both_backends!(the_console_session_slides_while_alive, |srv| {
    use reqwest::StatusCode;
    let _p = setup(srv).await;
    let c = Console::login(srv, "view.wu", "a long enough password").await;
    let claims = srv.app.tokens.verify(&c.session, srv.app.now()).unwrap();
    let user_id: i64 = claims.sub.parse().unwrap();
    let now = chrono::Utc::now();
    // A fresh token is not renewed.
    let r = c.get("/console").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(set_cookie(&r, "cg_session").is_none());
    // The same session's token, issued 10 minutes ago (5 minutes left): renewed.
    let old = srv
        .app
        .tokens
        .issue(
            user_id,
            &claims.jti,
            now - chrono::Duration::minutes(10),
            now + chrono::Duration::minutes(5),
        )
        .unwrap();
    let aged = Console {
        session: old.clone(),
        ..c
    };
    let r = aged.get("/console").await;
    assert_eq!(r.status(), StatusCode::OK);
    let fresh = set_cookie(&r, "cg_session").expect("renewed");
    let fresh_claims = srv.app.tokens.verify(&fresh, srv.app.now()).unwrap();
    assert_eq!(fresh_claims.jti, claims.jti, "the same session");
    assert!(fresh_claims.exp >= now.timestamp() + 14 * 60);
    let aged = Console {
        session: fresh,
        ..aged
    };
    assert_eq!(aged.get("/console").await.status(), StatusCode::OK);
    // Past the console session's longest life (10 hours from login): no more renewal.
    srv.sql(&[&format!(
        "UPDATE sessions SET created_at = '2020-01-01T00:00:00+00:00' WHERE id = '{}'",
        claims.jti
    )])
    .await
    .unwrap();
    let aged = Console {
        session: old.clone(),
        ..aged
    };
    let r = aged.get("/console").await;
    assert_eq!(r.status(), StatusCode::OK, "the token itself still holds");
    assert!(set_cookie(&r, "cg_session").is_none(), "not renewed");
    // After logout, an old token is neither accepted nor renewed.
    let r = aged.post("/console/logout", &[], true, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = aged.get("/console").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&r, "cg_session").is_none());

    // A disabled user's session ends on the next request, renewal or not.
    let c = Console::login(srv, "op.zhang", "a long enough password").await;
    let claims = srv.app.tokens.verify(&c.session, srv.app.now()).unwrap();
    let old = srv
        .app
        .tokens
        .issue(
            claims.sub.parse().unwrap(),
            &claims.jti,
            now - chrono::Duration::minutes(10),
            now + chrono::Duration::minutes(5),
        )
        .unwrap();
    let admin = Console::login(srv, "admin", crate::harness::ADMIN_PASSWORD).await;
    let op_id: i64 = claims.sub.parse().unwrap();
    let r = admin
        .post(
            &format!("/console/admin/users/{op_id}/active"),
            &[("active", "false")],
            true,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let aged = Console { session: old, ..c };
    let r = aged.get("/console").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie(&r, "cg_session").is_none());

    // The personal feed: the token and our origin needed; the link works until revoked.
    let viewer = Console::login(srv, "view.wu", "a long enough password").await;
    for (token, origin) in [(false, None), (true, Some("http://evil.example"))] {
        let r = viewer
            .post("/console/calendar-feed", &[], token, origin)
            .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = viewer.post("/console/calendar-feed", &[], true, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    // As the browser reads it (the template escapes `/`).
    let page = r.text().await.unwrap().replace("&#x2f;", "/");
    let path = page
        .split("value=\"")
        .find_map(|v| v.split_once("/api/v1/calendar.ics?token="))
        .map(|(_, rest)| {
            format!(
                "/api/v1/calendar.ics?token={}",
                rest.split('"').next().unwrap()
            )
        })
        .expect("the feed link");
    let ics = reqwest::get(srv.url(&path)).await.unwrap();
    assert_eq!(ics.status(), StatusCode::OK);
    let r = viewer
        .post("/console/calendar-feed/revoke", &[], false, None)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        reqwest::get(srv.url(&path)).await.unwrap().status(),
        StatusCode::OK
    );
    let r = viewer
        .post("/console/calendar-feed/revoke", &[], true, None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        reqwest::get(srv.url(&path)).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );

    // The language switch: a cookie, and back to the page it came from.
    let r = admin
        .client
        .get(srv.url("/console/lang/en"))
        .header(reqwest::header::REFERER, srv.url("/console/admin/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()[reqwest::header::LOCATION],
        "/console/admin/users"
    );
    assert_eq!(set_cookie(&r, "cg_lang").as_deref(), Some("en"));
    let r = admin
        .client
        .get(srv.url("/console/lang/en"))
        .header(reqwest::header::REFERER, "http://evil.example/console/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[reqwest::header::LOCATION], "/console");
});

// Enrolling a second factor from the console: the QR code drawn by the server, the key shown
// once, confirmation with a code; the forms need this browser's token and our origin, and a
// wrong code is refused, audited and enrols nothing.
crate::both_backends!(totp_enrolment_shows_a_qr_code_and_confirms, |srv| {
    use changeguard::vault::totp;
    use reqwest::StatusCode;
    let admin = srv.admin().await;
    let (op_id, _) = srv.user_with(&admin, "op.zhang", &["tech_operator"]).await;
    // Without a console session: to the login page, nothing enrolled.
    let anonymous = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for r in [
        anonymous
            .get(srv.url("/console/me/totp"))
            .send()
            .await
            .unwrap(),
        anonymous
            .post(srv.url("/console/me/totp"))
            .header(reqwest::header::ORIGIN, &srv.base)
            .form(&[("csrf", "x")])
            .send()
            .await
            .unwrap(),
    ] {
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()["location"], "/console/login");
    }
    let c = Console::login(srv, "op.zhang", crate::harness::USER_PASSWORD).await;
    let enrolled = || async {
        changeguard::db::vault::has_confirmed_totp(&srv.app.db, op_id)
            .await
            .unwrap()
    };
    let page = c.get("/console/me/totp").await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.text().await.unwrap().contains("尚未启用二次验证"));
    for (token, origin) in [(false, None), (true, Some("http://evil.example"))] {
        let r = c.post("/console/me/totp", &[], token, origin).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "token {token}, {origin:?}"
        );
        assert!(!r.text().await.unwrap().contains("<svg"));
    }
    let r = c.post("/console/me/totp", &[], true, None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("<svg "), "{html}");
    assert!(
        !html.contains("&lt;svg"),
        "the QR code is inline SVG, not text"
    );
    let secret = html
        .split("id=\"totp-secret\" readonly value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the key shown once");
    let secret = totp::decode(secret).unwrap();
    let step = crate::vault::aligned_step(srv);
    let code = totp::code_at(&secret, step);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let r = c
        .post("/console/me/totp/confirm", &[("code", wrong)], true, None)
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("role=\"alert\""));
    assert!(!enrolled().await);
    let r = c
        .post("/console/me/totp/confirm", &[("code", &code)], true, None)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("id=\"totp-confirmed\""));
    assert!(enrolled().await);
    let page = c.get("/console/me/totp").await.text().await.unwrap();
    assert!(page.contains("二次验证已启用") && page.contains("id=\"totp-current\""));
    // Replacing it needs its current code: a session alone is not enough.
    let r = c.post("/console/me/totp", &[], true, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(!r.text().await.unwrap().contains("<svg"));
    assert!(enrolled().await);
    // The enrolment and the refused code are in the audit trail, like the API's.
    let audit = crate::harness::body(srv.get("/api/v1/audit?limit=50", &admin).await).await;
    let seen: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["actor"] == "op.zhang")
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("totp.enrol", "ok"),
        ("me.totp_confirm", "refused"),
        ("totp.confirm", "ok"),
        ("me.totp_enrol", "refused"),
    ] {
        assert!(
            seen.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {seen:?}"
        );
    }
});

// Rescheduling from the change page: only the requester sees the form; the new window is checked
// against the original notice like PATCH /api/v1/changes/{id}; a refusal changes nothing.
crate::both_backends!(the_requester_reschedules_from_the_change_page, |srv| {
    use reqwest::StatusCode;
    let p = setup(srv).await;
    let (_, earliest) = notice_today(srv, &p.admin).await;
    let window = |d: NaiveDate| {
        (
            format!("{d}T22:00"),
            format!("{d}T23:00"),
            format!("{d}T22:00:00+08:00"),
        )
    };
    let (_, _, start) = window(earliest);
    let r = srv
        .post(
            "/api/v1/changes",
            &p.op,
            json!({"title": "改期测试", "category": "software_upgrade", "systems": ["cs-platform"],
                   "description": "d", "risk": "low", "rollback_plan": "r",
                   "planned_start": start, "planned_end": format!("{earliest}T23:00:00+08:00")}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let id = crate::harness::body(r).await["id"].as_i64().unwrap();
    let path = format!("/console/changes/{id}/reschedule");
    let op = Console::login(srv, "op.zhang", crate::harness::USER_PASSWORD).await;
    let mgr = Console::login(srv, "mgr.chen", crate::harness::USER_PASSWORD).await;
    let page = op
        .get(&format!("/console/changes/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("action=\"{path}\"")), "{page}");
    let page = mgr
        .get(&format!("/console/changes/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(!page.contains(&path));
    let planned = || async {
        crate::harness::body(srv.get(&format!("/api/v1/changes/{id}"), &p.admin).await).await
            ["planned_start"]
            .clone()
    };
    let before = planned().await;

    // A day too early: refused with the earliest start, nothing changed.
    let (s, e, _) = window(earliest.pred_opt().unwrap());
    let r = op
        .post(
            &path,
            &[("planned_start", &s), ("planned_end", &e)],
            true,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("role=\"alert\""));
    assert_eq!(planned().await, before);
    // Not the requester, or no CSRF token: refused.
    let (s, e, _) = window(earliest.succ_opt().unwrap());
    let fields = [("planned_start", s.as_str()), ("planned_end", e.as_str())];
    let r = mgr.post(&path, &fields, true, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = op.post(&path, &fields, false, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(planned().await, before);
    // The requester, a day later: done.
    let r = op.post(&path, &fields, true, None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, _, want) = window(earliest.succ_opt().unwrap());
    let got = planned().await;
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(got.as_str().unwrap()).unwrap(),
        chrono::DateTime::parse_from_rfc3339(&want).unwrap()
    );
    let audit = crate::harness::body(srv.get("/api/v1/audit?limit=50", &p.admin).await).await;
    let rescheduled: Vec<(&str, &str)> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "change.reschedule")
        .map(|e| (e["actor"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert!(rescheduled.contains(&("op.zhang", "ok")), "{rescheduled:?}");
    assert!(
        rescheduled.contains(&("mgr.chen", "refused")),
        "{rescheduled:?}"
    );
    assert!(
        rescheduled.contains(&("op.zhang", "refused")),
        "{rescheduled:?}"
    );
});
