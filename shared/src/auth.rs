//! Bearer-token verification (and, for `--dev` and tests, HS256 signing).
//!
//! The algorithm is pinned by configuration, never read from the token: an HS256
//! deployment only accepts HS256, a PEM-key deployment only RS256 or ES256. That
//! is what refuses `alg: none` and the classic HS/RS confusion (an attacker
//! signing with the public key as an HMAC secret).

use crate::domain::{Role, Timestamp, UserId};
use crate::protocol::DisplayName;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Why a token was refused. Never includes the token itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing bearer token")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// Signature, algorithm, issuer, audience or shape is wrong.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The claims we read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Expiry, seconds since the epoch (required).
    pub exp: u64,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Issuer (checked when `JWT_ISSUER` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience (checked when `JWT_AUDIENCE` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// From `sub`.
    pub user_id: UserId,
    /// From `role`.
    pub role: Role,
    /// From `name`, when present and well-formed.
    pub name: Option<DisplayName>,
    /// From `exp`, in milliseconds.
    pub expires_at: Timestamp,
}

/// Where the verification key comes from.
#[derive(Clone)]
pub enum KeySource {
    /// `JWT_SECRET`, HS256.
    Secret(SecretString),
    /// Contents of `JWT_PUBLIC_KEY_FILE` (RSA → RS256, EC P-256 → ES256).
    PublicKeyPem(Vec<u8>),
}

/// Verifies tokens with one pinned algorithm.
#[derive(Clone)]
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// Builds a verifier; `issuer` and `audience` are checked when given.
    pub fn new(
        source: &KeySource,
        issuer: Option<&str>,
        audience: Option<&str>,
    ) -> Result<Self, String> {
        let (key, alg) = match source {
            KeySource::Secret(secret) => {
                let s = secret.expose_secret();
                if s.len() < 16 {
                    return Err("must be at least 16 bytes".into());
                }
                (DecodingKey::from_secret(s.as_bytes()), Algorithm::HS256)
            }
            KeySource::PublicKeyPem(pem) => {
                if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
                    (k, Algorithm::RS256)
                } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                    (k, Algorithm::ES256)
                } else {
                    return Err("not an RSA or EC public key in PEM format".into());
                }
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = 5;
        let mut required = vec!["exp", "sub"];
        required.extend(issuer.map(|_| "iss"));
        required.extend(audience.map(|_| "aud"));
        validation.set_required_spec_claims(&required);
        match issuer {
            Some(iss) => validation.set_issuer(&[iss]),
            None => validation.iss = None,
        }
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        Ok(Self { key, validation })
    }

    /// Verifies a token and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                other => AuthError::Invalid(format!("{other:?}")),
            },
        )?;
        let claims = data.claims;
        let user_id = UserId::parse(claims.sub).map_err(|e| AuthError::Invalid(e.to_string()))?;
        Ok(Identity {
            user_id,
            role: claims.role,
            name: claims.name.and_then(|n| DisplayName::parse(n).ok()),
            expires_at: Timestamp::from_millis((claims.exp as i64).saturating_mul(1000)),
        })
    }
}

/// Signs HS256 tokens: used by `--dev` (`POST /dev/token`), tests and the load generator.
#[derive(Clone)]
pub struct TokenSigner {
    key: EncodingKey,
}

impl TokenSigner {
    /// A signer for the given shared secret.
    pub fn hs256(secret: &SecretString) -> Self {
        Self {
            key: EncodingKey::from_secret(secret.expose_secret().as_bytes()),
        }
    }

    /// Signs the claims.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.key)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }

    /// Signs a token for `sub` with `role`, valid for `ttl_secs`.
    pub fn token_for(
        &self,
        sub: &str,
        role: Role,
        name: Option<&str>,
        ttl_secs: i64,
    ) -> Result<String, AuthError> {
        let exp = (Timestamp::now().millis() / 1000 + ttl_secs).max(0) as u64;
        self.sign(&Claims {
            sub: sub.to_owned(),
            role,
            exp,
            name: name.map(str::to_owned),
            iss: None,
            aud: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn secret() -> SecretString {
        SecretString::from("a-test-secret-of-32-bytes-length!")
    }

    fn verifier() -> TokenVerifier {
        TokenVerifier::new(&KeySource::Secret(secret()), None, None).unwrap()
    }

    #[test]
    fn accepts_a_well_signed_token() {
        let t = TokenSigner::hs256(&secret())
            .token_for("p1", Role::Patient, Some("Ann"), 60)
            .unwrap();
        let id = verifier().verify(&t).unwrap();
        assert_eq!(id.user_id.as_str(), "p1");
        assert_eq!(id.role, Role::Patient);
        assert_eq!(id.name.unwrap().as_str(), "Ann");
    }

    #[test]
    fn refuses_expired_tokens() {
        let t = TokenSigner::hs256(&secret())
            .token_for("p1", Role::Patient, None, -120)
            .unwrap();
        assert_eq!(verifier().verify(&t), Err(AuthError::Expired));
    }

    #[test]
    fn refuses_another_secret() {
        let t = TokenSigner::hs256(&SecretString::from("another-secret-another-secret!!"))
            .token_for("p1", Role::Patient, None, 60)
            .unwrap();
        assert!(matches!(verifier().verify(&t), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn refuses_alg_none() {
        // header {"alg":"none","typ":"JWT"}, payload with a valid exp, empty signature
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let exp = Timestamp::now().millis() / 1000 + 600;
        let payload = format!(r#"{{"sub":"p1","role":"patient","exp":{exp}}}"#);
        let payload = URL_SAFE_NO_PAD.encode(payload.as_bytes());
        let token = format!("{header}.{payload}.");
        assert!(matches!(
            verifier().verify(&token),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let v = TokenVerifier::new(&KeySource::Secret(secret()), Some("booking"), Some("chat"))
            .unwrap();
        let signer = TokenSigner::hs256(&secret());
        let exp = (Timestamp::now().millis() / 1000 + 60) as u64;
        let mut claims = Claims {
            sub: "d1".into(),
            role: Role::Doctor,
            exp,
            name: None,
            iss: Some("booking".into()),
            aud: Some("chat".into()),
        };
        assert!(v.verify(&signer.sign(&claims).unwrap()).is_ok());
        claims.aud = Some("other".into());
        assert!(v.verify(&signer.sign(&claims).unwrap()).is_err());
        claims.aud = Some("chat".into());
        claims.iss = None;
        assert!(v.verify(&signer.sign(&claims).unwrap()).is_err());
    }

    #[test]
    fn refuses_short_secrets_at_configuration_time() {
        assert!(TokenVerifier::new(&KeySource::Secret("short".into()), None, None).is_err());
    }
}
