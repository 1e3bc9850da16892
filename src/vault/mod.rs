//! The credential vault (Art. 19): server and database passwords, platform keys, encrypted at
//! rest, handed out only to the right person, for the right change, at the right time, with a
//! fresh second factor, and recorded.
//!
//! Every reveal attempt, allowed or refused, writes its audit entry in the transaction that
//! decides it; the secret leaves only after that transaction committed.

pub mod crypto;
pub mod factor;
pub mod keyring;
pub mod machine;
pub mod rotate;
pub mod totp;
pub mod words;

mod credentials;
mod enrolment;
mod grants;
mod reports;
mod reveals;

pub use credentials::*;
pub use enrolment::*;
pub use grants::*;
pub use reports::*;
pub use reveals::*;

use chrono::{DateTime, TimeDelta, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::App;
use crate::audit::{Entry, Outcome};
use crate::db::vault::{self as db, Credential, CredentialGrant, NewCredential, WindowRow};
use crate::db::{StoreError, users as users_db};
use crate::deed::{Bookkeeping, Deed};
use crate::error::{Error, Result};
use crate::notify::{self, Bulletin, Parties};
use crate::rbac::{CredentialFacts, Decision, Facts, Principal, Resource, WindowFacts};
use crate::text::{self, Lines};
use crypto::Binding;
pub use keyring::Keyring;

const KINDS: [&str; 3] = ["password", "key", "token"];
const MAX_SECRET: usize = 16 * 1024;

fn binding(id: i64, version: i64) -> Binding<'static> {
    Binding {
        kind: "credential",
        id,
        version,
    }
}

fn not_found(e: StoreError) -> Error {
    match e {
        StoreError::NotFound => Error::NotFound { what: "credential" },
        other => other.into(),
    }
}

fn check_secret(secret: &SecretString) -> Result<()> {
    let s = secret.expose_secret();
    if s.is_empty() || s.len() > MAX_SECRET {
        return Err(Error::invalid(
            "invalid_secret",
            format!(
                "secret 不能为空且不超过 {MAX_SECRET} 字节 / secret must be 1 to {MAX_SECRET} bytes"
            ),
        ));
    }
    Ok(())
}

fn refuse(code: &'static str, message: &str, policy_ids: Vec<String>) -> Error {
    Error::Forbidden {
        code,
        message: message.to_string(),
        policy_ids,
    }
}
