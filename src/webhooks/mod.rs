//! Outbound webhooks: subscriptions receive the same events as the e-mail notices, written into
//! the outbox in the deed's transaction and delivered by the same sender with the same retries,
//! dead letters and retry API ([`deliver`]). Formats: signed JSON, WeCom (企业微信) and DingTalk
//! (钉钉) group robots' markdown messages.

mod deliver;

pub use deliver::{deliver, http_client};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::App;
use crate::audit::Entry;
use crate::db::StoreError;
use crate::db::notify::{self as outbox, NewDelivery};
use crate::db::webhooks::{self as db, NewWebhook, Webhook, WebhookChanges};
use crate::deed::Deed;
use crate::error::{Error, Result};
use crate::rbac::Principal;
use crate::vault::crypto::Binding;

pub const FORMATS: &[&str] = &["json", "wecom", "dingtalk"];

/// Notice events that are not sent to webhooks.
const NOT_FOR_WEBHOOKS: &[&str] = &[
    "receipt",
    "emergency_also",
    "digest",
    "reminder",
    "calendar_missing",
];

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// http(s) only; no user name or password in it.
    pub url: String,
    /// Events of `policies/notifications.toml` (e.g. `filed`, `approved`, `unauthorized_change`);
    /// `["*"]` for all.
    pub events: Vec<String>,
    /// `json` (default), `wecom` or `dingtalk`.
    pub format: Option<String>,
    /// Signs each delivery (`X-Changeguard-Signature`, or DingTalk's signed URL). Kept sealed.
    #[schema(value_type = Option<String>, format = Password)]
    pub secret: Option<SecretString>,
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub format: Option<String>,
    /// A new secret; `""` removes it.
    #[schema(value_type = Option<String>, format = Password)]
    pub secret: Option<SecretString>,
    pub active: Option<bool>,
}

/// A subscription with its events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    #[serde(flatten)]
    pub webhook: Webhook,
    pub events: Vec<String>,
}

/// The URL as listings show it: a robot's URL carries its key in the query, so query values
/// are masked (`key=***`).
fn masked(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return String::new();
    };
    let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
    if names.is_empty() {
        return u.to_string();
    }
    u.set_query(None);
    {
        let mut q = u.query_pairs_mut();
        for n in &names {
            q.append_pair(n, "***");
        }
    }
    u.to_string()
}

fn view(mut w: Webhook) -> Result<WebhookView> {
    w.url = masked(&w.url);
    let events = serde_json::from_str(&w.events).map_err(|_| {
        Error::Internal(anyhow::Error::new(crate::db::CorruptValue::new(
            "webhooks.events",
            w.events.clone(),
        )))
    })?;
    Ok(WebhookView { webhook: w, events })
}

fn invalid(code: &'static str, message: &str) -> Error {
    Error::invalid(code, message.to_string())
}

fn check_url(url: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url).map_err(|_| {
        invalid(
            "invalid_url",
            "url 须为 http(s) 地址 / url must be an http(s) URL",
        )
    })?;
    if url.len() > 2000
        || !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
    {
        return Err(invalid(
            "invalid_url",
            "url 须为 http(s) 地址 / url must be an http(s) URL",
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            "invalid_url",
            "url 中不得含用户名或密码，签名请用 secret / no user name or password in the url; use secret to sign",
        ));
    }
    Ok(())
}

fn check_events(events: &[String]) -> Result<String> {
    // The events a webhook receives: those of changes and of the deeds that tell of
    // themselves (the scheduled digests and reminders, and the requester's receipt, go by
    // e-mail only).
    let known: Vec<&str> = crate::policy::NOTIFY_EVENTS
        .iter()
        .copied()
        .filter(|e| !NOT_FOR_WEBHOOKS.contains(e))
        .collect();
    let ok = !events.is_empty()
        && events.len() <= 64
        && events
            .iter()
            .all(|e| e == "*" || known.contains(&e.as_str()));
    if !ok {
        return Err(Error::invalid(
            "invalid_events",
            format!(
                "events 须列出通知事件，或 [\"*\"] / events must list notice events, or [\"*\"]: {}",
                known.join(", ")
            ),
        ));
    }
    let mut list = events.to_vec();
    list.sort();
    list.dedup();
    Ok(serde_json::to_string(&list).unwrap_or_else(|_| "[]".into()))
}

fn check_format(format: &str) -> Result<()> {
    if FORMATS.contains(&format) {
        Ok(())
    } else {
        Err(invalid(
            "invalid_format",
            "format 须为 json、wecom 或 dingtalk / format must be json, wecom or dingtalk",
        ))
    }
}

fn binding(id: i64, version: i64) -> Binding<'static> {
    Binding {
        kind: "webhook",
        id,
        version,
    }
}

