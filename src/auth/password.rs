//! Password policy and hashing. argon2id (OWASP parameters) runs on blocking threads, at most
//! `concurrency` at a time, so logins never starve the async runtime.

use std::sync::Arc;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

const COMMON: &str = include_str!("common-passwords.txt");
pub const MIN_LEN: usize = 12;
pub const MAX_LEN: usize = 256;

/// Checks a new password: 12 to 256 characters, not a common password, not the username.
/// No composition rules (NIST SP 800-63B).
pub fn check_policy(password: &str, username: &str) -> Result<()> {
    let len = password.chars().count();
    if len < MIN_LEN {
        return Err(Error::invalid(
            "weak_password",
            format!(
                "密码至少需要 {MIN_LEN} 个字符 / The password needs at least {MIN_LEN} characters"
            ),
        ));
    }
    if len > MAX_LEN {
        return Err(Error::invalid(
            "weak_password",
            format!(
                "密码最多 {MAX_LEN} 个字符 / The password may have at most {MAX_LEN} characters"
            ),
        ));
    }
    let lower = password.to_lowercase();
    let first = lower.chars().next();
    let common = COMMON
        .lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| l == lower);
    let one_char = first.is_some_and(|f| lower.chars().all(|c| c == f));
    let has_username = !username.is_empty() && lower.contains(&username.to_lowercase());
    if common || one_char || has_username {
        return Err(Error::invalid(
            "weak_password",
            "密码过于常见或包含用户名 / The password is too common or contains the username",
        ));
    }
    Ok(())
}

#[derive(Clone)]
pub struct Hasher {
    permits: Arc<Semaphore>,
    /// Of those, how many may work for usernames that do not exist: a flood of made-up names
    /// cannot take every slot from the staff signing in.
    unknown: Arc<Semaphore>,
    /// Verified against when the user does not exist, so both cases take the same time.
    dummy: Arc<String>,
}

impl Hasher {
    pub fn new(concurrency: usize) -> anyhow::Result<Hasher> {
        let dummy = hash_blocking("changeguard-dummy-password")?;
        Ok(Hasher {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            unknown: Arc::new(Semaphore::new((concurrency / 2).max(1))),
            dummy: Arc::new(dummy),
        })
    }

    /// A slot for one hash, held by the blocking task itself: a request that ends early (client
    /// gone, timeout) cannot free it while argon2 still runs.
    async fn slot(&self) -> Result<OwnedSemaphorePermit> {
        Ok(self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(anyhow::Error::new)?)
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String> {
        let permit = self.slot().await?;
        let pw = password.clone();
        let hashed = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            hash_blocking(pw.expose_secret())
        })
        .await
        .map_err(anyhow::Error::new)??;
        Ok(hashed)
    }

    /// Verifies `password` against `stored`, or against a dummy hash when `stored` is `None`
    /// (at most half the slots, at least one, do that work at once). A made-up name never
    /// queues: when those slots are busy it is refused without the dummy work, and the failed
    /// login floor ([`crate::http`]'s 400 ms) shapes its answer in time. So a flood of made-up
    /// names neither takes the staff's slots nor makes unknown names answer later than known
    /// ones.
    pub async fn verify(&self, password: &SecretString, stored: Option<&str>) -> Result<bool> {
        let unknown = match stored {
            Some(_) => None,
            None => match self.unknown.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => return Ok(false),
            },
        };
        let permit = self.slot().await?;
        let real = stored.is_some();
        let hash = stored.map_or_else(|| self.dummy.as_str().to_string(), str::to_string);
        let pw = password.clone();
        let ok = tokio::task::spawn_blocking(move || {
            let _permits = (permit, unknown);
            PasswordHash::new(&hash)
                .map(|parsed| {
                    Argon2::default()
                        .verify_password(pw.expose_secret().as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap_or(false)
        })
        .await
        .map_err(anyhow::Error::new)?;
        Ok(ok && real)
    }
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    // Argon2::default() is argon2id v19, m = 19456 KiB, t = 2, p = 1: the OWASP minimum.
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))?;
    Ok(hash.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("short", "x").is_err());
        assert!(check_policy("Password1234", "x").is_err());
        assert!(check_policy("aaaaaaaaaaaaaaa", "x").is_err());
        assert!(check_policy("my-name-is-alice!", "alice").is_err());
        assert!(check_policy("correct horse battery", "alice").is_ok());
        assert!(check_policy("变更管理系统的长密码口令", "alice").is_ok());
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = Hasher::new(1).unwrap();
        let pw = SecretString::from("correct horse battery");
        let stored = h.hash(&pw).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h.verify(&pw, Some(&stored)).await.unwrap());
        assert!(
            !h.verify(&SecretString::from("wrong horse battery"), Some(&stored))
                .await
                .unwrap()
        );
        assert!(!h.verify(&pw, None).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_usernames_never_take_every_slot() {
        let h = Hasher::new(4).unwrap();
        let pw = SecretString::from("correct horse battery");
        let stored = h.hash(&pw).await.unwrap();
        // Two dummy verifications (half of four slots) are running.
        let busy = h.unknown.clone().acquire_many_owned(2).await.unwrap();
        let wait = std::time::Duration::from_millis(300);
        // A third made-up name does not queue behind them: it is refused at once, without
        // the dummy work (the failed-login floor shapes its answer) ...
        let refused = tokio::time::timeout(wait, h.verify(&pw, None)).await;
        assert!(!refused.expect("a made-up name queued").unwrap());
        assert_eq!(h.permits.available_permits(), 4);
        // ... while a real account is verified at once.
        let real = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            h.verify(&pw, Some(&stored)),
        );
        assert!(real.await.unwrap().unwrap());
        drop(busy);
        assert!(!h.verify(&pw, None).await.unwrap());
    }
}
