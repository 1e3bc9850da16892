//! The next version of a credential while changeguard sets it on the database target
//! (rotation by the machine): written before the target changes, promoted after.

use super::*;

/// A pending version.
pub struct Pending {
    pub credential_id: i64,
    pub version: i64,
    pub sealed: Sealed,
    /// Rotated because the secret was revealed for a change.
    pub after_use: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    credential_id: i64,
    version: i64,
    after_use: bool,
    created_at: DateTime<Utc>,
    #[sqlx(flatten)]
    sealed: SealedCols,
}

impl From<PendingRow> for Pending {
    fn from(r: PendingRow) -> Pending {
        Pending {
            credential_id: r.credential_id,
            version: r.version,
            sealed: r.sealed.into(),
            after_use: r.after_use,
            created_at: r.created_at,
        }
    }
}

const PENDING_COLS: &str = "SELECT credential_id, version, after_use, created_at, key_id, \
     master_key_id, wrapped_key, nonce, ciphertext FROM credential_pending";

/// Writes the pending version; `StoreError::Unique` when one is pending already.
pub async fn insert_pending(
    tx: &mut Tx,
    credential_id: i64,
    version: i64,
    s: &Sealed,
    after_use: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "INSERT INTO credential_pending (credential_id, version, key_id, master_key_id, \
         wrapped_key, nonce, ciphertext, after_use, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    )
    .bind(credential_id)
    .bind(version)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(after_use)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The pending version of a credential, read in the caller's transaction.
pub async fn pending_of(tx: &mut Tx, credential_id: i64) -> Result<Option<Pending>> {
    let sql = format!("{PENDING_COLS} WHERE credential_id = $1");
    let row = on_tx!(tx, |c| sqlx::query_as::<_, PendingRow>(
        sqlx::AssertSqlSafe(sql.clone())
    )
    .bind(credential_id)
    .fetch_optional(c)
    .await)?;
    Ok(row.map(Pending::from))
}

/// The pending version of a credential, outside a transaction (to set it on the target).
pub async fn pending(db: &Db, credential_id: i64) -> Result<Option<Pending>> {
    let sql = format!("{PENDING_COLS} WHERE credential_id = $1");
    let row = on_pool!(db, |p| sqlx::query_as::<_, PendingRow>(
        sqlx::AssertSqlSafe(sql.clone())
    )
    .bind(credential_id)
    .fetch_optional(p)
    .await)?;
    Ok(row.map(Pending::from))
}

/// Removes the pending version of `version` (promoted); false when it was gone already.
pub async fn delete_pending(tx: &mut Tx, credential_id: i64, version: i64) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "DELETE FROM credential_pending WHERE credential_id = $1 AND version = $2"
    )
    .bind(credential_id)
    .bind(version)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}

/// Credentials with a version pending since before `before` (a rotation a crash or a
/// failing target interrupted).
pub async fn pending_since(db: &Db, before: DateTime<Utc>) -> Result<Vec<i64>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT credential_id FROM credential_pending WHERE created_at < $1 ORDER BY credential_id"
    )
    .bind(before)
    .fetch_all(p)
    .await)?)
}

/// Credentials on a database target still flagged "rotate after use" whose change is over:
/// not in progress any more, or past `ended_by` (its planned end plus the grace) — or, with
/// `change`, every such credential revealed for that change.
pub async fn after_use_due(
    db: &Db,
    change: Option<i64>,
    ended_by: DateTime<Utc>,
) -> Result<Vec<i64>> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, i64>(
        "SELECT c.id FROM credentials c JOIN change_requests r ON r.id = c.rotate_reason_change_id \
         WHERE c.rotate_after_use AND c.target_database_id IS NOT NULL \
         AND NOT EXISTS (SELECT 1 FROM credential_pending q WHERE q.credential_id = c.id) \
         AND (r.id = $1 OR ($1 IS NULL AND (r.status <> 'in_progress' OR r.planned_end <= $2))) \
         ORDER BY c.id"
    )
    .bind(change)
    .bind(ended_by)
    .fetch_all(p)
    .await)?)
}
