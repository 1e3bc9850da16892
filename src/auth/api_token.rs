//! API tokens of service accounts: `cgt_` and 256 random bits (base64url), shown once; only
//! the SHA-256 of the whole token is stored, so a copy of the database signs nobody in.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::App;
use crate::db::tokens as db;
use crate::error::Result;
use crate::rbac::Principal;

/// What every API token starts with: recognisable in a leaked log or a secret scanner.
pub const PREFIX: &str = "cgt_";

/// A new token and the hash to store.
pub fn generate() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash(&token);
    (token, hash)
}

/// The stored form of a token.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The service account behind `cgt_<secret>`: a live token of an active service account.
/// Read from the database on every request, so a revoked token is dead on the next request
/// on every instance.
pub(super) async fn authenticate(app: &App, secret: &str, now: DateTime<Utc>) -> Result<Principal> {
    // 32 bytes in base64url are 43 characters; anything else was never issued.
    if secret.len() != 43 {
        return Err(super::unauthenticated_as(None));
    }
    let found = db::token_user(&app.db, &hash(&format!("{PREFIX}{secret}")), now)
        .await?
        .ok_or_else(|| super::unauthenticated_as(None))?;
    if found
        .last_used_at
        .is_none_or(|t| t < now - db::LAST_USED_RESOLUTION)
    {
        db::touch(&app.db, found.token_id, now).await?;
    }
    let user = found.user;
    // Only roles for machines count for a token, whatever the database holds.
    let roles = found
        .roles
        .into_iter()
        .filter(|r| app.policies.roles.get(r).is_some_and(|role| role.machine))
        .collect();
    Ok(Principal {
        user_id: user.id,
        username: user.username,
        display_name: user.display_name,
        department: user.department,
        email: user.email,
        roles,
        session_id: format!("token:{}", found.token_id),
        token: Some(found.token_name),
        permitted_by: Vec::new(),
        scope: crate::db::users::SessionScope::Full,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_is_prefixed_random_and_stored_as_its_hash() {
        let (a, ha) = super::generate();
        let (b, _) = super::generate();
        assert!(a.starts_with("cgt_"));
        assert_eq!(a.len(), 4 + 43);
        assert_ne!(a, b);
        assert_eq!(ha, super::hash(&a));
        assert_eq!(ha.len(), 64);
        assert!(!ha.contains(&a[4..]));
    }
}
