//! Signed admission tokens: a compact JWS (EdDSA, Ed25519) that a tool shows to the place the
//! change happens (a jump host, a deploy step, a database wrapper). Whoever holds the public
//! keys (`/.well-known/jwks.json`) verifies it offline with `changeguard gate verify`.
//!
//! The signing key is the 32-byte seed in `changeguard.gate.key` (or `CHANGEGUARD_GATE_KEY`).
//! `changeguard keys rotate-gate` retires it to `changeguard.gate.key.retired-<kid>.json` (the
//! public key only): retired public keys stay published for the longest window a change may have, so tokens they signed
//! verify until they expire.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, TimeDelta, Utc};
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Settings;
use crate::keys::{KeySource, load_or_create};

/// The audience of every admission token.
pub const AUDIENCE: &str = "changeguard-gate";
pub const KEY_FILE: &str = "changeguard.gate.key";
const RETIRED_PREFIX: &str = "changeguard.gate.key.retired-";

/// What an admission says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The change id.
    pub sub: String,
    pub systems: Vec<String>,
    pub category: String,
    pub action: Option<String>,
    /// The assignee's username.
    pub assignee: String,
    pub iat: i64,
    pub nbf: i64,
    /// The end of the change's window.
    pub exp: i64,
    pub jti: String,
}

/// One public key as a JWK (OKP, Ed25519).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
    pub alg: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// The gate's signing key and the public keys it publishes.
pub struct AdmissionKeys {
    kid: String,
    encoding: EncodingKey,
    jwks: Jwks,
}

fn jwk_of(key: &SigningKey) -> Jwk {
    let public = key.verifying_key().to_bytes();
    Jwk {
        kty: "OKP".into(),
        crv: "Ed25519".into(),
        x: URL_SAFE_NO_PAD.encode(public),
        kid: hex::encode(&Sha256::digest(public)[..8]),
        use_: "sig".into(),
        alg: "EdDSA".into(),
    }
}

fn signing_key(seed: &[u8]) -> anyhow::Result<SigningKey> {
    let seed: [u8; 32] = seed
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| anyhow::anyhow!("the gate key must be 32 bytes"))?;
    Ok(SigningKey::from_bytes(&seed))
}

impl AdmissionKeys {
    /// Loads (or creates) the signing key; publishes it with the retired keys still in use.
    pub fn load(settings: &Settings, max_window: TimeDelta) -> anyhow::Result<(Self, bool)> {
        let dir = settings.key_dir();
        let (seed, created) = load_or_create(&KeySource {
            var: "CHANGEGUARD_GATE_KEY",
            configured: settings.gate_key.as_ref(),
            file: dir.join(KEY_FILE),
        })?;
        let key = signing_key(seed.expose_secret())?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| anyhow::anyhow!("gate key: {e}"))?;
        let current = jwk_of(&key);
        let mut keys = vec![current.clone()];
        for (retired, at) in retired_keys(&dir)? {
            let young = SystemTime::now().duration_since(at).map_or(true, |age| {
                age.as_secs() < max_window.num_seconds().max(0) as u64
            });
            if young && retired.kid != current.kid {
                keys.push(retired);
            }
        }
        Ok((
            AdmissionKeys {
                kid: current.kid,
                encoding: EncodingKey::from_ed_der(der.as_bytes()),
                jwks: Jwks { keys },
            },
            created,
        ))
    }

    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }

    pub fn sign(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.encoding)
            .map_err(|e| anyhow::anyhow!("signing an admission: {e}"))
    }
}

/// The retired keys of the key directory, with the time each was retired.
fn retired_keys(dir: &Path) -> anyhow::Result<Vec<(Jwk, SystemTime)>> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(out);
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.starts_with(RETIRED_PREFIX) {
            continue;
        }
        let text = std::fs::read_to_string(e.path())?;
        let jwk: Jwk = serde_json::from_str(&text)
            .map_err(|err| anyhow::anyhow!("{name} does not hold a retired gate key: {err}"))?;
        let at = e.metadata()?.modified()?;
        out.push((jwk, at));
    }
    Ok(out)
}

/// Retires the current signing key (`changeguard keys rotate-gate`): the next start signs
/// with a new key and still publishes the old one. Returns the retired file.
pub fn rotate(settings: &Settings) -> anyhow::Result<PathBuf> {
    if settings.gate_key.is_some() {
        anyhow::bail!(
            "the gate key comes from CHANGEGUARD_GATE_KEY: set a new value there, and keep the \
             old one published by putting its public JWK in {RETIRED_PREFIX}<kid>.json in the key directory"
        );
    }
    let dir = settings.key_dir();
    let text = std::fs::read_to_string(dir.join(KEY_FILE))?;
    let seed = crate::keys::decode_key(text.trim())
        .ok_or_else(|| anyhow::anyhow!("{KEY_FILE} does not hold a gate key"))?;
    // Only the public key is kept: a retired key verifies, it never signs again. The file is
    // new, so its time is the retirement's (the JWKS keeps it for the longest window).
    let jwk = jwk_of(&signing_key(&seed)?);
    let retired = dir.join(format!("{RETIRED_PREFIX}{}.json", jwk.kid));
    crate::keys::write_owner_only(&retired, &serde_json::to_string(&jwk)?)?;
    std::fs::remove_file(dir.join(KEY_FILE))?;
    load_or_create(&KeySource {
        var: "CHANGEGUARD_GATE_KEY",
        configured: None,
        file: dir.join(KEY_FILE),
    })?;
    Ok(retired)
}

