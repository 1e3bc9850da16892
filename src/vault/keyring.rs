//! The master keys an instance holds, checked against the database at start-up.
//!
//! The master key comes from `CHANGEGUARD_MASTER_KEY` or the key file `changeguard.master.key`
//! (generated with owner-only permissions on the first start, see [`crate::keys`]). The database
//! keeps only each key's id and check value: a wrong key, or a missing key file for a database
//! that has one, refuses to start and changes nothing. During `changeguard keys rotate` the
//! next key is in `changeguard.master.key.next` (or `CHANGEGUARD_MASTER_KEY_NEXT`); instances
//! pick it up by themselves when they meet a row wrapped by it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::crypto::{self, Binding, CryptoError, MasterKey, Sealed};
use crate::config::Settings;
use crate::db::{Db, vault as db};
use crate::error::Error;
use crate::keys::{KeySource, decode_key, load_existing, load_or_create};

pub const KEY_FILE: &str = "changeguard.master.key";
pub const NEXT_KEY_FILE: &str = "changeguard.master.key.next";
pub const VAR: &str = "CHANGEGUARD_MASTER_KEY";
pub const NEXT_VAR: &str = "CHANGEGUARD_MASTER_KEY_NEXT";

#[derive(Clone)]
pub struct Keyring {
    keys: Arc<RwLock<Vec<Arc<MasterKey>>>>,
    dir: PathBuf,
    configured: Option<SecretString>,
    configured_next: Option<SecretString>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.ids())
            .finish()
    }
}

fn key_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// A rotation `changeguard keys rotate` promoted in the database but did not finish (a crash
/// before its second re-wrap or its file moves): the key file still holds the old key and the
/// next key file the database's current one. The instance starts holding both;
/// [`super::rotate::finish_interrupted`] re-wraps what the old key still wraps, then moves the
/// files.
pub struct Interrupted {
    pub old: Arc<MasterKey>,
    pub current: Arc<MasterKey>,
}

/// What [`Keyring::start`] found.
pub struct Started {
    pub ring: Keyring,
    /// A new key file was generated (the first start).
    pub created: bool,
    /// A rotation to finish once the service is built.
    pub interrupted: Option<Interrupted>,
}

/// The key in `file`, if it is one of the database's master keys (id and check value).
fn known_key(file: PathBuf, rows: &[db::MasterRow]) -> anyhow::Result<Option<MasterKey>> {
    let key = load_existing(&KeySource {
        var: VAR,
        configured: None,
        file,
    })?;
    let key = MasterKey::new(key).map_err(key_error)?;
    let known = rows
        .iter()
        .any(|r| r.key_id == key.id && r.check_value == key.check_value);
    Ok(known.then_some(key))
}

/// Looks for an interrupted rotation in the key directory (key file mode only). A next key file
/// that cannot be read, or that is not the database's current key, is left alone: `keys rotate`
/// resumes a rotation that was not promoted yet.
fn interrupted_rotation(
    dir: &Path,
    rows: &[db::MasterRow],
    current_id: &str,
) -> anyhow::Result<Option<Interrupted>> {
    let next = dir.join(NEXT_KEY_FILE);
    if !next.exists() {
        return Ok(None);
    }
    let current = match known_key(next.clone(), rows) {
        Ok(Some(k)) if k.id == current_id => k,
        Ok(_) => return Ok(None),
        Err(e) => {
            tracing::warn!(file = %next.display(), error = %e, "the next master key file cannot be read; it is left as it is");
            return Ok(None);
        }
    };
    let file = dir.join(KEY_FILE);
    if !file.exists() {
        // Only the second move was left (an older version moved the key file aside first);
        // another instance starting at the same moment may have done it.
        match std::fs::rename(&next, &file) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.exists() => {}
            other => other?,
        }
        tracing::warn!(
            key = current_id,
            "an interrupted master key rotation was finished: {} now holds the current key",
            file.display()
        );
        return Ok(None);
    }
    match known_key(file.clone(), rows)? {
        Some(old) if old.id != current_id => Ok(Some(Interrupted {
            old: Arc::new(old),
            current: Arc::new(current),
        })),
        // The key file already holds the current key: the other file is a stale copy.
        Some(_) => Ok(None),
        None => anyhow::bail!(
            "{} holds a key this database does not know, and {} holds its current master key \
             {current_id}: move the right key into place by hand. Nothing was changed.",
            file.display(),
            next.display()
        ),
    }
}

/// Copies `from` to a new file `to` (never replacing one), owner-only, synced to disk.
fn copy_new(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::io::Write;
    let bytes = std::fs::read(from)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut out = options.open(to)?;
    out.write_all(&bytes)?;
    out.sync_all()
}

