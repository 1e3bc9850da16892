//! The sender: claims due outbox rows with a lease, sends them through lettre, records the result.

use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;
use tokio::sync::Notify;

use crate::App;
use crate::config::{Settings, redact_url};
use crate::db::notify::{self as db, IcsMethod, OutboxRow};

use super::Templates;

/// Where messages go.
pub enum Transport {
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
    File(AsyncFileTransport<Tokio1Executor>),
}

/// The notices' sending side of an instance: templates, transport, and the wake-up bell.
pub struct Notifier {
    pub templates: Templates,
    pub transport: Transport,
    pub from: Mailbox,
    /// Domain of the Message-IDs (the sender's domain).
    pub host: String,
    /// What the transport is, for the start-up line (no password).
    pub describe: String,
    /// The HTTP client of webhook deliveries.
    pub http: reqwest::Client,
    bell: Notify,
}

impl Notifier {
    pub fn new(settings: &Settings) -> anyhow::Result<Notifier> {
        let templates = Templates::load(&settings.templates_dir(), &settings.mail_language)?;
        let from: Mailbox = settings
            .mail_from
            .parse()
            .map_err(|e| anyhow::anyhow!("CHANGEGUARD_MAIL_FROM: {e}"))?;
        let host = from.email.domain().to_string();
        let (transport, describe) = match &settings.smtp_url {
            Some(url) => {
                let url = url.expose_secret();
                let t = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| {
                        anyhow::anyhow!("CHANGEGUARD_SMTP_URL ({}): {e}", redact_url(url))
                    })?
                    .timeout(Some(Duration::from_secs(30)))
                    .build();
                (Transport::Smtp(t), format!("SMTP {}", redact_url(url)))
            }
            None => {
                let dir = &settings.outbox_dir;
                std::fs::create_dir_all(dir).map_err(|e| {
                    anyhow::anyhow!("cannot create the outbox folder {}: {e}", dir.display())
                })?;
                (
                    Transport::File(AsyncFileTransport::<Tokio1Executor>::new(dir)),
                    format!(".eml files in {}", dir.display()),
                )
            }
        };
        Ok(Notifier {
            http: crate::webhooks::http_client()?,
            templates,
            transport,
            from,
            host,
            describe,
            bell: Notify::new(),
        })
    }

    /// Wakes the worker (after a commit that wrote messages).
    pub fn wake(&self) {
        self.bell.notify_one();
    }

    async fn send(&self, m: Message) -> Result<(), String> {
        match &self.transport {
            Transport::Smtp(t) => t.send(m).await.map(|_| ()).map_err(|e| e.to_string()),
            Transport::File(t) => t.send(m).await.map(|_| ()).map_err(|e| e.to_string()),
        }
    }
}

/// The email of an outbox row: text and HTML alternatives, plus the calendar entry.
pub fn build_message(from: &Mailbox, row: &OutboxRow) -> Result<Message, String> {
    let recipients: Vec<String> =
        serde_json::from_str(&row.recipients).map_err(|e| format!("recipients: {e}"))?;
    let mut b = Message::builder()
        .from(from.clone())
        .subject(row.subject.clone())
        .message_id(Some(row.message_id.clone()))
        .date(row.created_at.into());
    for r in &recipients {
        let to: Mailbox = r.parse().map_err(|e| format!("recipient {r}: {e}"))?;
        b = b.to(to);
    }
    let body = MultiPart::alternative_plain_html(row.body_text.clone(), row.body_html.clone());
    let m = match &row.ics {
        Some(ics) => {
            // Stored with the entry when it was queued, never read out of the entry's text.
            let method = row
                .ics_method
                .as_deref()
                .and_then(IcsMethod::parse)
                .ok_or("calendar entry without a valid method")?
                .as_str();
            let ct = ContentType::parse(&format!("text/calendar; charset=utf-8; method={method}"))
                .map_err(|e| e.to_string())?;
            let part: SinglePart = Attachment::new("change.ics".into()).body(ics.clone(), ct);
            b.multipart(MultiPart::mixed().multipart(body).singlepart(part))
        }
        None => b.multipart(body),
    };
    m.map_err(|e| e.to_string())
}

/// When the next attempt is due after `attempts` failures: base·2^(attempts-1), capped.
pub fn backoff(base_secs: u64, max_secs: u64, attempts: i32) -> Duration {
    let exp = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    Duration::from_secs(base_secs.saturating_mul(1u64 << exp).min(max_secs))
}

/// One round: claims due messages and sends them (concurrently). Returns how many were claimed.
pub async fn run_once(app: &App) -> anyhow::Result<usize> {
    let policy = &app.policies.notifications;
    let now = app.now();
    // A worker that dies mid-send leaves the row `sending`; after the lease another takes it.
    let lease = chrono::Duration::seconds(i64::try_from(policy.lease_secs)?);
    let lease_until = now + lease;
    let rows = db::claim_due(&app.db, now, lease_until, i64::from(policy.batch)).await?;
    let n = rows.len();
    let mut set = tokio::task::JoinSet::new();
    for row in rows {
        let app = app.clone();
        set.spawn(async move { deliver(&app, row, lease_until).await });
    }
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Err(e)) => tracing::warn!(error = %e, "outbox: could not record a result"),
            Err(e) => tracing::warn!(error = %e, "outbox: send task failed"),
            Ok(Ok(())) => {}
        }
    }
    Ok(n)
}

async fn deliver(app: &App, row: OutboxRow, lease: DateTime<Utc>) -> anyhow::Result<()> {
    let policy = &app.policies.notifications;
    let result = if row.channel == "webhook" {
        crate::webhooks::deliver(app, &row).await
    } else {
        match build_message(&app.notifier.from, &row) {
            Ok(m) => app.notifier.send(m).await,
            Err(e) => Err(format!("cannot build the message: {e}")),
        }
    };
    let now: DateTime<Utc> = app.now();
    match result {
        Ok(()) => {
            db::mark_sent(&app.db, row.id, lease, now).await?;
            metrics::counter!("changeguard_notices_sent_total").increment(1);
        }
        Err(e) => {
            let dead = row.attempts >= i32::try_from(policy.max_attempts).unwrap_or(i32::MAX);
            let wait = backoff(policy.backoff_secs, policy.backoff_max_secs, row.attempts);
            let error: String = e.chars().take(1000).collect();
            tracing::warn!(id = row.id, attempts = row.attempts, dead, error = %error, "outbox: sending failed");
            db::mark_failed(
                &app.db,
                row.id,
                lease,
                dead,
                &error,
                now + chrono::Duration::from_std(wait)?,
            )
            .await?;
            metrics::counter!("changeguard_notices_failed_total").increment(1);
        }
    }
    Ok(())
}

/// Runs the sender until the process ends: after each commit that wrote messages, and every
/// `poll_secs` (for retries and for messages written by other instances).
pub fn spawn(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let policy = &app.policies.notifications;
        let poll = Duration::from_secs(policy.poll_secs);
        loop {
            let claimed = match run_once(&app).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: round failed; will retry");
                    0
                }
            };
            if claimed >= policy.batch as usize {
                continue;
            }
            tokio::select! {
                () = app.notifier.bell.notified() => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        assert_eq!(backoff(30, 3600, 1), Duration::from_secs(30));
        assert_eq!(backoff(30, 3600, 2), Duration::from_secs(60));
        assert_eq!(backoff(30, 3600, 4), Duration::from_secs(240));
        assert_eq!(backoff(30, 3600, 20), Duration::from_secs(3600));
        assert_eq!(backoff(30, 3600, 99), Duration::from_secs(3600));
    }
}
