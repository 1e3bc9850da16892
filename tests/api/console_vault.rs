//! The vault's pages in a real browser on both databases: an operator reveals a credential
//! inside a change window with a one-time code and sees it disappear; a wrong code is refused
//! and audited; the assignee rotates it; an admin gives a standing grant, a manager approves it
//! from the inbox, the admin revokes it; the access log tells it all in words.

use fantoccini::Locator;
use reqwest::StatusCode;

use changeguard::vault::totp;

use crate::browser::Browser;
use crate::harness::{ADMIN_PASSWORD, body};
use crate::vault::{aligned_step, change_in_progress, credential, enrol, setup};

const SECRET: &str = "Core-DB_口令-7f3a9c";

/// Sets the page's clock (what its timers read through `Date.now()`) to `ms` from the moment
/// the secret is due to be hidden, as the server's clock is moved in the other tests instead of
/// waiting.
async fn page_clock_at_hiding(b: &Browser, ms: i64) {
    b.client
        .execute(
            "var real = Date.__real || Date.now; Date.__real = real; \
             var at = Number(document.getElementById('revealed').getAttribute('data-hide-at')); \
             Date.__ahead = at + arguments[0] - real.call(Date); \
             Date.now = function () { return real.call(Date) + Date.__ahead; };",
            vec![serde_json::json!(ms)],
        )
        .await
        .unwrap();
}

async fn source(b: &Browser) -> String {
    b.client.source().await.unwrap()
}

