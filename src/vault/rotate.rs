//! `changeguard keys rotate`: re-wraps every data key under a new master key, a batch per
//! transaction, while instances keep serving (they hold both keys during the rotation, see
//! [`super::keyring`]). Ciphertexts are untouched; only the wrapped data keys change.

use std::path::Path;

use chrono::{DateTime, Utc};

use super::crypto::{self, MasterKey};
use super::keyring::{KEY_FILE, Keyring, NEXT_KEY_FILE, NEXT_VAR};
use crate::config::Settings;
use crate::db::{Db, vault as db};
use crate::keys::{KeySource, load_or_create};

const BATCH: i64 = 200;

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub old_key_id: String,
    pub new_key_id: String,
    pub rewrapped: u64,
    /// Where the old key file was moved (key file mode), to keep for old backups.
    pub retired_file: Option<std::path::PathBuf>,
}

/// Rotates the master key. `keyring` is the started keyring (the current key checked).
pub async fn rotate(
    settings: &Settings,
    dbh: &Db,
    keyring: &Keyring,
    now: impl Fn() -> DateTime<Utc>,
) -> anyhow::Result<Rotation> {
    let mut tx = dbh.begin().await?;
    let old = keyring
        .sealing_key(&mut tx)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit().await?;
    let dir = settings.key_dir();
    let file_mode = settings.master_key.is_none();
    if !file_mode && settings.master_key_next.is_none() {
        anyhow::bail!(
            "the master key comes from CHANGEGUARD_MASTER_KEY: put the new key in {NEXT_VAR} \
             (here and on every running instance) and run this again"
        );
    }
    let (next, _) = load_or_create(&KeySource {
        var: NEXT_VAR,
        configured: settings.master_key_next.as_ref(),
        file: dir.join(NEXT_KEY_FILE),
    })?;
    let new = MasterKey::new(next).map_err(|e| anyhow::anyhow!("{e}"))?;
    if new.id == old.id {
        anyhow::bail!("the next master key is the current one");
    }
    db::insert_master(dbh, &new.id, &new.check_value, "next", now()).await?;
    // Every instance meets rows wrapped by the new key from here on and loads it.
    let mut rewrapped = rewrap_all(dbh, &old, &new).await?;
    let mut tx = dbh.begin().await?;
    db::promote_master(&mut tx, &old.id, &new.id, now()).await?;
    tx.commit().await?;
    // Secrets an instance sealed with the old key just before the promotion.
    rewrapped += rewrap_all(dbh, &old, &new).await?;
    let retired_file = if file_mode {
        let retired = dir.join(format!("{KEY_FILE}.retired-{}", old.id));
        move_file(&dir.join(KEY_FILE), &retired)?;
        move_file(&dir.join(NEXT_KEY_FILE), &dir.join(KEY_FILE))?;
        Some(retired)
    } else {
        None
    };
    Ok(Rotation {
        old_key_id: old.id.clone(),
        new_key_id: new.id,
        rewrapped,
        retired_file,
    })
}

/// Re-wraps in batches; a batch that fails (a busy SQLite file under load) is rolled back and
/// retried a few times: each batch is idempotent.
async fn rewrap_all(dbh: &Db, old: &MasterKey, new: &MasterKey) -> anyhow::Result<u64> {
    let mut tries = 0;
    loop {
        match rewrap_batches(dbh, old, new).await {
            Ok(n) => return Ok(n),
            Err(e) if tries < 5 => {
                tries += 1;
                tracing::warn!(error = %e, "key rotation batch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn rewrap_batches(dbh: &Db, old: &MasterKey, new: &MasterKey) -> anyhow::Result<u64> {
    let mut n = 0u64;
    loop {
        let mut tx = dbh.begin().await?;
        let rows = db::wrapped_by(&mut tx, &old.id, BATCH).await?;
        if rows.is_empty() {
            return Ok(n);
        }
        for row in &rows {
            let sealed = crypto::rewrap(old, new, &row.sealed).map_err(|e| {
                anyhow::anyhow!(
                    "{} row {}: {e}; nothing of this batch was changed",
                    row.table,
                    row.id
                )
            })?;
            db::store_wrapped(&mut tx, row, &sealed).await?;
        }
        tx.commit().await?;
        n += rows.len() as u64;
    }
}

fn move_file(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::rename(from, to)
        .map_err(|e| anyhow::anyhow!("moving {} to {}: {e}", from.display(), to.display()))
}
