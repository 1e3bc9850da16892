//! A real browser for the console's tests: Debian's chromium driven through chromedriver,
//! headless, with screenshots to `test-artifacts/console/{backend}/`. In CI a missing browser
//! is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::NaiveDate;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::harness::TestServer;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

pub struct Browser {
    pub client: Client,
    driver: Child,
    shots: PathBuf,
}

impl Browser {
    /// None (outside CI) when the browser is not installed; in CI that is a failure.
    pub async fn start(name: &str) -> Option<Browser> {
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

    pub async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn text(&self) -> String {
        self.text_of("body").await
    }

    pub async fn text_of(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    pub async fn goto(&self, srv: &TestServer, path: &str) {
        self.client.goto(&srv.url(path)).await.unwrap();
    }

    pub async fn login(&self, srv: &TestServer, user: &str) {
        self.login_with(srv, user, "a long enough password").await;
    }

    pub async fn login_with(&self, srv: &TestServer, user: &str, password: &str) {
        self.client.goto(&srv.url("/console/login")).await.unwrap();
        let form = self
            .client
            .form(Locator::Css("form[action='/console/login']"))
            .await
            .unwrap();
        form.set_by_name("username", user).await.unwrap();
        form.set_by_name("password", password).await.unwrap();
        form.submit().await.unwrap();
        // Signed in: the page has the logout button (the login page has an h1 too).
        self.wait_for("form[action='/console/logout']").await;
    }

    /// The page fits the window's width: no horizontal scrolling.
    pub async fn fits(&self, what: &str) {
        let widths = self
            .client
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth]",
                vec![],
            )
            .await
            .unwrap();
        let (page, window) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
        assert!(
            page <= window,
            "{what}: {page}px wide in a {window}px window"
        );
    }

    /// Submits the form `css` after setting its fields.
    pub async fn submit(&self, css: &str, fields: &[(&str, &str)]) {
        let form = self.client.form(Locator::Css(css)).await.unwrap();
        for (name, value) in fields {
            form.set_by_name(name, value).await.unwrap();
        }
        self.click(&format!("{css} button[type=submit]")).await;
    }

    /// Waits until `css` is there and its text contains `needle` (the next page has loaded).
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let mut last = String::new();
        for _ in 0..100 {
            if let Ok(e) = self.client.find(Locator::Css(css)).await
                && let Ok(t) = e.text().await
            {
                if t.contains(needle) {
                    return t;
                }
                last = t;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`{css}` never contained {needle:?}; last: {last:?}");
    }

    /// Waits until nothing matches `css`.
    pub async fn wait_gone(&self, css: &str) {
        for _ in 0..100 {
            if self.client.find(Locator::Css(css)).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("`{css}` is still there");
    }

    /// Presses Tab once; returns the class of the element that has the focus and its outline.
    pub async fn tab(&self) -> (String, String) {
        use fantoccini::actions::{InputSource, KeyAction, KeyActions};
        use fantoccini::key::Key;
        let keys = KeyActions::new("keyboard".into())
            .then(KeyAction::Down {
                value: Key::Tab.into(),
            })
            .then(KeyAction::Up {
                value: Key::Tab.into(),
            });
        self.client.perform_actions(keys).await.unwrap();
        let r = self
            .client
            .execute(
                "var e = document.activeElement; return [e.className, getComputedStyle(e).outlineStyle]",
                vec![],
            )
            .await
            .unwrap();
        (
            r[0].as_str().unwrap_or_default().to_string(),
            r[1].as_str().unwrap_or_default().to_string(),
        )
    }

    pub async fn logout(&self) {
        self.click("form[action='/console/logout'] button").await;
        self.wait_for("form[action='/console/login']").await;
    }

    pub async fn wait_for(&self, css: &str) {
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

    pub async fn file(&self, start: NaiveDate, title: &str) {
        let form = self
            .client
            .form(Locator::Css("form#file-change"))
            .await
            .unwrap();
        for (field, value) in [
            ("title", title),
            ("category", "software_upgrade"),
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
        // The system is ticked in the register's list (left ticked when the form comes back).
        self.client
            .execute(
                "document.querySelector(\"#systems input[value='cs-platform']\").checked = true; \
                 document.getElementById('category').dispatchEvent(new Event('change'))",
                vec![],
            )
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

    pub async fn stop(self) {
        self.client.close().await.unwrap();
        let mut driver = self.driver;
        driver.kill().ok();
        driver.wait().ok();
    }
}
