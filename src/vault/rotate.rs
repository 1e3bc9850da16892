//! `changeguard keys rotate`: re-wraps every data key under a new master key, a batch per
//! transaction, while instances keep serving (they hold both keys during the rotation, see
//! [`super::keyring`]). Ciphertexts are untouched; only the wrapped data keys change.

use super::crypto::{self, MasterKey};
use super::keyring::{Interrupted, NEXT_KEY_FILE, NEXT_VAR, promote_key_files};
use crate::App;
use crate::audit::Entry;
use crate::db::vault as db;
use crate::deed::{Bookkeeping, Deed};
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

/// Rotates the master key of the started `app` (whose keyring checked the current key).
/// Beginning and promotion are audited (`vault.master_key.rotate_begin`, `…rotated`).
pub async fn rotate(app: &App) -> anyhow::Result<Rotation> {
    let (settings, dbh, keyring) = (&app.settings, &app.db, &app.vault);
    let now = || app.now();
    let mut tx = Deed::open(app).await?;
    let old = keyring
        .sealing_key(&mut tx)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tx.commit_bookkeeping(Bookkeeping::SealingKey).await?;
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
    Deed::audit_alone(
        app,
        &key_entry("vault.master_key.rotate_begin", &old, &new),
        now(),
    )
    .await?;
    // Every instance meets rows wrapped by the new key from here on and loads it.
    let mut rewrapped = rewrap_all(app, &old, &new).await?;
    let mut tx = Deed::open(app).await?;
    db::promote_master(&mut tx, &old.id, &new.id, now()).await?;
    tx.commit(&key_entry("vault.master_key.rotated", &old, &new), now())
        .await?;
    // Secrets an instance sealed with the old key just before the promotion.
    rewrapped += rewrap_all(app, &old, &new).await?;
    let retired_file = if file_mode {
        Some(promote_key_files(&dir, &old, &new)?)
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

/// Finishes a rotation a crash interrupted after its promotion (see [`Interrupted`]): re-wraps
/// every secret the old key still wraps, then moves the key files, audited
/// `vault.master_key.rotation_finished`. Several instances starting at once all succeed.
pub async fn finish_interrupted(app: &App, interrupted: Interrupted) -> anyhow::Result<()> {
    let Interrupted { old, current } = interrupted;
    let rewrapped = rewrap_all(app, &old, &current).await?;
    let dir = app.settings.key_dir();
    let retired = promote_key_files(&dir, &old, &current)?;
    let entry = key_entry("vault.master_key.rotation_finished", &old, &current).with_details(
        serde_json::json!({
            "old_key_id": old.id, "new_key_id": current.id, "rewrapped": rewrapped
        }),
    );
    Deed::audit_alone(app, &entry, app.now()).await?;
    tracing::warn!(
        key = %current.id,
        rewrapped,
        retired = %retired.display(),
        "an interrupted master key rotation was finished: every secret is wrapped by the current key"
    );
    Ok(())
}

/// The audit entry of a rotation step: key ids only, never key material.
fn key_entry(action: &str, old: &MasterKey, new: &MasterKey) -> Entry {
    Entry::ok(None, action, format!("master_key:{}", new.id))
        .with_details(serde_json::json!({"old_key_id": old.id, "new_key_id": new.id}))
}

/// Re-wraps in batches; a batch that fails (a busy SQLite file under load) is rolled back and
/// retried a few times: each batch is idempotent.
async fn rewrap_all(app: &App, old: &MasterKey, new: &MasterKey) -> anyhow::Result<u64> {
    let mut tries = 0;
    loop {
        match rewrap_batches(app, old, new).await {
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

async fn rewrap_batches(app: &App, old: &MasterKey, new: &MasterKey) -> anyhow::Result<u64> {
    let mut n = 0u64;
    loop {
        let mut tx = Deed::open(app).await?;
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
        tx.commit_bookkeeping(Bookkeeping::Rewrap).await?;
        n += rows.len() as u64;
    }
}