crate::both_backends!(
    an_operator_reveals_a_credential_in_its_window_and_sees_it_disappear,
    |srv| {
        let Some(b) = Browser::start(&format!("{:?}", srv.backend).to_lowercase()).await else {
            return;
        };
        let v = setup(srv).await;
        let id = credential(srv, &v.admin, "核心库 DBA 口令", SECRET).await;
        let factor = enrol(srv, &v.op).await;

        // No change in progress yet: the list and the page say why not, and offer no reveal.
        b.login(srv, "op.zhang").await;
        b.click("nav a[href='/console/vault']").await;
        let row = b
            .wait_text(
                &format!("tr[data-credential='{id}'] td.reveal"),
                "没有进行中的变更",
            )
            .await;
        assert!(!row.contains("可以取用"), "{row}");
        b.goto(srv, &format!("/console/vault/{id}")).await;
        b.wait_text("#why-not", "没有进行中的变更").await;
        assert!(b.client.find(Locator::Css("#reveal-form")).await.is_err());

        // Inside the window of a change assigned to them and in progress, the page offers it.
        let change = change_in_progress(srv, &v, &v.op).await;
        b.goto(srv, "/console/vault").await;
        b.wait_text(&format!("tr[data-credential='{id}'] td.reveal"), "可以取用")
            .await;
        b.shot("vault").await;
        b.fits("vault list").await;
        b.click(&format!("tr[data-credential='{id}'] td.reveal a"))
            .await;
        b.wait_for("#reveal-form").await;

        // A wrong code is refused, said in words, and audited; the secret is nowhere.
        let step = aligned_step(srv);
        b.submit(
            "#reveal-form",
            &[
                ("reason", "核对索引修复 / checking the index fix"),
                ("totp", &totp::code_at(&factor, step + 20)),
            ],
        )
        .await;
        b.wait_text(".flash.error", "动态口令不正确").await;
        assert!(!source(&b).await.contains(SECRET));

        // The right code shows the secret once, with a copy button and a countdown.
        b.submit(
            "#reveal-form",
            &[
                ("reason", "执行索引修复 / applying the index fix"),
                ("totp", &totp::code_at(&factor, step)),
            ],
        )
        .await;
        assert_eq!(b.wait_text("#secret", SECRET).await, SECRET);
        b.wait_text("#secret-timer", "秒后自动隐藏").await;
        let left: i64 = b
            .text_of("#secret-timer")
            .await
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((55..=60).contains(&left), "{left}");
        // The history entry is the credential's page already: a reload cannot post the reveal again.
        assert_eq!(
            b.client.current_url().await.unwrap().path(),
            format!("/console/vault/{id}")
        );
        b.click("#copy-secret").await;
        let copied = b.wait_text("#copy-status", "复制").await;
        assert!(copied.contains("已复制"), "{copied}");
        b.shot("vault-revealed").await;
        b.fits("revealed secret").await;

        // Just before its 60 s are up it is still there; then it is gone from the page, not
        // merely hidden.
        page_clock_at_hiding(&b, -2_000).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
        assert!(b.client.find(Locator::Css("#secret")).await.is_ok());
        page_clock_at_hiding(&b, 500).await;
        b.wait_gone("#secret").await;
        b.wait_for("#secret-hidden:not([hidden])").await;
        assert!(!source(&b).await.contains(SECRET));
        let html = b
            .client
            .execute("return document.documentElement.outerHTML", vec![])
            .await
            .unwrap();
        assert!(!html.as_str().unwrap().contains(SECRET));
        b.shot("vault-hidden").await;
        // A reload shows the credential's page, without the secret.
        b.client.refresh().await.unwrap();
        b.wait_for("#rotation").await;
        assert!(!source(&b).await.contains(SECRET));
        assert!(b.text_of("#rotation").await.contains(&format!("#{change}")));

        // The assignee rotates it (used for a change, it must be).
        b.submit("#rotate-form", &[("secret", "Core-DB_新口令-22b1")])
            .await;
        b.wait_text("#version", "2").await;
        assert!(!b.text_of("#rotation").await.contains("使用后须轮换"));
        b.logout().await;

        // An admin gives op.li standing access; it waits for a second person.
        b.login_with(srv, "admin", ADMIN_PASSWORD).await;
        b.goto(srv, &format!("/console/vault/{id}")).await;
        let until = (srv.now() + chrono::TimeDelta::days(7))
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format("%Y-%m-%dT%H:%M")
            .to_string();
        let form = b.client.form(Locator::Css("#grant-form")).await.unwrap();
        form.set_by_name("grantee", "op.li").await.unwrap();
        form.set_by_name("reason", "季度对账 / quarterly reconciliation")
            .await
            .unwrap();
        b.client
            .execute(
                "document.getElementById('g-expires').value = arguments[0]",
                vec![serde_json::json!(until)],
            )
            .await
            .unwrap();
        b.click("#grant-form button[type=submit]").await;
        let grants = b.wait_text("table.grants", "待第二人批准").await;
        assert!(grants.contains("op.li"), "{grants}");
        let grant = b
            .client
            .find(Locator::Css("table.grants tr[data-grant]"))
            .await
            .unwrap()
            .attr("data-grant")
            .await
            .unwrap()
            .unwrap();
        // The access log tells what happened, in words.
        let log = b.text_of("table.access-log").await;
        for words in [
            "取用",
            "允许",
            "拒绝：动态口令不正确",
            "轮换",
            "授予长期访问",
            "执行索引修复",
        ] {
            assert!(log.contains(words), "{words} in {log}");
        }
        assert!(!log.contains("totp_invalid"), "{log}");
        b.shot("vault-admin").await;
        b.logout().await;

        // The manager approves it from the inbox; it is in force.
        b.login(srv, "mgr.chen").await;
        b.goto(srv, "/console/inbox").await;
        b.click(&format!(
            "form[action='/console/inbox/grant/{grant}'] button"
        ))
        .await;
        b.wait_for("#nav-inbox").await;
        b.goto(srv, &format!("/console/vault/{id}")).await;
        b.wait_text(&format!("tr[data-grant='{grant}']"), "有效")
            .await;
        b.logout().await;

        // The admin revokes it with a reason.
        b.login_with(srv, "admin", ADMIN_PASSWORD).await;
        b.goto(srv, &format!("/console/vault/{id}")).await;
        b.submit(
            &format!("form[action='/console/vault/{id}/grants/{grant}/revoke']"),
            &[("reason", "对账完成 / reconciliation done")],
        )
        .await;
        b.wait_text(&format!("tr[data-grant='{grant}']"), "已撤销")
            .await;
        b.client.set_window_size(390, 844).await.unwrap();
        b.fits("credential page on a phone").await;
        b.client.set_window_size(1366, 900).await.unwrap();
        b.stop().await;

        // The trail holds the console's deeds as the API's would: one refused and one allowed
        // reveal by op.zhang with their reasons, the rotation, the grant, its approval and revocation.
        let log = body(
            srv.get(&format!("/api/v1/credentials/{id}/access-log"), &v.admin)
                .await,
        )
        .await;
        let entries: Vec<(String, String, String)> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap().to_string(),
                    e["outcome"].as_str().unwrap().to_string(),
                    e["actor"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        for (action, outcome, actor) in [
            ("credential.reveal", "refused", "op.zhang"),
            ("credential.reveal", "ok", "op.zhang"),
            ("credential.rotate", "ok", "op.zhang"),
            ("credential.grant", "ok", "admin"),
            ("credential.grant_approve", "ok", "mgr.chen"),
            ("credential.grant_revoke", "ok", "admin"),
        ] {
            assert!(
                entries.contains(&(action.into(), outcome.into(), actor.into())),
                "{action} {outcome} {actor}: {entries:?}"
            );
        }
        let text = log.to_string();
        assert!(!text.contains(SECRET) && !text.contains("新口令"), "{text}");
        let r = srv
            .get(&format!("/api/v1/credentials/{id}"), &v.admin)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(body(r).await["version"], 2);
    }
);
