//! The vault's key rotation.

use super::*;

/// A sealed row to re-wrap: (table, row id, sealed).
pub struct WrappedRow {
    pub table: &'static str,
    pub id: i64,
    pub sealed: Sealed,
}

#[derive(sqlx::FromRow)]
struct WrapDb {
    id: i64,
    key_id: String,
    master_key_id: String,
    wrapped_key: Vec<u8>,
}

/// Up to `limit` rows still wrapped by `master_key_id`, locked for the transaction.
pub async fn wrapped_by(tx: &mut Tx, master_key_id: &str, limit: i64) -> Result<Vec<WrappedRow>> {
    let (creds, totps, pending, hooks, next_versions) = match tx.backend() {
        Backend::Postgres => (
            "SELECT id, key_id, master_key_id, wrapped_key FROM credentials \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2 FOR UPDATE",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2 FOR UPDATE",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp_pending \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2 FOR UPDATE",
            "SELECT id, key_id, master_key_id, wrapped_key FROM webhooks \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2 FOR UPDATE",
            "SELECT credential_id AS id, key_id, master_key_id, wrapped_key FROM credential_pending \
             WHERE master_key_id = $1 ORDER BY credential_id LIMIT $2 FOR UPDATE",
        ),
        Backend::Sqlite => (
            "SELECT id, key_id, master_key_id, wrapped_key FROM credentials \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2",
            "SELECT user_id AS id, key_id, master_key_id, wrapped_key FROM totp_pending \
             WHERE master_key_id = $1 ORDER BY user_id LIMIT $2",
            "SELECT id, key_id, master_key_id, wrapped_key FROM webhooks \
             WHERE master_key_id = $1 ORDER BY id LIMIT $2",
            "SELECT credential_id AS id, key_id, master_key_id, wrapped_key FROM credential_pending \
             WHERE master_key_id = $1 ORDER BY credential_id LIMIT $2",
        ),
    };
    // One table per batch: a batch holding credential rows and then waiting for a TOTP row
    // would deadlock with a reveal, which locks the caller's TOTP row and then the credential.
    let mut out = Vec::new();
    for (table, sql) in [
        ("credentials", creds),
        ("totp", totps),
        ("totp_pending", pending),
        ("webhooks", hooks),
        ("credential_pending", next_versions),
    ] {
        let left = limit - out.len() as i64;
        if left <= 0 || !out.is_empty() {
            break;
        }
        let rows = on_tx!(tx, |c| sqlx::query_as::<_, WrapDb>(sql)
            .bind(master_key_id)
            .bind(left)
            .fetch_all(c)
            .await)?;
        out.extend(rows.into_iter().map(|r| WrappedRow {
            table,
            id: r.id,
            sealed: Sealed {
                key_id: r.key_id,
                master_key_id: r.master_key_id,
                wrapped_key: r.wrapped_key,
                nonce: Vec::new(),
                ciphertext: Vec::new(),
            },
        }));
    }
    Ok(out)
}

/// Stores a re-wrapped data key (only if the row still has the data key it had).
pub async fn store_wrapped(tx: &mut Tx, row: &WrappedRow, new: &Sealed) -> Result<()> {
    let sql = match row.table {
        "credentials" => {
            "UPDATE credentials SET master_key_id = $3, wrapped_key = $4 WHERE id = $1 AND key_id = $2"
        }
        "totp" => {
            "UPDATE totp SET master_key_id = $3, wrapped_key = $4 WHERE user_id = $1 AND key_id = $2"
        }
        "webhooks" => {
            "UPDATE webhooks SET master_key_id = $3, wrapped_key = $4 WHERE id = $1 AND key_id = $2"
        }
        "credential_pending" => {
            "UPDATE credential_pending SET master_key_id = $3, wrapped_key = $4 \
             WHERE credential_id = $1 AND key_id = $2"
        }
        _ => {
            "UPDATE totp_pending SET master_key_id = $3, wrapped_key = $4 \
             WHERE user_id = $1 AND key_id = $2"
        }
    };
    on_tx!(tx, |c| sqlx::query(sql)
        .bind(row.id)
        .bind(&row.sealed.key_id)
        .bind(&new.master_key_id)
        .bind(&new.wrapped_key)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    Ok(())
}