/// The file moves that end a rotation: the old key file is linked to `….retired-<old id>`
/// (never replacing another file), then the next key file atomically takes the key file's place,
/// so a key file is there at every moment. Two instances doing it at once both succeed.
pub fn promote_key_files(dir: &Path, old: &MasterKey, new: &MasterKey) -> anyhow::Result<PathBuf> {
    let (file, next) = (dir.join(KEY_FILE), dir.join(NEXT_KEY_FILE));
    let retired = dir.join(format!("{KEY_FILE}.retired-{}", old.id));
    let id_in = |path: &Path| -> Option<String> {
        let text = std::fs::read_to_string(path).ok()?;
        let key =
            MasterKey::new(secrecy::SecretBox::new(Box::new(decode_key(text.trim())?))).ok()?;
        Some(key.id)
    };
    match std::fs::hard_link(&file, &retired).or_else(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Err(e),
        // A file system without hard links: a copy that never replaces a file, synced.
        _ => copy_new(&file, &retired),
    }) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if id_in(&retired).as_deref() != Some(&*old.id) {
                anyhow::bail!(
                    "{} exists and does not hold master key {}: move it away and run this again. \
                     The key files were not changed.",
                    retired.display(),
                    old.id
                );
            }
        }
        Err(e) => anyhow::bail!("linking {} to {}: {e}", file.display(), retired.display()),
    }
    match std::fs::rename(&next, &file) {
        Ok(()) => {}
        // Another instance moved it a moment ago.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && id_in(&file).as_deref() == Some(&*new.id) => {}
        Err(e) => anyhow::bail!("moving {} to {}: {e}", next.display(), file.display()),
    }
    Ok(retired)
}

