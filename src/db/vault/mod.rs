//! The credential vault's SQL: master key check values, credentials, standing grants, TOTP,
//! recovery codes.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Backend, Db, Result, Tx};
use crate::vault::crypto::Sealed;
use crate::{on_pool, on_tx};

mod access;
mod credentials;
mod grants;
mod masters;
mod pending;
mod rotation;
mod totp;
mod windows;

pub use access::*;
pub use credentials::*;
pub use grants::*;
pub use masters::*;
pub use pending::*;
pub use rotation::*;
pub use totp::*;
pub use windows::*;

/// The five columns every sealed secret is stored in (credentials, totp, totp_pending).
#[derive(sqlx::FromRow)]
struct SealedCols {
    key_id: String,
    master_key_id: String,
    wrapped_key: Vec<u8>,
    nonce: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl From<SealedCols> for Sealed {
    fn from(c: SealedCols) -> Sealed {
        Sealed {
            key_id: c.key_id,
            master_key_id: c.master_key_id,
            wrapped_key: c.wrapped_key,
            nonce: c.nonce,
            ciphertext: c.ciphertext,
        }
    }
}
