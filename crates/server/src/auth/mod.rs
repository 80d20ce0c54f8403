//! Authentication and authorization: who is calling (a [`Principal`] from a static token or a
//! JWT) and whether their [`Role`] allows the call.
//!
//! The [`layer::AuthLayer`] authenticates every request before any service sees it and puts
//! the principal into the request's extensions; services read it with [`principal`]. Health
//! and reflection stay open; everything else needs a role, decided by the request path alone
//! ([`layer::required_role`]), so a new RPC cannot be forgotten: unknown paths need `admin`.

pub mod jwks;
pub mod jwt;
pub mod layer;
pub mod tokens;

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use quiver_core::model::split_pin;
use quiver_core::selection::Selector;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a principal may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Online reads, registry reads, exports (and the label uploads they use).
    Reader,
    /// Reader, plus pushes and materialization jobs.
    Writer,
    /// Writer, plus apply (forced too) and deletes.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Reader, Role::Writer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The feature services and views a token may touch; an empty list does not restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scope {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub services: BTreeSet<String>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub views: BTreeSet<String>,
}

impl Scope {
    pub fn is_unrestricted(&self) -> bool {
        self.services.is_empty() && self.views.is_empty()
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    pub scope: Scope,
}

impl Principal {
    /// The caller when auth is off: everything is allowed.
    pub fn anonymous() -> Principal {
        Principal {
            name: "anonymous".into(),
            role: Role::Admin,
            scope: Scope::default(),
        }
    }

    /// PERMISSION_DENIED naming the role `call` needs, unless this principal has it.
    pub fn require(&self, needed: Role, call: &str) -> Result<()> {
        if self.role >= needed {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!(
            "{call} needs role `{needed}`; `{}` has role `{}`",
            self.name, self.role
        )))
    }

    /// Whether a scoped token may use feature service `service` (unscoped: always).
    pub fn check_service(&self, service: &str) -> Result<()> {
        if self.scope.is_unrestricted() || self.scope.services.contains(service) {
            return Ok(());
        }
        Err(self.out_of_scope("feature service", service))
    }

    /// Whether a scoped token may use view `view`: listed itself, or (for reads through a
    /// service) covered by a listed service, which the caller checks with `check_service`.
    pub fn check_view(&self, view: &str) -> Result<()> {
        if self.scope.is_unrestricted() || self.scope.views.contains(view) {
            return Ok(());
        }
        Err(self.out_of_scope("view", view))
    }

    /// Whether a scoped token may read what `selector` names: a feature service it is scoped
    /// to (all of the service's views with it), or `view:feature` refs of views it is scoped
    /// to.
    pub fn check_selector(&self, selector: &Selector) -> Result<()> {
        if self.scope.is_unrestricted() {
            return Ok(());
        }
        match selector {
            Selector::Service { reference, .. } => self.check_service(unpinned(reference)),
            Selector::Features(refs) => refs.iter().try_for_each(|r| {
                let view = r.split_once(':').map_or(r.as_str(), |(view, _)| view);
                self.check_view(unpinned(view))
            }),
        }
    }

    fn out_of_scope(&self, what: &str, name: &str) -> Error {
        Error::PermissionDenied(format!(
            "token `{}` is not scoped to {what} `{name}`; scoped to services {:?} and views {:?}",
            self.name, self.scope.services, self.scope.views
        ))
    }
}

/// `name` of `name@N` (a malformed pin is refused later, by resolution).
fn unpinned(reference: &str) -> &str {
    split_pin(reference).map_or(reference, |(name, _)| name)
}

/// The principal the auth layer attached to a request. Missing only if the layer was not
/// installed, which [`crate::serve`] never does: refused rather than assumed.
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Error::Unauthenticated("no principal on the request".into()))
}

/// How callers are authenticated.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    /// The static tokens file (`--auth-file`), reloaded when it changes.
    pub tokens_file: Option<PathBuf>,
    /// JWT bearer tokens (OIDC).
    pub jwt: Option<jwt::JwtOptions>,
    /// Serve without auth on a non-loopback address (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
}

