//! The issuer's public keys (a JWK set) for RS256/ES256 tokens, from a file (re-read when it
//! changes) or from a URL (the issuer's `jwks_uri`, fetched at start, every
//! `URL_REFRESH` (5 minutes), and soon after a token names a key it does not hold, at most once per
//! `URL_MIN_INTERVAL` (1 s), so rotated keys are picked up without a restart). Fetches and reads
//! run where the reloader calls them, on the blocking pool. A new set that cannot be read keeps
//! the last good one in use.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};

use crate::error::{Error, Result};
use crate::reload::{Stamp, file_stamp};

/// How often a JWKS URL is fetched again.
pub(crate) const URL_REFRESH: Duration = Duration::from_secs(300);
/// Least time between two fetches of a JWKS URL asked for by unknown keys.
pub(crate) const URL_MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest a fetch may take, and the largest JWK set accepted.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: u64 = 1 << 20;

/// Where the keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    /// `https://...`, or `http://` to a loopback host (an issuer on the same machine).
    Url(String),
}

impl JwksSource {
    /// Checks a URL source: HTTPS, or plain HTTP to a loopback host only.
    fn check(&self) -> Result<()> {
        let JwksSource::Url(url) = self else {
            return Ok(());
        };
        let loopback = [
            "http://127.0.0.1:",
            "http://127.0.0.1/",
            "http://localhost:",
            "http://localhost/",
            "http://[::1]:",
            "http://[::1]/",
        ];
        if url.starts_with("https://") || loopback.iter().any(|p| url.starts_with(p)) {
            Ok(())
        } else {
            Err(Error::FailedPrecondition(format!(
                "--jwt-jwks-url `{url}` must be an https:// URL (plain http only to a loopback host)"
            )))
        }
    }
}

#[derive(Debug)]
struct Loaded {
    set: JwkSet,
    /// The file's stamp when it was read (files only).
    stamp: Stamp,
    /// When the URL was last fetched, successfully or not (URLs only).
    fetched: Option<Instant>,
}

/// The current key set and how to renew it.
#[derive(Debug)]
pub(crate) struct Jwks {
    source: JwksSource,
    loaded: RwLock<Loaded>,
    /// A token named a key the set lacks: fetch the URL again soon.
    wanted: AtomicBool,
}

impl Jwks {
    /// Reads or fetches the keys now (blocking); an unreadable source refuses to start.
    pub(crate) fn open(source: JwksSource) -> Result<Jwks> {
        source.check()?;
        let loaded = load(&source)?;
        Ok(Jwks {
            source,
            loaded: RwLock::new(loaded),
            wanted: AtomicBool::new(false),
        })
    }

    /// The key a token's `kid` names (the only key when it names none and there is one).
    /// A miss asks for an early refresh of a URL source.
    pub(crate) fn find(&self, kid: Option<&str>) -> Option<Jwk> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        let found = match kid {
            Some(kid) => loaded.set.find(kid),
            None if loaded.set.keys.len() == 1 => loaded.set.keys.first(),
            None => None,
        };
        if found.is_none() {
            self.wanted.store(true, Ordering::Relaxed);
        }
        found.cloned()
    }

    /// Renews the keys when due (blocking): a file when it changed; a URL every
    /// [`URL_REFRESH`], or after [`URL_MIN_INTERVAL`] when a token named an unknown key.
    pub(crate) fn reload_if_changed(&self) -> Result<bool> {
        let due = {
            let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
            match (&self.source, loaded.fetched) {
                (JwksSource::File(path), _) => file_stamp(path) != loaded.stamp,
                (JwksSource::Url(_), None) => true,
                (JwksSource::Url(_), Some(at)) => {
                    let age = at.elapsed();
                    age >= URL_REFRESH
                        || (age >= URL_MIN_INTERVAL && self.wanted.load(Ordering::Relaxed))
                }
            }
        };
        if !due {
            return Ok(false);
        }
        self.wanted.store(false, Ordering::Relaxed);
        match load(&self.source) {
            Ok(fresh) => {
                let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
                let changed = fresh.set != loaded.set;
                *loaded = fresh;
                Ok(changed || matches!(self.source, JwksSource::File(_)))
            }
            Err(error) => {
                // Keep the last good keys; try again after the interval, not every tick.
                let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
                if let JwksSource::File(path) = &self.source {
                    loaded.stamp = file_stamp(path);
                } else {
                    loaded.fetched = Some(Instant::now());
                }
                Err(error)
            }
        }
    }
}

fn load(source: &JwksSource) -> Result<Loaded> {
    match source {
        JwksSource::File(path) => {
            let stamp = file_stamp(path);
            let set = read_file(path)?;
            Ok(Loaded {
                set,
                stamp,
                fetched: None,
            })
        }
        JwksSource::Url(url) => {
            let fetched = Some(Instant::now());
            Ok(Loaded {
                set: fetch(url)?,
                stamp: None,
                fetched,
            })
        }
    }
}

fn read_file(path: &Path) -> Result<JwkSet> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::FailedPrecondition(format!("cannot read JWKS file {}: {e}", path.display()))
    })?;
    serde_json::from_str(&text).map_err(|e| {
        Error::FailedPrecondition(format!(
            "JWKS file {} is not a JWK set: {e}",
            path.display()
        ))
    })
}

fn fetch(url: &str) -> Result<JwkSet> {
    let failed = |e: &dyn std::fmt::Display| {
        Error::FailedPrecondition(format!("cannot fetch the JWKS at {url}: {e}"))
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| failed(&e))?;
    let text = response
        .into_body()
        .with_config()
        .limit(MAX_JWKS_BYTES)
        .read_to_string()
        .map_err(|e| failed(&e))?;
    serde_json::from_str(&text).map_err(|e| failed(&format!("not a JWK set: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_https_or_loopback_http() {
        for ok in [
            "https://issuer.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks",
            "http://localhost/jwks",
            "http://[::1]:9/jwks",
        ] {
            assert!(JwksSource::Url(ok.into()).check().is_ok(), "{ok}");
        }
        for bad in [
            "http://issuer.example/jwks",
            "http://127.0.0.1.evil.example/jwks",
            "ftp://x/jwks",
            "jwks.json",
        ] {
            let error = JwksSource::Url(bad.into()).check().expect_err(bad);
            assert!(error.to_string().contains("--jwt-jwks-url"), "{error}");
        }
    }

    #[test]
    fn a_file_is_reread_when_it_changes_and_a_bad_one_keeps_the_old_keys() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let path = dir.path().join("jwks.json");
        let set = |kid: &str| {
            format!(
                r#"{{"keys":[{{"kty":"EC","crv":"P-256","kid":"{kid}","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}}]}}"#
            )
        };
        std::fs::write(&path, set("one")).map_err(|e| Error::Internal(e.to_string()))?;
        let jwks = Jwks::open(JwksSource::File(path.clone()))?;
        assert!(jwks.find(Some("one")).is_some() && jwks.find(None).is_some());
        assert!(!jwks.reload_if_changed()?, "unchanged");
        std::fs::write(&path, set("second")).map_err(|e| Error::Internal(e.to_string()))?;
        assert!(jwks.reload_if_changed()?);
        assert!(jwks.find(Some("second")).is_some() && jwks.find(Some("one")).is_none());
        std::fs::write(&path, "{not json").map_err(|e| Error::Internal(e.to_string()))?;
        assert!(jwks.reload_if_changed().is_err());
        assert!(
            jwks.find(Some("second")).is_some(),
            "the last good keys stay"
        );
        Ok(())
    }
}
