//! Envelope encryption: every secret has its own random data key (XChaCha20-Poly1305, random
//! 192-bit nonces); the data key is wrapped by the master key. The ciphertext's associated data
//! binds it to its record (kind, record id, version, data key id), and the wrapped key's
//! associated data binds it to the data key id and the master key id: a ciphertext or wrapped
//! key copied onto another row, or altered in one bit, does not decrypt.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use zeroize::Zeroizing;

use crate::keys::KeyBytes;

const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    /// The ciphertext, its nonce or its wrapped key was altered or belongs to another record.
    #[error("the stored secret does not decrypt: it was altered or belongs to another record")]
    Tampered,
    /// The data key is wrapped by a master key this instance does not hold.
    #[error("the secret is wrapped by master key {0}, which this instance does not hold")]
    UnknownMasterKey(String),
    #[error("a key has the wrong length")]
    KeyLength,
}

/// The master key: 256 bits that never touch the database. `id` names it in rows.
pub struct MasterKey {
    key: KeyBytes,
    pub id: String,
    pub check_value: String,
}

impl MasterKey {
    pub fn new(key: KeyBytes) -> Result<MasterKey, CryptoError> {
        if key.expose_secret().len() < 32 {
            return Err(CryptoError::KeyLength);
        }
        let check_value = crate::keys::fingerprint(&key);
        // The first 16 hex digits of the check value name the key (not secret).
        let id = check_value.chars().take(16).collect();
        Ok(MasterKey {
            key,
            id,
            check_value,
        })
    }

    fn cipher(&self) -> Result<XChaCha20Poly1305, CryptoError> {
        XChaCha20Poly1305::new_from_slice(&self.key.expose_secret()[..32])
            .map_err(|_| CryptoError::KeyLength)
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish()
    }
}

/// What is stored for one encrypted secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub master_key_id: String,
    pub wrapped_key: Vec<u8>,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("master_key_id", &self.master_key_id)
            .finish_non_exhaustive()
    }
}

/// The record a secret belongs to, bound into the associated data.
#[derive(Debug, Clone, Copy)]
pub struct Binding<'a> {
    /// `credential` or `totp`.
    pub kind: &'a str,
    pub id: i64,
    pub version: i64,
}

fn record_aad(b: Binding<'_>, key_id: &str) -> Vec<u8> {
    format!("changeguard v1|{}|{}|{}|{key_id}", b.kind, b.id, b.version).into_bytes()
}

fn wrap_aad(key_id: &str, master_key_id: &str) -> Vec<u8> {
    format!("changeguard wrap v1|{key_id}|{master_key_id}").into_bytes()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

fn nonce_of(bytes: &[u8]) -> Result<XNonce, CryptoError> {
    XNonce::try_from(bytes).map_err(|_| CryptoError::Tampered)
}

/// Encrypts `plain` under a fresh data key, wrapped by `master`.
pub fn seal(master: &MasterKey, binding: Binding<'_>, plain: &[u8]) -> Result<Sealed, CryptoError> {
    let data_key = Zeroizing::new(random::<32>());
    let key_id = uuid::Uuid::new_v4().simple().to_string();
    let nonce = random::<NONCE_LEN>();
    let cipher =
        XChaCha20Poly1305::new_from_slice(&data_key[..]).map_err(|_| CryptoError::KeyLength)?;
    let ciphertext = cipher
        .encrypt(
            &nonce_of(&nonce)?,
            Payload {
                msg: plain,
                aad: &record_aad(binding, &key_id),
            },
        )
        .map_err(|_| CryptoError::Tampered)?;
    let wrapped_key = wrap(master, &key_id, &data_key[..])?;
    Ok(Sealed {
        key_id,
        master_key_id: master.id.clone(),
        wrapped_key,
        nonce: nonce.to_vec(),
        ciphertext,
    })
}

fn wrap(master: &MasterKey, key_id: &str, data_key: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = random::<NONCE_LEN>();
    let mut out = nonce.to_vec();
    let wrapped = master
        .cipher()?
        .encrypt(
            &nonce_of(&nonce)?,
            Payload {
                msg: data_key,
                aad: &wrap_aad(key_id, &master.id),
            },
        )
        .map_err(|_| CryptoError::Tampered)?;
    out.extend_from_slice(&wrapped);
    Ok(out)
}

fn unwrap(
    master: &MasterKey,
    key_id: &str,
    wrapped: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if wrapped.len() <= NONCE_LEN {
        return Err(CryptoError::Tampered);
    }
    let (nonce, body) = wrapped.split_at(NONCE_LEN);
    master
        .cipher()?
        .decrypt(
            &nonce_of(nonce)?,
            Payload {
                msg: body,
                aad: &wrap_aad(key_id, &master.id),
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Tampered)
}

/// Decrypts a sealed secret of `binding` with whichever of `masters` wrapped its data key.
pub fn open(
    masters: &[&MasterKey],
    binding: Binding<'_>,
    sealed: &Sealed,
) -> Result<SecretString, CryptoError> {
    let master = masters
        .iter()
        .find(|m| m.id == sealed.master_key_id)
        .ok_or_else(|| CryptoError::UnknownMasterKey(sealed.master_key_id.clone()))?;
    let data_key = unwrap(master, &sealed.key_id, &sealed.wrapped_key)?;
    let cipher =
        XChaCha20Poly1305::new_from_slice(&data_key[..]).map_err(|_| CryptoError::Tampered)?;
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                &nonce_of(&sealed.nonce)?,
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &record_aad(binding, &sealed.key_id),
                },
            )
            .map_err(|_| CryptoError::Tampered)?,
    );
    let text = std::str::from_utf8(&plain).map_err(|_| CryptoError::Tampered)?;
    Ok(SecretString::from(text.to_string()))
}

