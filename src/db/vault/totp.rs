//! The vault's TOTP.

use super::*;

#[derive(Debug, Clone)]
pub struct TotpRow {
    pub sealed: Sealed,
    pub confirmed: bool,
    pub last_step: i64,
    pub failures: i64,
    pub blocked_until: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct TotpDb {
    #[sqlx(flatten)]
    sealed: SealedCols,
    confirmed: bool,
    last_step: i64,
    failures: i64,
    blocked_until: Option<DateTime<Utc>>,
}

/// Starts (or restarts) enrolment: an unconfirmed secret replaces any previous one.
pub async fn put_totp(tx: &mut Tx, user_id: i64, s: &Sealed, now: DateTime<Utc>) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
        "INSERT INTO totp (user_id, key_id, master_key_id, wrapped_key, nonce, ciphertext, \
         confirmed, last_step, failures, created_at) VALUES ($1, $2, $3, $4, $5, $6, FALSE, 0, 0, $7) \
         ON CONFLICT (user_id) DO UPDATE SET key_id = $2, master_key_id = $3, wrapped_key = $4, \
         nonce = $5, ciphertext = $6, confirmed = FALSE, last_step = 0, failures = 0, \
         blocked_until = NULL, created_at = $7, confirmed_at = NULL"
    )
    .bind(user_id)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// A replacement secret for a user whose confirmed factor stays in force until it is confirmed.
pub async fn put_totp_pending(
    tx: &mut Tx,
    user_id: i64,
    s: &Sealed,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| {
        sqlx::query(
            "INSERT INTO totp_pending (user_id, key_id, master_key_id, wrapped_key, nonce, \
             ciphertext, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (user_id) DO UPDATE SET key_id = $2, master_key_id = $3, \
             wrapped_key = $4, nonce = $5, ciphertext = $6, created_at = $7",
        )
        .bind(user_id)
        .bind(&s.key_id)
        .bind(&s.master_key_id)
        .bind(&s.wrapped_key)
        .bind(&s.nonce)
        .bind(&s.ciphertext)
        .bind(now)
        .execute(c)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

pub async fn delete_totp_pending(tx: &mut Tx, user_id: i64) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "DELETE FROM totp_pending WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

/// The replacement secret waiting for confirmation, locked for the transaction (PostgreSQL: a
/// master key rotation cannot re-wrap it while it is being promoted).
/// Only one started after `since` counts: an older one is forgotten.
pub async fn totp_pending_for_update(
    tx: &mut Tx,
    user_id: i64,
    since: DateTime<Utc>,
) -> Result<Option<Sealed>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        sealed: SealedCols,
        created_at: DateTime<Utc>,
    }
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, created_at \
             FROM totp_pending WHERE user_id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, created_at \
             FROM totp_pending WHERE user_id = $1"
        }
    };
    let r = on_tx!(tx, |c| sqlx::query_as::<_, Row>(sql)
        .bind(user_id)
        .fetch_optional(c)
        .await)?;
    match r {
        Some(r) if r.created_at > since => Ok(Some(r.sealed.into())),
        Some(_) => {
            delete_totp_pending(tx, user_id).await?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// The replacement secret was confirmed at `step`: it becomes the user's factor, the old one
/// is gone.
pub async fn promote_totp_pending(
    tx: &mut Tx,
    user_id: i64,
    s: &Sealed,
    step: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE totp SET key_id = $2, master_key_id = $3, wrapped_key = $4, nonce = $5, \
         ciphertext = $6, confirmed = TRUE, last_step = $7, failures = 0, blocked_until = NULL, \
         created_at = $8, confirmed_at = $8 WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(&s.key_id)
    .bind(&s.master_key_id)
    .bind(&s.wrapped_key)
    .bind(&s.nonce)
    .bind(&s.ciphertext)
    .bind(step)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    delete_totp_pending(tx, user_id).await
}

/// The TOTP state of a user, locked for the rest of the transaction (PostgreSQL).
pub async fn totp_for_update(tx: &mut Tx, user_id: i64) -> Result<Option<TotpRow>> {
    let sql = match tx.backend() {
        Backend::Postgres => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, confirmed, last_step, \
             failures, blocked_until FROM totp WHERE user_id = $1 FOR UPDATE"
        }
        Backend::Sqlite => {
            "SELECT key_id, master_key_id, wrapped_key, nonce, ciphertext, confirmed, last_step, \
             failures, blocked_until FROM totp WHERE user_id = $1"
        }
    };
    let r = on_tx!(tx, |c| sqlx::query_as::<_, TotpDb>(sql)
        .bind(user_id)
        .fetch_optional(c)
        .await)?;
    Ok(r.map(|r| TotpRow {
        sealed: r.sealed.into(),
        confirmed: r.confirmed,
        last_step: r.last_step,
        failures: r.failures,
        blocked_until: r.blocked_until,
    }))
}

/// A code was accepted: its step becomes the last used one; failures reset.
pub async fn totp_accept(
    tx: &mut Tx,
    user_id: i64,
    step: i64,
    confirm: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE totp SET last_step = $2, failures = 0, blocked_until = NULL, \
         confirmed = (confirmed OR $3), confirmed_at = COALESCE(confirmed_at, $4) \
         WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(step)
    .bind(confirm)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn totp_failure(
    tx: &mut Tx,
    user_id: i64,
    failures: i64,
    blocked_until: Option<DateTime<Utc>>,
) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "UPDATE totp SET failures = $2, blocked_until = $3 WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(failures)
    .bind(blocked_until)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(())
}

pub async fn has_confirmed_totp(db: &Db, user_id: i64) -> Result<bool> {
    Ok(on_pool!(db, |p| sqlx::query_scalar::<_, bool>(
        "SELECT EXISTS (SELECT 1 FROM totp WHERE user_id = $1 AND confirmed)"
    )
    .bind(user_id)
    .fetch_one(p)
    .await)?)
}

/// Replaces a user's recovery codes with these hashes.
pub async fn set_recovery_codes(tx: &mut Tx, user_id: i64, hashes: &[String]) -> Result<()> {
    on_tx!(tx, |c| sqlx::query(
        "DELETE FROM totp_recovery_codes WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    for h in hashes {
        on_tx!(tx, |c| sqlx::query(
            "INSERT INTO totp_recovery_codes (user_id, code_hash) VALUES ($1, $2)"
        )
        .bind(user_id)
        .bind(h)
        .execute(c)
        .await
        .map(|r| r.rows_affected()))?;
    }
    Ok(())
}

/// Uses up a recovery code; true if it was valid and unused.
pub async fn use_recovery_code(
    tx: &mut Tx,
    user_id: i64,
    hash: &str,
    now: DateTime<Utc>,
) -> Result<bool> {
    let n = on_tx!(tx, |c| sqlx::query(
        "UPDATE totp_recovery_codes SET used_at = $3 WHERE user_id = $1 AND code_hash = $2 \
         AND used_at IS NULL"
    )
    .bind(user_id)
    .bind(hash)
    .bind(now)
    .execute(c)
    .await
    .map(|r| r.rows_affected()))?;
    Ok(n == 1)
}
