//! The second factor: a user's TOTP secret (sealed like a credential), single-use codes,
//! rate-limited guesses, and hashed recovery codes.

use chrono::{DateTime, TimeDelta, Utc};
use rand::RngCore;
use secrecy::ExposeSecret;

use super::crypto::Binding;
use super::keyring::crypto_error;
use super::totp;
use crate::App;
use crate::db::{Tx, vault as db};
use crate::error::{Error, Result};

/// A replacement not confirmed within this long is forgotten (start again with a current code).
const PENDING_LIFETIME: TimeDelta = TimeDelta::hours(1);

pub fn binding(user_id: i64) -> Binding<'static> {
    Binding {
        kind: "totp",
        id: user_id,
        version: 1,
    }
}

fn refuse(code: &'static str, message: &str) -> Error {
    Error::Forbidden {
        code,
        message: message.to_string(),
        policy_ids: vec![],
    }
}

/// Checks `code` for `user_id` inside `tx` (the caller commits, with its audit entry, whatever
/// the outcome: an accepted step and a counted failure must both stick).
/// Outer error: the check could not be made; inner error: the code is refused.
pub async fn check(
    app: &App,
    tx: &mut Tx,
    user_id: i64,
    code: Option<&str>,
    confirming: bool,
    now: DateTime<Utc>,
) -> Result<Result<()>> {
    let Some(row) = db::totp_for_update(tx, user_id).await? else {
        return Ok(Err(refuse(
            "totp_not_enrolled",
            "尚未登记动态口令（POST /api/v1/me/totp） / No TOTP enrolled yet (POST /api/v1/me/totp)",
        )));
    };
    // Confirming a replacement: the confirmed factor stays in force until the new one is
    // confirmed with a code from the new phone.
    let pending = if confirming && row.confirmed {
        db::totp_pending_for_update(tx, user_id, now - PENDING_LIFETIME).await?
    } else {
        None
    };
    if row.confirmed == confirming && pending.is_none() {
        return Ok(Err(if confirming {
            Error::conflict(
                "totp_already_confirmed",
                "动态口令已确认 / TOTP is already confirmed",
            )
        } else {
            refuse(
                "totp_not_enrolled",
                "动态口令登记尚未确认（POST /api/v1/me/totp/confirm） / TOTP enrolment is not confirmed yet",
            )
        }));
    }
    if let Some(until) = row.blocked_until
        && until > now
    {
        return Ok(Err(Error::TooManyRequests {
            retry_after_secs: (until - now).num_seconds().max(1) as u64,
            subject: None,
        }));
    }
    let Some(code) = code.map(str::trim).filter(|c| !c.is_empty()) else {
        return Ok(Err(refuse(
            "totp_required",
            "需要当前的动态口令 / A fresh TOTP code is required",
        )));
    };
    if code.contains('-') && !confirming {
        if db::use_recovery_code(tx, user_id, &hash_recovery_code(app, user_id, code), now).await? {
            db::totp_accept(tx, user_id, row.last_step, false, now).await?;
            return Ok(Ok(()));
        }
    } else {
        let sealed = pending.as_ref().unwrap_or(&row.sealed);
        let secret = app
            .vault
            .open(tx, binding(user_id), sealed)
            .await
            .map_err(crypto_error)?;
        let Some(secret) = totp::decode(secret.expose_secret()) else {
            return Err(Error::Integrity {
                code: "totp_secret_invalid",
                message: "动态口令密钥损坏 / The stored TOTP secret is damaged".into(),
            });
        };
        let now_step = totp::step_of(now.timestamp());
        match totp::matching_step(&secret, code, now_step) {
            // A replacement's codes were never used: the steps spent are the old factor's.
            Some(step) if pending.is_some() => {
                db::promote_totp_pending(tx, user_id, sealed, step, now).await?;
                return Ok(Ok(()));
            }
            Some(step) if step > row.last_step => {
                db::totp_accept(tx, user_id, step, confirming, now).await?;
                return Ok(Ok(()));
            }
            Some(_) => {
                return Ok(Err(refuse(
                    "totp_replayed",
                    "该动态口令已使用过，请等待下一个 / This code was used already; wait for the next one",
                )));
            }
            None => {}
        }
    }
    let failures = row.failures + 1;
    let policy = &app.policies.security;
    let blocked = (failures >= policy.totp_max_failures)
        .then(|| now + TimeDelta::seconds(policy.totp_block_secs));
    db::totp_failure(tx, user_id, failures, blocked).await?;
    Ok(Err(refuse(
        "totp_invalid",
        "动态口令不正确 / Wrong TOTP code",
    )))
}

/// Random bytes in a recovery code: 120 bits (at least 112, as ASVS asks of a lookup secret).
const RECOVERY_CODE_BYTES: usize = 15;
const _: () = assert!(RECOVERY_CODE_BYTES * 8 >= 112 && RECOVERY_CODE_BYTES.is_multiple_of(5));

/// A recovery code: 24 base32 characters (120 bits) as `XXXXXX-XXXXXX-XXXXXX-XXXXXX`.
pub fn new_recovery_code() -> String {
    let mut b = [0u8; RECOVERY_CODE_BYTES];
    rand::rng().fill_bytes(&mut b);
    let s = totp::base32(&b);
    s.as_bytes()
        .chunks(6)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-")
}

/// Recovery codes are stored as a MAC keyed with the server's audit key and bound to their
/// user: a stolen copy of the database cannot be searched for codes without the key file.
pub fn hash_recovery_code(app: &App, user_id: i64, code: &str) -> String {
    let norm: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    app.sealer
        .keyed_digest("recovery code v2", format!("{user_id}|{norm}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recovery_code_carries_120_random_bits() {
        let code = new_recovery_code();
        let groups: Vec<&str> = code.split('-').collect();
        assert_eq!(groups.len(), 4, "{code}");
        assert!(groups.iter().all(|g| g.len() == 6), "{code}");
        assert_ne!(code, new_recovery_code());
    }
}