/// Re-wraps the data key of `sealed` from `from` to `to`; the ciphertext is untouched.
pub fn rewrap(from: &MasterKey, to: &MasterKey, sealed: &Sealed) -> Result<Sealed, CryptoError> {
    if sealed.master_key_id != from.id {
        return Err(CryptoError::UnknownMasterKey(sealed.master_key_id.clone()));
    }
    let data_key = unwrap(from, &sealed.key_id, &sealed.wrapped_key)?;
    Ok(Sealed {
        wrapped_key: wrap(to, &sealed.key_id, &data_key[..])?,
        master_key_id: to.id.clone(),
        ..sealed.clone()
    })
}

/// A new random master key.
pub fn generate_master() -> KeyBytes {
    SecretBox::new(Box::new(random::<32>().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(b: u8) -> MasterKey {
        MasterKey::new(SecretBox::new(Box::new(vec![b; 32]))).unwrap()
    }

    const B: Binding<'static> = Binding {
        kind: "credential",
        id: 7,
        version: 1,
    };

    #[test]
    fn round_trip_and_binding() {
        let m = master(1);
        let s = seal(&m, B, "金库 canary".as_bytes()).unwrap();
        assert_eq!(open(&[&m], B, &s).unwrap().expose_secret(), "金库 canary");
        // Another record, another version: refused.
        let other = Binding { id: 8, ..B };
        assert_eq!(open(&[&m], other, &s).unwrap_err(), CryptoError::Tampered);
        let newer = Binding { version: 2, ..B };
        assert_eq!(open(&[&m], newer, &s).unwrap_err(), CryptoError::Tampered);
        // Every single bit flip of the ciphertext, nonce or wrapped key is detected.
        for field in 0..3 {
            let len = [s.ciphertext.len(), s.nonce.len(), s.wrapped_key.len()][field];
            for i in 0..len * 8 {
                let mut t = s.clone();
                let buf =
                    [&mut t.ciphertext, &mut t.nonce, &mut t.wrapped_key][field].as_mut_slice();
                buf[i / 8] ^= 1 << (i % 8);
                assert_eq!(open(&[&m], B, &t).unwrap_err(), CryptoError::Tampered);
            }
        }
        // Another data key's wrapped key does not fit.
        let s2 = seal(&m, B, b"x").unwrap();
        let mixed = Sealed {
            wrapped_key: s2.wrapped_key.clone(),
            ..s.clone()
        };
        assert_eq!(open(&[&m], B, &mixed).unwrap_err(), CryptoError::Tampered);
    }

    #[test]
    fn rewrap_keeps_the_secret_and_the_old_key_is_needed_no_more() {
        let old = master(1);
        let new = master(2);
        assert_ne!(old.id, new.id);
        let s = seal(&old, B, b"s3cret").unwrap();
        let r = rewrap(&old, &new, &s).unwrap();
        assert_eq!(r.ciphertext, s.ciphertext);
        assert_eq!(open(&[&new], B, &r).unwrap().expose_secret(), "s3cret");
        assert!(matches!(
            open(&[&old], B, &r),
            Err(CryptoError::UnknownMasterKey(_))
        ));
        // A wrong key claiming the right id still fails.
        let mut impostor = master(3);
        impostor.id = new.id.clone();
        assert_eq!(
            open(&[&impostor], B, &r).unwrap_err(),
            CryptoError::Tampered
        );
    }
}
