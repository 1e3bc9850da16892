//! Access tokens: HS256 JWTs that carry identity and session only, never permissions.
//! The algorithm is pinned; `exp`, `iat`, `nbf`, `iss`, `aud`, `jti` and `sub` are all required.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::keys::KeyBytes;

pub const ISSUER: &str = "changeguard";
pub const AUDIENCE: &str = "changeguard-api";

/// Clock skew tolerated on `nbf` and `exp` (several instances).
pub const LEEWAY_SECS: i64 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Session id (the row in `sessions`).
    pub jti: String,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &KeyBytes) -> Tokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        // Time is checked against the injected clock in `verify`, not the system's.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = true;
        Tokens {
            encoding: EncodingKey::from_secret(secret.expose_secret()),
            decoding: DecodingKey::from_secret(secret.expose_secret()),
            validation,
        }
    }

    pub fn issue(
        &self,
        user_id: i64,
        session_id: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> anyhow::Result<String> {
        let claims = Claims {
            sub: user_id.to_string(),
            jti: session_id.to_string(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: expires_at.timestamp(),
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a token valid at `now`; `None` for anything else (the reason is not told
    /// to clients). `nbf` and `exp` are held against `now` with [`LEEWAY_SECS`].
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Option<Claims> {
        let claims = match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => data.claims,
            Err(e) => {
                tracing::debug!(error = %e, "token refused");
                return None;
            }
        };
        let t = now.timestamp();
        if t + LEEWAY_SECS < claims.nbf || t - LEEWAY_SECS >= claims.exp {
            tracing::debug!("token refused: outside its validity");
            return None;
        }
        Some(claims)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use secrecy::SecretBox;

    use super::*;

    #[test]
    fn a_token_is_valid_only_inside_its_time_by_the_injected_clock() {
        let tokens = Tokens::new(&SecretBox::new(Box::new(vec![7u8; 32])));
        let t0 = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let token = tokens.issue(1, "s", t0, t0 + TimeDelta::hours(1)).unwrap();
        assert!(tokens.verify(&token, t0).is_some());
        assert!(tokens.verify(&token, t0 + TimeDelta::minutes(59)).is_some());
        assert!(
            tokens.verify(&token, t0 - TimeDelta::seconds(60)).is_none(),
            "before nbf"
        );
        let exp = t0 + TimeDelta::hours(1);
        assert!(tokens.verify(&token, exp).is_some(), "inside the leeway");
        let late = exp + TimeDelta::seconds(LEEWAY_SECS);
        assert!(
            tokens.verify(&token, late).is_none(),
            "after exp and the leeway"
        );
        assert!(
            tokens.verify(&format!("{token}x"), t0).is_none(),
            "tampered"
        );
    }
}
