//! The vault's master keys.

use super::*;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MasterRow {
    pub key_id: String,
    pub check_value: String,
    pub state: String,
}

pub async fn master_keys(db: &Db) -> Result<Vec<MasterRow>> {
    Ok(on_pool!(db, |p| sqlx::query_as::<_, MasterRow>(
        "SELECT key_id, check_value, state FROM vault_master_keys ORDER BY created_at"
    )
    .fetch_all(p)
    .await)?)
}

/// The master keys, read inside a write transaction that seals a secret: on PostgreSQL the rows
/// are share-locked, so a rotation cannot promote a new key until this transaction committed
/// (and its final sweep then sees the row sealed here).
pub async fn master_keys_tx(tx: &mut Tx) -> Result<Vec<MasterRow>> {
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT key_id, check_value, state FROM vault_master_keys ORDER BY key_id FOR SHARE"
        }
        Backend::Sqlite => {
            "SELECT key_id, check_value, state FROM vault_master_keys ORDER BY key_id"
        }
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, MasterRow>(sql)
        .fetch_all(c)
        .await)?)
}

async fn master_keys_tx_update(tx: &mut Tx) -> Result<()> {
    if tx.backend() == Backend::Postgres {
        on_tx!(tx, |c| sqlx::query(
            "SELECT key_id FROM vault_master_keys ORDER BY key_id FOR UPDATE"
        )
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Records a master key (`current` on first start, `next` when a rotation begins).
pub async fn insert_master(
    db: &Db,
    key_id: &str,
    check_value: &str,
    state: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    on_pool!(db, |p| sqlx::query(
        "INSERT INTO vault_master_keys (key_id, check_value, state, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO NOTHING"
    )
    .bind(key_id)
    .bind(check_value)
    .bind(state)
    .bind(now)
    .execute(p)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Ends a rotation: `old` retired, `new` current, in the caller's transaction.
pub async fn promote_master(tx: &mut Tx, old: &str, new: &str, now: DateTime<Utc>) -> Result<()> {
    // Lock the rows in the order sealers share-lock them (by key id): no deadlock.
    master_keys_tx_update(tx).await?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE vault_master_keys SET state = 'retired', retired_at = $2 WHERE key_id = $1"
    )
    .bind(old)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    on_tx!(tx, |c| sqlx::query(
        "UPDATE vault_master_keys SET state = 'current' WHERE key_id = $1"
    )
    .bind(new)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// How many sealed rows each master key wraps (credentials, their pending versions, TOTP
/// secrets, webhooks).
pub async fn wrapped_counts(db: &Db) -> Result<Vec<(String, i64)>> {
    Ok(on_pool!(db, |p| {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT master_key_id, COUNT(*) FROM (SELECT master_key_id FROM credentials \
         UNION ALL SELECT master_key_id FROM totp UNION ALL SELECT master_key_id FROM totp_pending \
         UNION ALL SELECT master_key_id FROM credential_pending \
         UNION ALL SELECT master_key_id FROM webhooks WHERE master_key_id IS NOT NULL) t \
         GROUP BY master_key_id ORDER BY master_key_id",
        )
        .fetch_all(p)
        .await
    })?)
}
