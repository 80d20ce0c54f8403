//! `quiver serve` flags for who may call and how: static tokens, JWT, TLS.

use std::path::PathBuf;

use anyhow::{Context, Result};
use quiver_server::auth::AuthOptions;
use quiver_server::auth::jwks::JwksSource;
use quiver_server::auth::jwt::JwtOptions;
use quiver_server::tls::TlsOptions;

#[derive(Debug, clap::Args)]
pub(crate) struct SecurityArgs {
    /// Static tokens file (YAML: name, role, sha256 per principal; see `quiver token create`),
    /// reloaded when it changes.
    #[arg(long, env = "QUIVER_AUTH_FILE")]
    auth_file: Option<PathBuf>,
    /// Serve without authentication on a non-loopback address (never in production).
    #[arg(long, env = "QUIVER_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// Accept JWTs from this issuer (`iss`); needs --jwt-audience and a key.
    #[arg(long, env = "QUIVER_JWT_ISSUER")]
    jwt_issuer: Option<String>,
    /// Required JWT audience (`aud`).
    #[arg(long, env = "QUIVER_JWT_AUDIENCE")]
    jwt_audience: Option<String>,
    /// JWKS file with the issuer's public keys (RS256, ES256), reloaded when it changes.
    #[arg(long, env = "QUIVER_JWT_JWKS_FILE", conflicts_with = "jwt_jwks_url")]
    jwt_jwks_file: Option<PathBuf>,
    /// The issuer's JWKS URL (`jwks_uri`; https, or http to a loopback host): fetched at start,
    /// every 5 minutes, and soon after a token names an unknown key.
    #[arg(long, env = "QUIVER_JWT_JWKS_URL")]
    jwt_jwks_url: Option<String>,
    /// File holding the HS256 shared secret.
    #[arg(long, env = "QUIVER_JWT_HS256_SECRET_FILE")]
    jwt_hs256_secret_file: Option<PathBuf>,
    /// The JWT claim that holds the role (`reader`, `writer`, `admin`).
    #[arg(long, env = "QUIVER_JWT_ROLE_CLAIM", default_value = "role")]
    jwt_role_claim: String,
    /// Server certificate chain (PEM); enables TLS, reloaded when it changes.
    #[arg(long, env = "QUIVER_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    #[arg(long, env = "QUIVER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// CA (PEM) that client certificates must chain to: mutual TLS.
    #[arg(long, env = "QUIVER_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

impl SecurityArgs {
    pub(crate) fn auth(&self) -> Result<AuthOptions> {
        let jwt = match (&self.jwt_issuer, &self.jwt_audience) {
            (None, None) if self.jwks().is_none() && self.jwt_hs256_secret_file.is_none() => None,
            (Some(issuer), Some(audience)) => Some(JwtOptions {
                hs256_secret: self
                    .jwt_hs256_secret_file
                    .as_ref()
                    .map(|path| {
                        std::fs::read(path).with_context(|| {
                            format!("cannot read --jwt-hs256-secret-file {}", path.display())
                        })
                    })
                    .transpose()?
                    .map(|secret| secret.trim_ascii().to_vec()),
                jwks: self.jwks(),
                issuer: issuer.clone(),
                audience: audience.clone(),
                role_claim: self.jwt_role_claim.clone(),
            }),
            _ => anyhow::bail!(
                "JWT auth needs both --jwt-issuer and --jwt-audience (and --jwt-jwks-file, --jwt-jwks-url or --jwt-hs256-secret-file)"
            ),
        };
        Ok(AuthOptions {
            tokens_file: self.auth_file.clone(),
            jwt,
            insecure_no_auth: self.insecure_no_auth,
        })
    }

    fn jwks(&self) -> Option<JwksSource> {
        match (&self.jwt_jwks_file, &self.jwt_jwks_url) {
            (Some(path), _) => Some(JwksSource::File(path.clone())),
            (None, Some(url)) => Some(JwksSource::Url(url.clone())),
            (None, None) => None,
        }
    }

    pub(crate) fn tls(&self) -> Option<TlsOptions> {
        Some(TlsOptions {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}
