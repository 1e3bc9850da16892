//! SQL of the email outbox and of the scheduled jobs' runs.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, StoreError, Tx};
use crate::{on_pool, on_tx};

/// One message of the outbox.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct OutboxRow {
    pub id: i64,
    pub kind: String,
    pub change_id: Option<i64>,
    /// JSON array of addresses.
    #[serde(skip)]
    pub recipients: String,
    pub subject: String,
    #[serde(skip)]
    pub body_text: String,
    #[serde(skip)]
    pub body_html: String,
    #[serde(skip)]
    pub ics: Option<String>,
    /// The calendar entry's method (`REQUEST` or `CANCEL`), stored with it.
    #[serde(skip)]
    pub ics_method: Option<String>,
    pub message_id: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// `email` or `webhook`.
    pub channel: String,
    pub webhook_id: Option<i64>,
}

macro_rules! outbox_select {
    () => {
        "SELECT id, kind, change_id, recipients, subject, body_text, body_html, ics, ics_method, \
         message_id, \
         status, attempts, next_attempt_at, last_error, created_at, sent_at, channel, webhook_id \
         FROM outbox"
    };
}

/// What a calendar entry asks of the calendar that receives it (RFC 5546).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcsMethod {
    /// Add or update the entry.
    Request,
    /// Remove it: the change will not happen.
    Cancel,
}

impl IcsMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            IcsMethod::Request => "REQUEST",
            IcsMethod::Cancel => "CANCEL",
        }
    }

    pub fn parse(s: &str) -> Option<IcsMethod> {
        [IcsMethod::Request, IcsMethod::Cancel]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// A calendar entry attached to a message, with its method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    pub method: IcsMethod,
    pub text: String,
}

/// A message to enqueue.
pub struct NewMessage<'a> {
    pub kind: &'a str,
    pub change_id: Option<i64>,
    pub recipients: &'a [String],
    pub subject: &'a str,
    pub body_text: &'a str,
    pub body_html: &'a str,
    pub ics: Option<&'a Invitation>,
}

/// Inserts a pending webhook delivery: `payload` is the event's JSON, `event_id` its id (the
/// receiver's idempotency key, kept as the row's message id).
pub async fn insert_delivery(tx: &mut Tx, d: &NewDelivery<'_>, now: DateTime<Utc>) -> Result<i64> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "INSERT INTO outbox (kind, change_id, recipients, subject, body_text, body_html, \
         message_id, status, attempts, next_attempt_at, created_at, channel, webhook_id) \
         VALUES ($1, $2, '[]', $3, $4, '', $5, 'pending', 0, $6, $6, 'webhook', $7) RETURNING id"
    )
    .bind(d.kind)
    .bind(d.change_id)
    .bind(d.title)
    .bind(d.payload)
    .bind(d.event_id)
    .bind(now)
    .bind(d.webhook_id)
    .fetch_one(c)
    .await)?)
}

/// A webhook delivery to enqueue.
pub struct NewDelivery<'a> {
    pub kind: &'a str,
    pub change_id: Option<i64>,
    pub webhook_id: i64,
    pub title: &'a str,
    pub payload: &'a str,
    pub event_id: &'a str,
}

/// E-mail addresses of the active holders of `role` (unexpired grants).
pub async fn role_emails(tx: &mut Tx, role: &str, now: DateTime<Utc>) -> Result<Vec<String>> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
        "SELECT u.email FROM role_grants g JOIN users u ON u.id = g.user_id \
         WHERE g.role = $1 AND u.active AND (g.expires_at IS NULL OR g.expires_at > $2) \
         ORDER BY u.id"
    )
    .bind(role)
    .bind(now)
    .fetch_all(c)
    .await)?)
}

/// E-mail address of a user.
pub async fn user_email(tx: &mut Tx, user_id: i64) -> Result<String> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(
        "SELECT email FROM users WHERE id = $1"
    )
    .bind(user_id)
    .fetch_one(c)
    .await)?)
}

/// Inserts a pending message with its stable Message-ID `<outbox-{id}.{random}@{host}>`.
pub async fn insert_message(
    tx: &mut Tx,
    m: &NewMessage<'_>,
    host: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    let recipients = serde_json::to_string(m.recipients)
        .map_err(|e| StoreError::Sqlx(sqlx::Error::Encode(Box::new(e))))?;
    let random = uuid::Uuid::new_v4().simple().to_string();
    let id = on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "INSERT INTO outbox (kind, change_id, recipients, subject, body_text, body_html, ics, \
         ics_method, message_id, status, attempts, next_attempt_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $10) RETURNING id"
    )
    .bind(m.kind)
    .bind(m.change_id)
    .bind(&recipients)
    .bind(m.subject)
    .bind(m.body_text)
    .bind(m.body_html)
    .bind(m.ics.map(|i| i.text.as_str()))
    .bind(m.ics.map(|i| i.method.as_str()))
    .bind(format!("<pending.{random}@{host}>"))
    .bind(now)
    .fetch_one(c)
    .await)?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE outbox SET message_id = $1 WHERE id = $2"
    )
    .bind(format!("<outbox-{id}.{random}@{host}>"))
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(id)
}

