//! Server keys (token signing, audit MAC): from configuration, or generated once into an
//! owner-only key file so that restarts keep them.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// 256-bit key material; `Debug` prints nothing of it.
pub type KeyBytes = SecretBox<Vec<u8>>;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{var} must be at least 256 random bits, written as 64 hex characters or base64 \
         (for example: openssl rand -hex 32)"
    )]
    TooShort { var: &'static str },
    #[error("key file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("no key: set {var} or provide the key file {path}")]
    Missing { var: &'static str, path: PathBuf },
}

/// Where a key comes from when it is not configured.
pub struct KeySource<'a> {
    /// Name of the environment variable, for messages.
    pub var: &'static str,
    pub configured: Option<&'a SecretString>,
    pub file: PathBuf,
}

/// The configured key, else the key file; never creates one.
pub fn load_existing(src: &KeySource<'_>) -> Result<KeyBytes, KeyError> {
    if let Some(value) = src.configured {
        let bytes =
            decode_key(value.expose_secret().trim()).ok_or(KeyError::TooShort { var: src.var })?;
        return Ok(SecretBox::new(Box::new(bytes)));
    }
    if !src.file.exists() {
        return Err(KeyError::Missing {
            var: src.var,
            path: src.file.clone(),
        });
    }
    let text = std::fs::read_to_string(&src.file).map_err(|e| KeyError::File {
        path: src.file.clone(),
        reason: e.to_string(),
    })?;
    let bytes = decode_key(text.trim()).ok_or_else(|| KeyError::File {
        path: src.file.clone(),
        reason: "does not hold a 256-bit key in hex".into(),
    })?;
    Ok(SecretBox::new(Box::new(bytes)))
}

/// Returns the key and whether a new key file was just created.
pub fn load_or_create(src: &KeySource<'_>) -> Result<(KeyBytes, bool), KeyError> {
    match load_existing(src) {
        Err(KeyError::Missing { .. }) => {}
        other => return other.map(|key| (key, false)),
    }
    let mut bytes = vec![0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    write_owner_only(&src.file, &hex::encode(&bytes)).map_err(|e| KeyError::File {
        path: src.file.clone(),
        reason: e.to_string(),
    })?;
    Ok((SecretBox::new(Box::new(bytes)), true))
}

/// A fingerprint that identifies a key without revealing it (HMAC of a fixed label).
pub fn fingerprint(key: &KeyBytes) -> String {
    use hmac::{Hmac, Mac};
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key.expose_secret()) else {
        return String::new();
    };
    mac.update(b"changeguard key fingerprint v1");
    hex::encode(mac.finalize().into_bytes())
}

/// Hex (64+ characters) or base64 (standard or URL-safe) of at least 32 bytes.
pub fn decode_key(s: &str) -> Option<Vec<u8>> {
    if s.chars().all(|c| c.is_ascii_hexdigit()) {
        // All hex digits: read as hex, never as base64 (a short hex key is short).
        return hex::decode(s).ok().filter(|b| b.len() >= 32);
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(s).ok())
        .filter(|b| b.len() >= 32)
}

/// Writes a new file readable by its owner only (mode 0600 on Unix).
pub fn write_owner_only(path: &Path, contents: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(contents.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_refused() {
        assert!(decode_key("secret").is_none());
        assert!(decode_key(&"ab".repeat(31)).is_none());
        assert_eq!(decode_key(&"ab".repeat(32)).map(|b| b.len()), Some(32));
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(decode_key(&b64).map(|b| b.len()), Some(32));
    }

    #[test]
    fn generated_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let src = KeySource {
            var: "X",
            configured: None,
            file: dir.path().join("k.key"),
        };
        let (a, created) = load_or_create(&src).unwrap();
        assert!(created);
        let (b, created) = load_or_create(&src).unwrap();
        assert!(!created);
        assert_eq!(a.expose_secret(), b.expose_secret());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&src.file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