/// Seals `secret` (empty: none) for subscription `id` inside the deed.
async fn store_secret(app: &App, tx: &mut Deed<'_>, id: i64, secret: &SecretString) -> Result<()> {
    let plain = secret.expose_secret();
    if plain.is_empty() {
        return Ok(db::set_secret(tx, id, None).await?);
    }
    if plain.len() > 512 || plain.chars().any(char::is_control) {
        return Err(invalid(
            "invalid_secret",
            "secret 须为 1–512 个可打印字符 / secret must be 1–512 printable characters",
        ));
    }
    let version = db::next_secret_version(tx, id).await?;
    let key = app.vault.sealing_key(tx).await?;
    let sealed = app
        .vault
        .seal(&key, binding(id, version), plain.as_bytes())?;
    Ok(db::set_secret(tx, id, Some(&sealed)).await?)
}

fn not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound { what: "webhook" },
        other => other.into(),
    }
}

pub async fn create(app: &App, who: &Principal, req: CreateWebhook) -> Result<WebhookView> {
    check_url(&req.url)?;
    let events = check_events(&req.events)?;
    let format = req.format.as_deref().unwrap_or("json");
    check_format(format)?;
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let w = db::insert(
        &mut tx,
        &NewWebhook {
            url: &req.url,
            events: &events,
            format,
            created_by: who.user_id,
        },
        now,
    )
    .await?;
    if let Some(secret) = &req.secret {
        store_secret(app, &mut tx, w.id, secret).await?;
    }
    // The URL may carry a robot's access token: the audit trail keeps its host only.
    let entry = Entry::by(who, "webhook.create", format!("webhook:{}", w.id)).with_details(
        json!({"host": host_of(&w.url), "format": w.format, "events": events, "signed": req.secret.is_some()}),
    );
    tx.commit(&entry, now).await?;
    let w = db::list(&app.db)
        .await?
        .into_iter()
        .find(|x| x.id == w.id)
        .ok_or(Error::NotFound { what: "webhook" })?;
    view(w)
}

fn host_of(url: &str) -> String {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

pub async fn list(app: &App) -> Result<Vec<WebhookView>> {
    db::list(&app.db).await?.into_iter().map(view).collect()
}

pub async fn update(
    app: &App,
    who: &Principal,
    id: i64,
    req: UpdateWebhook,
) -> Result<WebhookView> {
    if let Some(u) = &req.url {
        check_url(u)?;
    }
    let events = req.events.as_deref().map(check_events).transpose()?;
    if let Some(f) = &req.format {
        check_format(f)?;
    }
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let mut w = db::update(
        &mut tx,
        id,
        &WebhookChanges {
            url: req.url.as_deref(),
            events: events.as_deref(),
            format: req.format.as_deref(),
            active: req.active,
        },
        now,
    )
    .await
    .map_err(not_found)?;
    if let Some(secret) = &req.secret {
        store_secret(app, &mut tx, id, secret).await?;
        w.has_secret = !secret.expose_secret().is_empty();
    }
    let entry = Entry::by(who, "webhook.update", format!("webhook:{id}")).with_details(json!({
        "host": host_of(&w.url), "format": w.format, "events": events, "active": req.active,
        "secret_changed": req.secret.is_some(), "url_changed": req.url.is_some(),
    }));
    tx.commit(&entry, now).await?;
    view(w)
}

pub async fn delete(app: &App, who: &Principal, id: i64) -> Result<()> {
    let now = app.now();
    let mut tx = Deed::open(app).await?;
    let w = db::delete(&mut tx, id, now).await.map_err(not_found)?;
    let entry = Entry::by(who, "webhook.delete", format!("webhook:{id}"))
        .with_details(json!({"host": host_of(&w.url)}));
    tx.commit(&entry, now).await?;
    Ok(())
}

/// An event as the subscriptions receive it: a title, lines of facts, a link, and for a
/// change's event the change itself.
pub struct Event<'a> {
    pub kind: &'a str,
    pub change_id: Option<i64>,
    pub title: String,
    pub lines: Vec<String>,
    pub link: Option<String>,
    pub change: Option<Value>,
}

/// Writes one delivery per subscription of `event.kind` into the outbox, in the deed's
/// transaction: they commit, or vanish, with the deed.
pub async fn enqueue(tx: &mut Deed<'_>, event: &Event<'_>, now: DateTime<Utc>) -> Result<usize> {
    let subs = db::active(tx).await?;
    let mut n = 0;
    for w in subs {
        let events: Vec<String> = serde_json::from_str(&w.events).unwrap_or_default();
        if !events.iter().any(|e| e == "*" || e == event.kind) {
            continue;
        }
        let event_id = uuid::Uuid::now_v7().to_string();
        let payload = json!({
            "id": event_id,
            "event": event.kind,
            "occurred_at": now,
            "title": event.title,
            "lines": event.lines,
            "link": event.link,
            "change": event.change,
        })
        .to_string();
        outbox::insert_delivery(
            tx,
            &NewDelivery {
                kind: event.kind,
                change_id: event.change_id,
                webhook_id: w.id,
                title: &event.title,
                payload: &payload,
                event_id: &event_id,
            },
            now,
        )
        .await?;
        tx.queued();
        n += 1;
    }
    Ok(n)
}