/// Claims up to `limit` due messages for this worker until `lease_until`: pending or failed ones
/// whose time has come, and `sending` ones whose lease ran out (a worker died mid-send). On
/// PostgreSQL concurrent workers skip each other's rows (`FOR UPDATE SKIP LOCKED`); SQLite's
/// `BEGIN IMMEDIATE` serializes the claim.
pub async fn claim_due(
    db: &Db,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    let mut tx = db.begin().await?;
    let sql = match tx.backend() {
        Backend::Postgres => concat!(
            outbox_select!(),
            " WHERE (status IN ('pending', 'failed') AND next_attempt_at <= $1) \
              OR (status = 'sending' AND lease_until <= $1) \
              ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
        ),
        Backend::Sqlite => concat!(
            outbox_select!(),
            " WHERE (status IN ('pending', 'failed') AND next_attempt_at <= $1) \
              OR (status = 'sending' AND lease_until <= $1) \
              ORDER BY id LIMIT $2"
        ),
    };
    let mut rows = on_tx!(&mut tx, |c| sqlx::query_as::<_, OutboxRow>(sql)
        .bind(now)
        .bind(limit)
        .fetch_all(c)
        .await)?;
    for r in &mut rows {
        on_tx!(&mut tx, |c| sqlx::query(
            "UPDATE outbox SET status = 'sending', lease_until = $1, attempts = attempts + 1 \
             WHERE id = $2"
        )
        .bind(lease_until)
        .bind(r.id)
        .execute(c)
        .await
        .map(|_| ()))?;
        r.status = "sending".into();
        r.attempts += 1;
    }
    tx.commit_in_store().await?;
    Ok(rows)
}

/// Records a delivery, fenced by the claim: only the sender holding the lease it took (a slow
/// send re-claimed by another after its lease cannot overwrite the other's result).
pub async fn mark_sent(db: &Db, id: i64, lease: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
    let _turn = db.write_turn().await?;
    on_pool!(db, |p| sqlx::query(
        "UPDATE outbox SET status = 'sent', sent_at = $1, lease_until = NULL, last_error = NULL \
         WHERE id = $2 AND status = 'sending' AND lease_until = $3"
    )
    .bind(now)
    .bind(id)
    .bind(lease)
    .execute(p)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Records a failed attempt: `failed` with the next attempt's time, or `dead`.
pub async fn mark_failed(
    db: &Db,
    id: i64,
    lease: DateTime<Utc>,
    dead: bool,
    error: &str,
    next_attempt_at: DateTime<Utc>,
) -> Result<()> {
    let _turn = db.write_turn().await?;
    on_pool!(db, |p| sqlx::query(
        "UPDATE outbox SET status = $1, last_error = $2, next_attempt_at = $3, lease_until = NULL \
         WHERE id = $4 AND status = 'sending' AND lease_until = $5"
    )
    .bind(if dead { "dead" } else { "failed" })
    .bind(error)
    .bind(next_attempt_at)
    .bind(id)
    .bind(lease)
    .execute(p)
    .await
    .map(|_| ()))?;
    Ok(())
}

pub async fn list(
    db: &Db,
    change_id: Option<i64>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<OutboxRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, OutboxRow>(concat!(
        outbox_select!(),
        " WHERE ($1 IS NULL OR change_id = $1) AND ($2 IS NULL OR status = $2) \
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(change_id)
    .bind(status)
    .bind(limit)
    .fetch_all(p)
    .await)?)
}

pub async fn get(db: &Db, id: i64) -> Result<OutboxRow> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, OutboxRow>(concat!(
        outbox_select!(),
        " WHERE id = $1"
    ))
    .bind(id)
    .fetch_one(p)
    .await)?)
}

/// Status of a message, locking its row (PostgreSQL) for a retry.
pub async fn status_for_update(tx: &mut Tx, id: i64) -> Result<String> {
    let sql = match tx.backend() {
        Backend::Postgres => "SELECT status FROM outbox WHERE id = $1 FOR UPDATE",
        Backend::Sqlite => "SELECT status FROM outbox WHERE id = $1",
    };
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, String>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

/// A dead message back to `pending`, due now, with a fresh count of attempts.
pub async fn requeue(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_at = $1, \
         lease_until = NULL WHERE id = $2"
    )
    .bind(now)
    .bind(id)
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// Claims the run of `job` for `slot`; false when another instance (or an earlier start) ran it.
pub async fn claim_slot(db: &Db, job: &str, slot: &str, now: DateTime<Utc>) -> Result<bool> {
    let _turn = db.write_turn().await?;
    let r = on_pool!(db, |p| {
        sqlx::query(
        "INSERT INTO job_runs (job, slot, started_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
    )
    .bind(job)
    .bind(slot)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(r == 1)
}

/// Forgets runs started before `before` (they can no longer be due).
pub async fn prune_runs(db: &Db, before: DateTime<Utc>) -> Result<u64> {
    let _turn = db.write_turn().await?;
    Ok(on_pool!(db, |p| sqlx::query(
        "DELETE FROM job_runs WHERE started_at < $1"
    )
    .bind(before)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?)
}