impl Keyring {
    /// Loads the master key and checks it against the database.
    pub async fn start(
        settings: &Settings,
        db: &Db,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Started> {
        let dir = settings.key_dir();
        let file = dir.join(KEY_FILE);
        let rows = db::master_keys(db).await?;
        let current_row = rows.iter().find(|r| r.state == "current");
        if settings.master_key.is_none()
            && let Some(current) = current_row
            && let Some(interrupted) = interrupted_rotation(&dir, &rows, &current.key_id)?
        {
            let ring = Keyring {
                keys: Arc::new(RwLock::new(vec![
                    interrupted.current.clone(),
                    interrupted.old.clone(),
                ])),
                dir,
                configured: None,
                configured_next: settings.master_key_next.clone(),
            };
            return Ok(Started {
                ring,
                created: false,
                interrupted: Some(interrupted),
            });
        }
        if settings.master_key.is_none()
            && !file.exists()
            && let Some(row) = current_row
        {
            anyhow::bail!(
                "the credential vault's master key is missing: set {VAR} or restore {KEY_FILE} into {} \
                 from your backup (this database needs master key {}). Nothing was changed.",
                dir.display(),
                row.key_id
            );
        }
        let (key, created) = load_or_create(&KeySource {
            var: VAR,
            configured: settings.master_key.as_ref(),
            file: file.clone(),
        })?;
        let master = MasterKey::new(key).map_err(key_error)?;
        match rows.iter().find(|r| r.key_id == master.id) {
            None if rows.is_empty() => {
                db::insert_master(db, &master.id, &master.check_value, "current", now).await?;
            }
            Some(r) if r.check_value == master.check_value && r.state != "retired" => {}
            Some(r) if r.state == "retired" => anyhow::bail!(
                "{VAR} (or {KEY_FILE} in {}) is master key {}, which `changeguard keys rotate` retired; \
                 use the current master key{}. Nothing was changed.",
                dir.display(),
                master.id,
                current_row
                    .map(|c| format!(" ({})", c.key_id))
                    .unwrap_or_default()
            ),
            _ => anyhow::bail!(
                "{VAR} (or {KEY_FILE} in {}) is not the credential vault's master key for this database{}; \
                 restore the right key from your backup. Nothing was changed.",
                dir.display(),
                current_row
                    .map(|c| format!(" (it needs master key {})", c.key_id))
                    .unwrap_or_default()
            ),
        }
        let ring = Keyring {
            keys: Arc::new(RwLock::new(vec![Arc::new(master)])),
            dir,
            configured: settings.master_key.clone(),
            configured_next: settings.master_key_next.clone(),
        };
        // A rotation in progress: hold the next key too, if it can be found.
        if rows.iter().any(|r| r.state != "retired") {
            ring.reload(&rows);
        }
        Ok(Started {
            ring,
            created,
            interrupted: None,
        })
    }

    /// A keyring holding exactly these keys (benchmarks, tools).
    pub fn of(keys: Vec<MasterKey>) -> Keyring {
        Keyring {
            keys: Arc::new(RwLock::new(keys.into_iter().map(Arc::new).collect())),
            dir: PathBuf::new(),
            configured: None,
            configured_next: None,
        }
    }

    pub fn ids(&self) -> Vec<String> {
        self.snapshot().iter().map(|k| k.id.clone()).collect()
    }

    fn snapshot(&self) -> Vec<Arc<MasterKey>> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn key(&self, id: &str) -> Option<Arc<MasterKey>> {
        self.snapshot().into_iter().find(|k| k.id == id)
    }

    /// Re-reads the key sources (configured keys, the key file and the next key file) and adds
    /// any key whose id and check value the database knows.
    fn reload(&self, rows: &[db::MasterRow]) {
        let mut candidates: Vec<Vec<u8>> = Vec::new();
        for c in [&self.configured, &self.configured_next]
            .into_iter()
            .flatten()
        {
            if let Some(b) = decode_key(secrecy::ExposeSecret::expose_secret(c).trim()) {
                candidates.push(b);
            }
        }
        for name in [KEY_FILE, NEXT_KEY_FILE] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name))
                && let Some(b) = decode_key(text.trim())
            {
                candidates.push(b);
            }
        }
        for bytes in candidates {
            let Ok(k) = MasterKey::new(secrecy::SecretBox::new(Box::new(bytes))) else {
                continue;
            };
            let known = rows
                .iter()
                .any(|r| r.key_id == k.id && r.check_value == k.check_value);
            if known && self.key(&k.id).is_none() {
                match self.keys.write() {
                    Ok(mut keys) => keys.push(Arc::new(k)),
                    Err(poisoned) => poisoned.into_inner().push(Arc::new(k)),
                }
            }
        }
    }

    /// The key new secrets are sealed with: the database's current master key, read in the
    /// sealing transaction `tx` (so a concurrent rotation cannot leave the new row behind).
    /// After a rotation this instance picks the new key up from its key sources.
    pub async fn sealing_key(&self, tx: &mut crate::db::Tx) -> Result<Arc<MasterKey>, Error> {
        let rows = db::master_keys_tx(tx).await?;
        let Some(current) = rows.iter().find(|r| r.state == "current") else {
            return Err(unavailable("no current master key is recorded"));
        };
        if let Some(k) = self.key(&current.key_id) {
            return Ok(k);
        }
        self.reload(&rows);
        self.key(&current.key_id)
            .ok_or_else(|| unavailable(&format!("master key {} is not available", current.key_id)))
    }

    pub fn seal(
        &self,
        key: &MasterKey,
        binding: Binding<'_>,
        plain: &[u8],
    ) -> Result<Sealed, Error> {
        crypto::seal(key, binding, plain).map_err(crypto_error)
    }

    /// Decrypts; a row wrapped by a key this instance does not hold yet (a rotation elsewhere)
    /// makes it look for that key once.
    /// Reads inside the caller's transaction `tx`: nothing may wait on the pool while a
    /// transaction holds the (SQLite) write lock.
    pub async fn open(
        &self,
        tx: &mut crate::db::Tx,
        binding: Binding<'_>,
        sealed: &Sealed,
    ) -> Result<SecretString, CryptoError> {
        if self.key(&sealed.master_key_id).is_none()
            && let Ok(rows) = db::master_keys_tx(tx).await
        {
            self.reload(&rows);
        }
        self.open_now(binding, sealed)
    }

    /// Decrypts with the keys held now.
    pub fn open_now(
        &self,
        binding: Binding<'_>,
        sealed: &Sealed,
    ) -> Result<SecretString, CryptoError> {
        let keys = self.snapshot();
        let refs: Vec<&MasterKey> = keys.iter().map(|k| k.as_ref()).collect();
        crypto::open(&refs, binding, sealed)
    }
}

fn unavailable(detail: &str) -> Error {
    Error::Integrity {
        code: "vault_key_unavailable",
        message: format!(
            "凭据保管库主密钥不可用 / The vault's master key is not available: {detail}"
        ),
    }
}

pub fn crypto_error(e: CryptoError) -> Error {
    match e {
        CryptoError::UnknownMasterKey(id) => unavailable(&format!("master key {id} is not held")),
        CryptoError::Tampered | CryptoError::KeyLength => Error::Integrity {
            code: "credential_undecryptable",
            message: "存储的密文无法解密（已被篡改或不属于此记录） / The stored ciphertext does not decrypt: \
                      it was altered or belongs to another record"
                .into(),
        },
    }
}
