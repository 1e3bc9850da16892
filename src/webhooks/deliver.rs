//! Delivering one webhook row of the outbox: the body in the subscription's format, signed,
//! POSTed with a timeout, never following a redirect to another host.

use std::time::Duration;

use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::App;
use crate::db::notify::OutboxRow;
use crate::db::webhooks as db;

/// The client of every delivery: 10 s per request, redirects only within the same origin.
pub fn http_client() -> anyhow::Result<reqwest::Client> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let first = attempt.previous().first().cloned();
        let same_origin = first.is_some_and(|f| {
            f.scheme() == attempt.url().scheme()
                && f.host_str() == attempt.url().host_str()
                && f.port_or_known_default() == attempt.url().port_or_known_default()
        });
        if attempt.previous().len() > 3 || !same_origin {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    Ok(reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(policy)
        .user_agent(concat!("changeguard/", env!("CARGO_PKG_VERSION")))
        .build()?)
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// `X-Changeguard-Signature` of a JSON delivery: `sha256=` HMAC-SHA256(secret, ts + "." + body).
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mac = hmac_sha256(secret.as_bytes(), format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac))
}

/// DingTalk's signed URL: `timestamp` (ms) and `sign` = base64(HMAC-SHA256(secret,
/// timestamp + "\n" + secret)), appended to the robot's URL.
pub fn dingtalk_signed(url: &str, secret: &str, millis: i64) -> Result<String, String> {
    let mut u = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let sign = base64::engine::general_purpose::STANDARD.encode(hmac_sha256(
        secret.as_bytes(),
        format!("{millis}\n{secret}").as_bytes(),
    ));
    u.query_pairs_mut()
        .append_pair("timestamp", &millis.to_string())
        .append_pair("sign", &sign);
    Ok(u.to_string())
}

/// One line of user text in a robot's markdown: on one line (a newline would leave the quote
/// and could forge headings or links), markdown's active characters escaped, at most 300
/// characters (the robots limit a message's size).
fn inline(s: &str) -> String {
    let mut out = String::new();
    for c in s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
    {
        if "\\`*_[]()<".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The markdown both robots show: a heading, the facts, the link.
fn markdown(p: &Value) -> String {
    let mut text = format!("### {}\n", inline(p["title"].as_str().unwrap_or_default()));
    for line in p["lines"].as_array().into_iter().flatten().take(20) {
        if let Some(l) = line.as_str() {
            text.push_str(&format!("> {}\n", inline(l)));
        }
    }
    if let Some(link) = p["link"].as_str() {
        text.push_str(&format!("\n[查看 / Open]({link})\n"));
    }
    text
}

/// The body of a delivery in `format`.
pub fn body(format: &str, payload: &Value) -> String {
    match format {
        "wecom" => json!({"msgtype": "markdown", "markdown": {"content": markdown(payload)}}),
        "dingtalk" => json!({"msgtype": "markdown", "markdown": {
            "title": payload["title"], "text": markdown(payload)}}),
        _ => payload.clone(),
    }
    .to_string()
}

/// Sends one webhook row. `Err` is the reason, recorded on the row (never the secret).
pub async fn deliver(app: &App, row: &OutboxRow) -> Result<(), String> {
    let Some(id) = row.webhook_id else {
        return Err("a webhook row without its subscription".into());
    };
    let mut tx = app.db.begin().await.map_err(|e| e.to_string())?;
    let target = db::target(&mut tx, id).await.map_err(|e| e.to_string())?;
    let Some(target) = target else {
        drop(tx);
        return Err("the subscription was deleted or paused".into());
    };
    let secret = match &target.secret {
        Some((version, sealed)) => Some(
            app.vault
                .open(&mut tx, super::binding(id, *version), sealed)
                .await
                .map_err(|e| format!("the subscription's secret cannot be opened: {e}"))?,
        ),
        None => None,
    };
    drop(tx);
    let payload: Value =
        serde_json::from_str(&row.body_text).map_err(|e| format!("stored payload: {e}"))?;
    let body = body(&target.format, &payload);
    let now = app.now();
    let mut url = target.url.clone();
    let mut req = app
        .notifier
        .http
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Changeguard-Event", &row.kind)
        .header("X-Changeguard-Delivery", &row.message_id);
    if let Some(s) = &secret {
        match target.format.as_str() {
            "dingtalk" => {
                url = dingtalk_signed(&target.url, s.expose_secret(), now.timestamp_millis())?;
                req = app
                    .notifier
                    .http
                    .post(&url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            _ => {
                let ts = now.timestamp();
                req = req
                    .header("X-Changeguard-Timestamp", ts.to_string())
                    .header(
                        "X-Changeguard-Signature",
                        signature(s.expose_secret(), ts, &body),
                    );
            }
        }
    }
    let resp = req.body(body).send().await.map_err(|e| {
        // The error names the URL, which may hold a robot's token: say the host only.
        let host = reqwest::Url::parse(&target.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        format!(
            "delivery to {host} failed: {}",
            if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "request error"
            }
        )
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("the receiver answered {}", status.as_u16()));
    }
    // The robots answer 200 also when they refuse (a wrong key or signature, a rate limit):
    // only `errcode` 0 is a delivery.
    if matches!(target.format.as_str(), "wecom" | "dingtalk") {
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match answer["errcode"].as_i64() {
            Some(0) => {}
            Some(code) => return Err(format!("the robot refused the message (errcode {code})")),
            None => return Err("the robot's answer has no errcode".into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_and_body() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            signature("s3cret", 1700000000, "{}"),
            format!(
                "sha256={}",
                hex::encode(hmac_sha256(b"s3cret", b"1700000000.{}"))
            )
        );
        let u = dingtalk_signed(
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
            "SEC1",
            1,
        )
        .unwrap();
        assert!(u.starts_with(
            "https://oapi.dingtalk.com/robot/send?access_token=abc&timestamp=1&sign="
        ));
    }

    #[test]
    fn robots_get_their_markdown_shapes() {
        let p =
            json!({"title": "变更已批准 / approved", "lines": ["变更 #7"], "link": "http://x/7"});
        let w: Value = serde_json::from_str(&body("wecom", &p)).unwrap();
        assert_eq!(w["msgtype"], "markdown");
        assert!(
            w["markdown"]["content"]
                .as_str()
                .unwrap()
                .contains("> 变更 #7")
        );
        let d: Value = serde_json::from_str(&body("dingtalk", &p)).unwrap();
        assert_eq!(d["markdown"]["title"], "变更已批准 / approved");
        assert!(
            d["markdown"]["text"]
                .as_str()
                .unwrap()
                .contains("(http://x/7)")
        );
        let j: Value = serde_json::from_str(&body("json", &p)).unwrap();
        assert_eq!(j, p);
    }
}
