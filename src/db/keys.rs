//! Fingerprints of the server keys a database was created with.

use chrono::{DateTime, Utc};

use super::{Db, Result};
use crate::on_pool;

/// Records `fingerprint` for `name` if none is recorded yet; returns the one recorded.
pub async fn remember(
    db: &Db,
    name: &str,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<String> {
    on_pool!(db, |p| sqlx::query(
        "INSERT INTO server_keys (name, fingerprint, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING"
    )
    .bind(name)
    .bind(fingerprint)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, String>(
        "SELECT fingerprint FROM server_keys WHERE name = $1"
    )
    .bind(name)
    .fetch_one(p)
    .await)?)
}

/// The fingerprint recorded for `name`, if any (read only).
pub async fn recorded(db: &Db, name: &str) -> Result<Option<String>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, String>(
        "SELECT fingerprint FROM server_keys WHERE name = $1"
    )
    .bind(name)
    .fetch_optional(p)
    .await)?)
}
