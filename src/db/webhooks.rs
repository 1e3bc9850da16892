//! Webhook subscriptions. The signing secret is sealed by the vault and read only to sign.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, Result, Tx};
use crate::vault::crypto::Sealed;
use crate::{on_pool, on_tx};

/// A subscription as admins see it: never its secret.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    /// The events it receives (JSON array in the row).
    #[serde(skip)]
    pub events: String,
    /// json | wecom | dingtalk
    pub format: String,
    pub active: bool,
    /// Whether deliveries are signed (the secret itself is never shown).
    pub has_secret: bool,
    pub created_by: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! webhook_cols {
    () => {
        "id, url, events, format, active, (key_id IS NOT NULL) AS has_secret, created_by, \
         created_at, updated_at"
    };
}

pub struct NewWebhook<'a> {
    pub url: &'a str,
    pub events: &'a str,
    pub format: &'a str,
    pub created_by: i64,
}

pub async fn insert(tx: &mut Tx, w: &NewWebhook<'_>, now: DateTime<Utc>) -> Result<Webhook> {
    let sql = concat!(
        "INSERT INTO webhooks (url, events, format, active, created_by, created_at, updated_at) \
         VALUES ($1, $2, $3, TRUE, $4, $5, $5) RETURNING ",
        webhook_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Webhook>(sql)
        .bind(w.url)
        .bind(w.events)
        .bind(w.format)
        .bind(w.created_by)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

/// Fields a PATCH may change; `None` keeps the value.
#[derive(Debug, Default)]
pub struct WebhookChanges<'a> {
    pub url: Option<&'a str>,
    pub events: Option<&'a str>,
    pub format: Option<&'a str>,
    pub active: Option<bool>,
}

pub async fn update(
    tx: &mut Tx,
    id: i64,
    c: &WebhookChanges<'_>,
    now: DateTime<Utc>,
) -> Result<Webhook> {
    let sql = concat!(
        "UPDATE webhooks SET url = COALESCE($2, url), events = COALESCE($3, events), \
         format = COALESCE($4, format), active = COALESCE($5, active), updated_at = $6 \
         WHERE id = $1 AND deleted_at IS NULL RETURNING ",
        webhook_cols!()
    );
    Ok(on_tx!(tx, |conn| sqlx::query_as::<_, Webhook>(sql)
        .bind(id)
        .bind(c.url)
        .bind(c.events)
        .bind(c.format)
        .bind(c.active)
        .bind(now)
        .fetch_one(conn)
        .await)?)
}

/// Stores a new sealed secret (or removes it with `None`); the version moves either way.
pub async fn set_secret(tx: &mut Tx, id: i64, sealed: Option<&Sealed>) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE webhooks SET secret_version = secret_version + 1, key_id = $2, \
         master_key_id = $3, wrapped_key = $4, nonce = $5, ciphertext = $6 WHERE id = $1"
    )
    .bind(id)
    .bind(sealed.map(|s| s.key_id.clone()))
    .bind(sealed.map(|s| s.master_key_id.clone()))
    .bind(sealed.map(|s| s.wrapped_key.clone()))
    .bind(sealed.map(|s| s.nonce.clone()))
    .bind(sealed.map(|s| s.ciphertext.clone()))
    .execute(c)
    .await
    .map(|_| ()))?;
    Ok(())
}

/// The version the next secret of `id` will be sealed under.
pub async fn next_secret_version(tx: &mut Tx, id: i64) -> Result<i64> {
    Ok(on_tx!(tx, |c| sqlx::query_scalar::<_, i64>(
        "SELECT secret_version + 1 FROM webhooks WHERE id = $1 AND deleted_at IS NULL"
    )
    .bind(id)
    .fetch_one(c)
    .await)?)
}

pub async fn delete(tx: &mut Tx, id: i64, now: DateTime<Utc>) -> Result<Webhook> {
    let sql = concat!(
        "UPDATE webhooks SET deleted_at = $2, active = FALSE, key_id = NULL, master_key_id = NULL, \
         wrapped_key = NULL, nonce = NULL, ciphertext = NULL, updated_at = $2 \
         WHERE id = $1 AND deleted_at IS NULL RETURNING ",
        webhook_cols!()
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Webhook>(sql)
        .bind(id)
        .bind(now)
        .fetch_one(c)
        .await)?)
}

pub async fn list(db: &Db) -> Result<Vec<Webhook>> {
    let sql = concat!(
        "SELECT ",
        webhook_cols!(),
        " FROM webhooks WHERE deleted_at IS NULL ORDER BY id"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Webhook>(sql)
        .fetch_all(p)
        .await)?)
}

/// The active subscriptions, for enqueueing (their events are matched by the caller).
pub async fn active(tx: &mut Tx) -> Result<Vec<Webhook>> {
    let sql = concat!(
        "SELECT ",
        webhook_cols!(),
        " FROM webhooks WHERE deleted_at IS NULL AND active ORDER BY id"
    );
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Webhook>(sql)
        .fetch_all(c)
        .await)?)
}

/// What a delivery needs: the URL, the format and the sealed secret with its version;
/// `None` once the subscription is deleted or paused.
pub struct Target {
    pub url: String,
    pub format: String,
    pub secret: Option<(i64, Sealed)>,
}

pub async fn target(tx: &mut Tx, id: i64) -> Result<Option<Target>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        url: String,
        format: String,
        secret_version: i64,
        key_id: Option<String>,
        master_key_id: Option<String>,
        wrapped_key: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        ciphertext: Option<Vec<u8>>,
    }
    let row = on_tx!(tx, |c| sqlx::query_as::<_, Row>(
        "SELECT url, format, secret_version, key_id, master_key_id, wrapped_key, nonce, \
         ciphertext FROM webhooks WHERE id = $1 AND deleted_at IS NULL AND active"
    )
    .bind(id)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(|r| {
        let secret = match (
            r.key_id,
            r.master_key_id,
            r.wrapped_key,
            r.nonce,
            r.ciphertext,
        ) {
            (
                Some(key_id),
                Some(master_key_id),
                Some(wrapped_key),
                Some(nonce),
                Some(ciphertext),
            ) => Some((
                r.secret_version,
                Sealed {
                    key_id,
                    master_key_id,
                    wrapped_key,
                    nonce,
                    ciphertext,
                },
            )),
            _ => None,
        };
        Target {
            url: r.url,
            format: r.format,
            secret,
        }
    }))
}
