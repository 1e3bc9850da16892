//! The vault's credentials.

use super::*;

/// Metadata of a credential: never the secret.
#[derive(Debug, Clone, sqlx::FromRow, Serialize, utoipa::ToSchema)]
pub struct Credential {
    pub id: i64,
    pub name: String,
    /// Key of the systems register.
    pub system: String,
    pub account: String,
    /// `password`, `key` or `token`.
    pub kind: String,
    pub department: String,
    pub rotation_days: Option<i64>,
    pub version: i64,
    /// Set when the secret was revealed for a change: rotate it (POST …/rotate).
    pub rotate_after_use: bool,
    /// The change the secret was last revealed for, while `rotate_after_use`.
    pub rotate_reason_change_id: Option<i64>,
    pub secret_changed_at: DateTime<Utc>,
    /// The database target the account is on: changeguard rotates its password itself
    /// (`POST …/rotate` `{"generate": true}`, and after use).
    pub target_database_id: Option<i64>,
    /// The account's name on that target.
    pub target_account: Option<String>,
    pub last_revealed_at: Option<DateTime<Utc>>,
    pub last_revealed_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! cred_select {
    () => {
        "SELECT c.id, c.name, c.system_key AS system, c.account, c.kind, c.department, \
         c.rotation_days, c.version, c.rotate_after_use, c.rotate_reason_change_id, \
         c.secret_changed_at, c.target_database_id, c.target_account, c.last_revealed_at, \
         u.username AS last_revealed_by, c.created_at, \
         c.updated_at FROM credentials c LEFT JOIN users u ON u.id = c.last_revealed_by"
    };
}

pub struct NewCredential<'a> {
    pub name: &'a str,
    pub system: &'a str,
    pub account: &'a str,
    pub kind: &'a str,
    pub department: &'a str,
    pub rotation_days: Option<i64>,
    /// The database target and account name, for rotation by the machine.
    pub target: Option<(i64, &'a str)>,
    pub created_by: i64,
}

/// Inserts the metadata with an empty secret; the caller seals the secret with the new id
/// and stores it with [`store_secret`] in the same transaction.
pub async fn insert_credential(
    tx: &mut Tx,
    n: &NewCredential<'_>,
    master_key_id: &str,
    now: DateTime<Utc>,
) -> Result<i64> {
    let empty: Vec<u8> = Vec::new();
    Ok(on_tx!(tx, |c| {
        sqlx::query_scalar::<_, i64>(
        "INSERT INTO credentials (name, system_key, account, kind, department, rotation_days, \
         version, key_id, master_key_id, wrapped_key, nonce, ciphertext, rotate_after_use, \
         secret_changed_at, created_by, created_at, updated_at, target_database_id, target_account) \
         VALUES ($1, $2, $3, $4, $5, $6, 0, '', $7, $8, $8, $8, FALSE, $9, $10, $9, $9, $11, $12) \
         RETURNING id"
    )
    .bind(n.name)
    .bind(n.system)
    .bind(n.account)
    .bind(n.kind)
    .bind(n.department)
    .bind(n.rotation_days)
    .bind(master_key_id)
    .bind(&empty)
    .bind(now)
    .bind(n.created_by)
    .bind(n.target.map(|t| t.0))
    .bind(n.target.map(|t| t.1))
    .fetch_one(c)
    .await
    })?)
}

/// Stores a new version of the secret; clears "rotate after use".
pub async fn store_secret(
    tx: &mut Tx,
    id: i64,
    version: i64,
    s: &Sealed,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE credentials SET version = $2, key_id = $3, master_key_id = $4, wrapped_key = $5, \
         nonce = $6, ciphertext = $7, rotate_after_use = FALSE, rotate_reason_change_id = NULL, \
         secret_changed_at = $8, updated_at = $8 WHERE id = $1"
    )
    .bind(id)
    .bind(version)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn list_credentials(db: &Db) -> Result<Vec<Credential>> {
    let sql = concat!(cred_select!(), " ORDER BY c.name");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Credential>(sql)
        .fetch_all(p)
        .await)?)
}

pub async fn get_credential(db: &Db, id: i64) -> Result<Credential> {
    let sql = concat!(cred_select!(), " WHERE c.id = $1");
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Credential>(sql)
        .bind(id)
        .fetch_one(p)
        .await)?)
}

pub async fn get_credential_tx(tx: &mut Tx, id: i64) -> Result<Credential> {
    let sql = match tx.backend() {
        Backend::Postgres => concat!(cred_select!(), " WHERE c.id = $1 FOR UPDATE OF c"),
        Backend::Sqlite => concat!(cred_select!(), " WHERE c.id = $1"),
    };
    Ok(on_tx!(tx, |c| sqlx::query_as::<_, Credential>(sql)
        .bind(id)
        .fetch_one(c)
        .await)?)
}

#[derive(sqlx::FromRow)]
struct SealedRow {
    version: i64,
    #[sqlx(flatten)]
    sealed: SealedCols,
}

/// The sealed secret of a credential and its version, read in the caller's transaction.
pub async fn sealed_secret(tx: &mut Tx, id: i64) -> Result<(i64, Sealed)> {
    let r = on_tx!(tx, |c| sqlx::query_as::<_, SealedRow>(
        "SELECT version, key_id, master_key_id, wrapped_key, nonce, ciphertext \
         FROM credentials WHERE id = $1"
    )
    .bind(id)
    .fetch_one(c)
    .await)?;
    Ok((r.version, r.sealed.into()))
}

/// Records a reveal; one for a change flags the credential "rotate after use".
pub async fn mark_revealed(
    tx: &mut Tx,
    id: i64,
    user_id: i64,
    change_id: Option<i64>,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE credentials SET last_revealed_at = $3, last_revealed_by = $2, \
         rotate_after_use = (rotate_after_use OR $4), \
         rotate_reason_change_id = COALESCE($5, rotate_reason_change_id) WHERE id = $1"
    )
    .bind(id)
    .bind(user_id)
    .bind(now)
    .bind(change_id.is_some())
    .bind(change_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// Credentials flagged "rotate after use" for changes assigned to `user_id` (those on a
/// database target are rotated by changeguard itself).
pub async fn rotation_reminders(db: &Db, user_id: i64) -> Result<Vec<Credential>> {
    let sql = concat!(
        cred_select!(),
        " JOIN change_requests r ON r.id = c.rotate_reason_change_id \
         WHERE c.rotate_after_use AND c.target_database_id IS NULL AND r.assignee_id = $1 \
         ORDER BY c.name"
    );
    Ok(on_pool!(db, |p| sqlx::query_as::<_, Credential>(sql)
        .bind(user_id)
        .fetch_all(p)
        .await)?)
}

/// Every credential still flagged "rotate after use" that a person rotates (none on a database
/// target), with the assignee of the change it was revealed for.
pub async fn rotation_due(db: &Db) -> Result<Vec<(Credential, i64)>> {
    let due = on_pool!(db, |p| sqlx::query_as::<_, (i64, i64)>(
        "SELECT c.id, r.assignee_id FROM credentials c \
         JOIN change_requests r ON r.id = c.rotate_reason_change_id \
         WHERE c.rotate_after_use AND c.target_database_id IS NULL ORDER BY c.id"
    )
    .fetch_all(p)
    .await)?;
    let mut out = Vec::with_capacity(due.len());
    for (id, assignee) in due {
        out.push((get_credential(db, id).await?, assignee));
    }
    Ok(out)
}
