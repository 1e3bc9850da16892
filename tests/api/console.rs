//! The web console in a real browser (Debian's chromium + chromedriver, headless) against the
//! real server: log in, file a change refused for late notice and read why, refile, approve as a
//! manager, find it on the calendar, read the verified audit trail. Screenshots of the main pages
//! go to `test-artifacts/console/`. In CI a missing browser is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{Datelike, NaiveDate};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::changes::{notice_today, setup};
use crate::harness::TestServer;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

struct Browser {
    client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    /// None (outside CI) when the browser is not installed; in CI that is a failure.
    async fn start(name: &str) -> Option<Browser> {
        if !Path::new(CHROMEDRIVER).exists() || !Path::new(CHROMIUM).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI needs chromium and chromium-driver (.ci/run installs them)"
            );
            eprintln!("SKIPPED: browser tests need chromium and chromium-driver");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let caps = json!({"goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1366,900", "--lang=zh-CN"]
        }});
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.enforce_http(true);
        let mut last = None;
        for _ in 0..100 {
            let mut b = ClientBuilder::new(connector.clone());
            b.capabilities(caps.as_object().unwrap().clone());
            match b.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(client) => {
                    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("test-artifacts/console")
                        .join(name);
                    std::fs::create_dir_all(&shots).unwrap();
                    return Some(Browser {
                        client,
                        driver,
                        shots,
                    });
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer: {last:?}");
    }

    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn text(&self) -> String {
        self.text_of("body").await
    }

    async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    async fn goto(&self, srv: &TestServer, path: &str) {
        self.client.goto(&srv.url(path)).await.unwrap();
    }

    async fn login(&self, srv: &TestServer, user: &str) {
        self.client.goto(&srv.url("/console/login")).await.unwrap();
        let form = self
            .client
            .form(Locator::Css("form[action='/console/login']"))
            .await
            .unwrap();
        form.set_by_name("username", user).await.unwrap();
        form.set_by_name("password", "a long enough password")
            .await
            .unwrap();
        form.submit().await.unwrap();
        self.wait_for("h1").await;
    }

    async fn logout(&self) {
        self.click("form[action='/console/logout'] button").await;
        self.wait_for("form[action='/console/login']").await;
    }

    async fn wait_for(&self, css: &str) {
        let found = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await;
        if found.is_err() {
            let url = self.client.current_url().await.unwrap();
            let source = self.client.source().await.unwrap();
            panic!("no `{css}` on {url}:\n{source}");
        }
    }

    async fn file(&self, start: NaiveDate, title: &str) {
        let form = self
            .client
            .form(Locator::Css("form#file-change"))
            .await
            .unwrap();
        for (field, value) in [
            ("title", title),
            ("category", "software_upgrade"),
            ("systems", "cs-platform"),
            ("description", "升级到 2.3.0"),
            ("rollback_plan", "回退到 2.2.9 镜像"),
        ] {
            form.set_by_name(field, value).await.unwrap();
        }
        form.set_by_name("planned_start", &format!("{start}T22:00"))
            .await
            .unwrap();
        form.set_by_name("planned_end", &format!("{start}T23:30"))
            .await
            .unwrap();
        // The live check reacts to the chosen start before anything is sent.
        self.client
            .execute(
                "document.getElementById('planned_start').dispatchEvent(new Event('change'))",
                vec![],
            )
            .await
            .unwrap();
    }

    async fn stop(self) {
        self.client.close().await.unwrap();
        let mut driver = self.driver;
        driver.kill().ok();
        driver.wait().ok();
    }
}

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

    // The manager approves.
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
    b.logout().await;

    // An auditor reads the audit trail: the refusal and the approval are there, the chain holds.
    srv.user_with(&p.admin, "audit.sun", &["auditor"]).await;
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
        ] {
            let r = client.get(srv.url(page)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
            assert_eq!(r.headers()[LOCATION], "/console/login");
        }
        // A viewer signs in.
        let r = client.get(srv.url("/console/login")).send().await.unwrap();
        let csrf = cookie_of(&r, "cg_csrf").unwrap();
        let r = client
            .post(srv.url("/console/login"))
            .header(COOKIE, format!("cg_csrf={csrf}"))
            .form(&[
                ("csrf", csrf.as_str()),
                ("username", "view.wu"),
                ("password", "a long enough password"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let session = cookie_of(&r, "cg_session").unwrap();
        let csrf = cookie_of(&r, "cg_csrf").unwrap();
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
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let changes = crate::harness::body(srv.get("/api/v1/changes", &p.admin).await).await;
        assert_eq!(changes.as_array().unwrap().len(), 0);
        // Logout ends the session for the console too.
        let r = client
            .post(srv.url("/console/logout"))
            .header(COOKIE, jar.clone())
            .form(&[("csrf", csrf.as_str())])
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