/// Why an admission token does not admit.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Rejection {
    #[error("not a well-formed admission token")]
    Malformed,
    #[error("signed by a key that is not in the JWKS (kid {0})")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("the admission has expired (the change window is over)")]
    Expired,
    #[error("the admission is not valid yet (the change window has not begun)")]
    NotYetValid,
    #[error("not an admission token of the changeguard gate")]
    WrongAudience,
    #[error("the admission is for {0}, not for system {1}")]
    WrongSystem(String, String),
    #[error("the admission is for a change of category {0}, not {1}")]
    WrongCategory(String, String),
}

/// Verifies `token` for `system` with the keys of `jwks` at `now`: what `changeguard gate
/// verify` does, with no server.
pub fn verify(
    jwks: &Jwks,
    token: &str,
    system: &str,
    category: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Claims, Rejection> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    if header.alg != Algorithm::EdDSA {
        return Err(Rejection::Malformed);
    }
    let kid = header.kid.unwrap_or_default();
    let jwk = jwks
        .keys
        .iter()
        .find(|k| k.kid == kid && k.kty == "OKP" && k.crv == "Ed25519")
        .ok_or_else(|| Rejection::UnknownKey(kid.clone()))?;
    let key = DecodingKey::from_ed_components(&jwk.x).map_err(|_| Rejection::UnknownKey(kid))?;
    let mut v = Validation::new(Algorithm::EdDSA);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "nbf", "aud", "sub"]);
    // Time is checked below against `now`, not the library's clock.
    v.validate_exp = false;
    v.validate_nbf = false;
    let data = jsonwebtoken::decode::<Claims>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => Rejection::BadSignature,
            K::InvalidAudience => Rejection::WrongAudience,
            _ => Rejection::Malformed,
        }
    })?;
    let c = data.claims;
    let t = now.timestamp();
    if t >= c.exp {
        return Err(Rejection::Expired);
    }
    if t < c.nbf {
        return Err(Rejection::NotYetValid);
    }
    if !c.systems.iter().any(|s| s == system) {
        return Err(Rejection::WrongSystem(c.systems.join(", "), system.into()));
    }
    if let Some(k) = category
        && k != c.category
    {
        return Err(Rejection::WrongCategory(c.category, k.into()));
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8) -> AdmissionKeys {
        let key = SigningKey::from_bytes(&[seed; 32]);
        let jwk = jwk_of(&key);
        AdmissionKeys {
            kid: jwk.kid.clone(),
            encoding: EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes()),
            jwks: Jwks { keys: vec![jwk] },
        }
    }

    fn claims(now: DateTime<Utc>) -> Claims {
        Claims {
            iss: "https://changeguard.bank.example".into(),
            aud: AUDIENCE.into(),
            sub: "7".into(),
            systems: vec!["core-banking".into()],
            category: "upgrade".into(),
            action: Some("software".into()),
            assignee: "op.zhang".into(),
            iat: now.timestamp(),
            nbf: now.timestamp() - 60,
            exp: now.timestamp() + 3600,
            jti: "j1".into(),
        }
    }

    #[test]
    fn a_signed_admission_verifies_only_as_issued() {
        let now = Utc::now();
        let k = keys(1);
        let token = k.sign(&claims(now)).unwrap();
        assert_eq!(
            verify(k.jwks(), &token, "core-banking", None, now)
                .unwrap()
                .sub,
            "7"
        );
        assert!(matches!(
            verify(k.jwks(), &token, "atm", None, now),
            Err(Rejection::WrongSystem(..))
        ));
        assert!(matches!(
            verify(k.jwks(), &token, "core-banking", Some("hardware"), now),
            Err(Rejection::WrongCategory(..))
        ));
        assert!(verify(k.jwks(), &token, "core-banking", Some("upgrade"), now).is_ok());
        assert_eq!(
            verify(
                k.jwks(),
                &token,
                "core-banking",
                None,
                now + TimeDelta::hours(2)
            ),
            Err(Rejection::Expired)
        );
        assert_eq!(
            verify(
                k.jwks(),
                &token,
                "core-banking",
                None,
                now - TimeDelta::hours(1)
            ),
            Err(Rejection::NotYetValid)
        );
        // Another key with the same kid: the signature fails.
        let other = keys(2);
        let forged = {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(k.kid.clone());
            jsonwebtoken::encode(&header, &claims(now), &other.encoding).unwrap()
        };
        assert_eq!(
            verify(k.jwks(), &forged, "core-banking", None, now),
            Err(Rejection::BadSignature)
        );
        assert!(matches!(
            verify(
                k.jwks(),
                &other.sign(&claims(now)).unwrap(),
                "core-banking",
                None,
                now
            ),
            Err(Rejection::UnknownKey(_))
        ));
        // A changed payload breaks the signature.
        let mut parts: Vec<String> = token.split('.').map(str::to_string).collect();
        let mut c = claims(now);
        c.systems.push("atm".into());
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            verify(k.jwks(), &parts.join("."), "atm", None, now),
            Err(Rejection::BadSignature)
        );
    }
}
