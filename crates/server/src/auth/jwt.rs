//! JWT bearer tokens (OIDC): signature (HS256 from a shared secret; RS256/ES256 from a JWKS
//! file or URL, renewed as [`super::jwks`] says), `exp`/`nbf` with a small leeway, issuer and
//! audience.
//! The principal is the `sub` claim; its role comes from a configured claim.

use std::collections::BTreeSet;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::jwks::{Jwks, JwksSource};
use super::{AuthError, Principal, Role, Scope};
use crate::error::{Error, Result};

/// Seconds of clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECONDS: u64 = 30;

/// How JWTs are verified.
#[derive(Clone, Default)]
pub struct JwtOptions {
    /// Shared secret for HS256 tokens.
    pub hs256_secret: Option<Vec<u8>>,
    /// The issuer's public keys (a JWKS file or URL) for RS256/ES256 tokens.
    pub jwks: Option<JwksSource>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud` (one of).
    pub audience: String,
    /// The claim holding the role (`reader`, `writer` or `admin`).
    pub role_claim: String,
}

impl std::fmt::Debug for JwtOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtOptions")
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwks", &self.jwks)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("role_claim", &self.role_claim)
            .finish()
    }
}

/// Claims that scope a JWT to feature services and views (string arrays, optional).
pub const SERVICES_CLAIM: &str = "quiver_services";
pub const VIEWS_CLAIM: &str = "quiver_views";

/// Verifies JWTs against the configured keys.
pub struct JwtVerifier {
    options: JwtOptions,
    secret: Option<DecodingKey>,
    jwks: Option<Jwks>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("options", &self.options)
            .finish()
    }
}

/// Three base64url parts separated by dots.
pub fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

impl JwtVerifier {
    pub fn open(options: &JwtOptions) -> Result<JwtVerifier> {
        if options.hs256_secret.is_none() && options.jwks.is_none() {
            return Err(Error::FailedPrecondition(
                "JWT auth needs keys: give --jwt-hs256-secret-file, --jwt-jwks-file or --jwt-jwks-url"
                    .into(),
            ));
        }
        if options.issuer.is_empty() || options.audience.is_empty() {
            return Err(Error::FailedPrecondition(
                "JWT auth needs --jwt-issuer and --jwt-audience".into(),
            ));
        }
        let secret = match &options.hs256_secret {
            Some(secret) => Some(DecodingKey::from_secret(secret).map_err(|e| {
                Error::FailedPrecondition(format!("the HS256 secret is unusable: {e}"))
            })?),
            None => None,
        };
        let jwks = options.jwks.clone().map(Jwks::open).transpose()?;
        Ok(JwtVerifier {
            options: options.clone(),
            secret,
            jwks,
        })
    }

    /// Renews the JWKS when due (blocking); keeps the old keys when the new ones are bad.
    pub fn reload_if_changed(&self) -> Result<bool> {
        match &self.jwks {
            Some(jwks) => jwks.reload_if_changed(),
            None => Ok(false),
        }
    }

    fn key(&self, header: &jsonwebtoken::Header) -> std::result::Result<DecodingKey, AuthError> {
        let invalid = |m: &str| AuthError::Invalid(m.to_string());
        match header.alg {
            Algorithm::HS256 => self
                .secret
                .clone()
                .ok_or_else(|| invalid("HS256 tokens are not accepted (no secret configured)")),
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    invalid("RS256/ES256 tokens are not accepted (no JWKS configured)")
                })?;
                let jwk = jwks
                    .find(header.kid.as_deref())
                    .ok_or_else(|| invalid("no key in the JWKS matches the token's `kid`"))?;
                DecodingKey::from_jwk(&jwk)
                    .map_err(|e| AuthError::Invalid(format!("JWKS key: {e}")))
            }
            other => Err(AuthError::Invalid(format!(
                "algorithm {other:?} is not accepted; use HS256, RS256 or ES256"
            ))),
        }
    }

    /// The principal of a valid token.
    pub fn verify(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("malformed JWT: {e}")))?;
        let key = self.key(&header)?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.options.issuer]);
        validation.set_audience(&[&self.options.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(format!("JWT refused: {e}")))?;
        self.principal(&data.claims)
    }

    fn principal(&self, claims: &Map<String, Value>) -> std::result::Result<Principal, AuthError> {
        let name = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role_claim = &self.options.role_claim;
        let role = claims
            .get(role_claim)
            .and_then(Value::as_str)
            .and_then(Role::parse)
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "the JWT's `{role_claim}` claim must be `reader`, `writer` or `admin`"
                ))
            })?;
        let names = |claim: &str| -> BTreeSet<String> {
            claims
                .get(claim)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Principal {
            name: name.to_string(),
            role,
            scope: Scope {
                services: names(SERVICES_CLAIM),
                views: names(VIEWS_CLAIM),
            },
        })
    }
}