impl AuthOptions {
    pub fn enabled(&self) -> bool {
        self.tokens_file.is_some() || self.jwt.is_some()
    }
}

/// Why a presented credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `authorization: Bearer <token>` metadata")]
    NoToken,
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

impl From<AuthError> for Error {
    fn from(error: AuthError) -> Error {
        Error::Unauthenticated(error.to_string())
    }
}

/// Turns tokens into principals: static tokens, and JWTs when configured.
#[derive(Debug)]
pub struct Authenticator {
    tokens: Option<Arc<tokens::TokenSet>>,
    jwt: Option<jwt::JwtVerifier>,
}

impl Authenticator {
    /// Loads the configured token sources; `None` when auth is off.
    pub fn open(options: &AuthOptions) -> Result<Option<Arc<Authenticator>>> {
        if !options.enabled() {
            return Ok(None);
        }
        let tokens = match &options.tokens_file {
            Some(path) => Some(Arc::new(tokens::TokenSet::load(path)?)),
            None => None,
        };
        let jwt = options
            .jwt
            .as_ref()
            .map(jwt::JwtVerifier::open)
            .transpose()?;
        Ok(Some(Arc::new(Authenticator { tokens, jwt })))
    }

    /// Re-reads the tokens file and the JWKS file if they changed.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let tokens = match &self.tokens {
            Some(tokens) => tokens.reload_if_changed()?,
            None => false,
        };
        let jwks = match &self.jwt {
            Some(jwt) => jwt.reload_if_changed()?,
            None => false,
        };
        Ok(tokens || jwks)
    }

    /// The principal a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        if let Some(jwt) = &self.jwt
            && jwt::looks_like_jwt(token)
        {
            return jwt.verify(token);
        }
        match &self.tokens {
            Some(tokens) => tokens.authenticate(token),
            None => Err(AuthError::Invalid("not a valid JWT".into())),
        }
    }

    /// The principal of an `authorization` header value.
    pub fn authenticate_header(
        &self,
        value: Option<&[u8]>,
    ) -> std::result::Result<Principal, AuthError> {
        self.authenticate(bearer(value)?)
    }
}

/// The token of an `authorization: Bearer <token>` value (the scheme is case-insensitive).
pub fn bearer(value: Option<&[u8]>) -> std::result::Result<&str, AuthError> {
    let value = value.ok_or(AuthError::NoToken)?;
    let text = std::str::from_utf8(value)
        .map_err(|_| AuthError::Invalid("the authorization header is not UTF-8".into()))?
        .trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") && !rest.is_empty() {
        return Ok(rest);
    }
    Err(AuthError::Invalid(
        "the authorization header must be `Bearer <token>`".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parses_the_scheme_case_insensitively() {
        assert_eq!(bearer(Some(b"Bearer abc")), Ok("abc"));
        assert_eq!(bearer(Some(b"bearer   abc ")), Ok("abc"));
        assert_eq!(bearer(None), Err(AuthError::NoToken));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Token abc",
            b"abc",
            b"Basic YTpi",
            b"\xff",
        ] {
            assert!(
                matches!(bearer(Some(bad)), Err(AuthError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn roles_include_the_ones_below() {
        let writer = Principal {
            name: "w".into(),
            role: Role::Writer,
            scope: Scope::default(),
        };
        assert!(writer.require(Role::Reader, "GetOnlineFeatures").is_ok());
        assert!(writer.require(Role::Writer, "Push").is_ok());
        let error = writer
            .require(Role::Admin, "Apply")
            .expect_err("admin only");
        assert!(error.to_string().contains("needs role `admin`"), "{error}");
        assert_eq!(Role::parse("writer"), Some(Role::Writer));
        assert_eq!(Role::parse("root"), None);
    }

    #[test]
    fn scopes_restrict_only_when_set() {
        let mut p = Principal::anonymous();
        assert!(p.check_view("any").is_ok());
        p.scope.services.insert("ranking".into());
        assert!(p.check_service("ranking").is_ok());
        assert!(p.check_service("fraud").is_err());
        assert!(p.check_view("driver_stats").is_err());
    }
}
