//! Static tokens: a YAML file with one entry per principal (`name`, `role`, the token's
//! SHA-256, an optional scope). The token itself is never stored; it is shown once by
//! `quiver token create`. The server reloads the file when it changes and keeps the last
//! good set when a new version does not parse.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use quiver_core::fingerprint::hex;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{AuthError, Principal, Role, Scope};
use crate::error::{Error, Result};
use crate::reload::{Stamp, file_stamp};

/// Prefix of generated tokens, so secret scanners and people can recognise them.
pub const TOKEN_PREFIX: &str = "qvr_";

/// The tokens file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    /// Format version; only 1 exists.
    #[serde(default = "one")]
    pub version: u32,
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

fn one() -> u32 {
    1
}

impl Default for TokensFile {
    fn default() -> Self {
        TokensFile {
            version: 1,
            tokens: Vec::new(),
        }
    }
}

/// One principal.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    /// Lowercase hex SHA-256 of the token.
    pub sha256: String,
    /// Feature services this token is limited to (none: not limited).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub services: BTreeSet<String>,
    /// Views this token is limited to (none: not limited).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub views: BTreeSet<String>,
}

impl std::fmt::Debug for TokenEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenEntry")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("sha256", &"<redacted>")
            .field("services", &self.services)
            .field("views", &self.views)
            .finish()
    }
}

/// Lowercase hex SHA-256 of a token.
pub fn token_sha256(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A new random token: the prefix and 256 random bits in hex.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", hex(&bytes))
}

impl TokensFile {
    /// Parses and checks a tokens file: known version, unique names, well-formed digests.
    pub fn parse(text: &str, path: &Path) -> Result<TokensFile> {
        let bad = |message: String| {
            Error::FailedPrecondition(format!("tokens file {}: {message}", path.display()))
        };
        let file: TokensFile = if text.trim().is_empty() {
            TokensFile::default()
        } else {
            serde_norway::from_str(text).map_err(|e| bad(e.to_string()))?
        };
        if file.version != 1 {
            return Err(bad(format!(
                "`version: {}` is unknown; use `version: 1`",
                file.version
            )));
        }
        let mut names = BTreeSet::new();
        for (i, entry) in file.tokens.iter().enumerate() {
            if entry.name.trim().is_empty() {
                return Err(bad(format!("tokens[{i}].name is empty")));
            }
            if !names.insert(entry.name.as_str()) {
                return Err(bad(format!(
                    "tokens[{i}]: name `{}` appears twice",
                    entry.name
                )));
            }
            if entry.sha256.len() != 64
                || !entry
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            {
                return Err(bad(format!(
                    "tokens[{i}].sha256 must be 64 lowercase hex digits (the token's SHA-256)"
                )));
            }
        }
        Ok(file)
    }

    /// Reads a tokens file; a missing file is an empty one (for `token create`).
    pub fn read_or_empty(path: &Path) -> Result<TokensFile> {
        match std::fs::read_to_string(path) {
            Ok(text) => TokensFile::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokensFile::default()),
            Err(e) => Err(Error::FailedPrecondition(format!(
                "cannot read tokens file {}: {e}",
                path.display()
            ))),
        }
    }

    /// Adds a principal with a new token; returns the token (shown once, never stored).
    pub fn create(&mut self, name: &str, role: Role, scope: Scope) -> Result<String> {
        if name.trim().is_empty() {
            return Err(Error::invalid("name", "give a non-empty principal name"));
        }
        if self.tokens.iter().any(|t| t.name == name) {
            return Err(Error::FailedPrecondition(format!(
                "a token named `{name}` exists already; pick another name or remove its entry"
            )));
        }
        let token = generate_token();
        self.tokens.push(TokenEntry {
            name: name.to_string(),
            role,
            sha256: token_sha256(&token),
            services: scope.services,
            views: scope.views,
        });
        Ok(token)
    }

    /// Writes the file atomically (temporary file, fsync, rename), readable by the owner only.
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |e: std::io::Error| {
            Error::FailedPrecondition(format!("cannot write tokens file {}: {e}", path.display()))
        };
        let text = serde_norway::to_string(self)
            .map_err(|e| Error::Internal(format!("encoding the tokens file: {e}")))?;
        let tmp = path.with_extension("tmp");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Parses the file a server serves from. An empty file is refused rather than read as "no
/// tokens": it is what a reader sees in the middle of a non-atomic rewrite, and it would lock
/// everyone out. Revoking every token is `tokens: []`.
fn parse_served(text: &str, path: &Path) -> Result<TokensFile> {
    if text.trim().is_empty() {
        return Err(Error::FailedPrecondition(format!(
            "tokens file {} is empty (write `tokens: []` to revoke every token)",
            path.display()
        )));
    }
    TokensFile::parse(text, path)
}

#[derive(Debug, Default)]
struct Loaded {
    by_digest: HashMap<String, Principal>,
    stamp: Stamp,
}

/// The server's view of the tokens file: principals by token digest.
///
/// Lookup is by the SHA-256 of the presented token; an attacker cannot steer that digest, so
/// the map lookup leaks nothing useful about stored digests through timing.
#[derive(Debug)]
pub struct TokenSet {
    path: PathBuf,
    loaded: RwLock<Loaded>,
}

impl TokenSet {
    /// Loads the file; at start, a file that does not parse stops the server.
    pub fn load(path: &Path) -> Result<TokenSet> {
        let set = TokenSet {
            path: path.to_path_buf(),
            loaded: RwLock::new(Loaded::default()),
        };
        let stamp = file_stamp(path);
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot read tokens file {} (create one with `quiver token create`): {e}",
                path.display()
            ))
        })?;
        set.install(parse_served(&text, path)?, stamp);
        Ok(set)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn install(&self, file: TokensFile, stamp: Stamp) {
        let by_digest = file
            .tokens
            .into_iter()
            .map(|t| {
                let principal = Principal {
                    name: t.name,
                    role: t.role,
                    scope: Scope {
                        services: t.services,
                        views: t.views,
                    },
                };
                (t.sha256, principal)
            })
            .collect();
        let mut loaded = self.loaded.write().unwrap_or_else(|e| e.into_inner());
        *loaded = Loaded { by_digest, stamp };
    }

    /// Re-reads the file if it changed since the last load. A file that does not parse keeps
    /// the previous set (and is reported); returns whether a new set was installed.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let now = file_stamp(&self.path);
        let before = self.loaded.read().unwrap_or_else(|e| e.into_inner()).stamp;
        if now == before {
            return Ok(false);
        }
        let text = std::fs::read_to_string(&self.path).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot read tokens file {}: {e}",
                self.path.display()
            ))
        })?;
        let file = parse_served(&text, &self.path)?;
        self.install(file, now);
        Ok(true)
    }

    pub fn authenticate(&self, token: &str) -> std::result::Result<Principal, AuthError> {
        let loaded = self.loaded.read().unwrap_or_else(|e| e.into_inner());
        loaded
            .by_digest
            .get(&token_sha256(token))
            .cloned()
            .ok_or_else(|| AuthError::Invalid("unknown token".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_authenticate_and_only_their_digest_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.yaml");
        let mut file = TokensFile::read_or_empty(&path).expect("missing is empty");
        let token = file
            .create("ci", Role::Writer, Scope::default())
            .expect("create");
        assert!(token.starts_with(TOKEN_PREFIX) && token.len() == 68);
        file.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            !text.contains(&token) && text.contains(&token_sha256(&token)),
            "{text}"
        );
        let set = TokenSet::load(&path).expect("load");
        assert_eq!(set.authenticate(&token).expect("known").role, Role::Writer);
        assert!(set.authenticate("qvr_wrong").is_err());
        assert!(
            file.create("ci", Role::Admin, Scope::default()).is_err(),
            "duplicate name"
        );
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tokens.yaml");
        let mut file = TokensFile::default();
        let first = file
            .create("a", Role::Reader, Scope::default())
            .expect("create");
        file.write(&path).expect("write");
        let set = TokenSet::load(&path).expect("load");
        let second = file
            .create("b", Role::Admin, Scope::default())
            .expect("create");
        file.write(&path).expect("write");
        assert!(set.reload_if_changed().expect("reload"));
        assert_eq!(set.authenticate(&second).expect("new").name, "b");
        std::fs::write(&path, "tokens: [oops").expect("write");
        assert!(set.reload_if_changed().is_err());
        assert_eq!(set.authenticate(&first).expect("kept").name, "a");
    }

    #[test]
    fn bad_files_name_the_problem() {
        let path = Path::new("t.yaml");
        for (text, needle) in [
            ("version: 2", "version: 2"),
            ("tokens: [{name: a, role: root, sha256: x}]", "role"),
            (
                "tokens: [{name: a, role: admin, sha256: abc}]",
                "64 lowercase hex",
            ),
            (
                "tokens: [{name: a, role: admin, sha256: x, token: y}]",
                "token",
            ),
        ] {
            let error = TokensFile::parse(text, path).expect_err(text);
            assert!(error.to_string().contains(needle), "{text}: {error}");
        }
        let digest = token_sha256("t");
        let dup = format!(
            "tokens: [{{name: a, role: admin, sha256: {digest}}}, {{name: a, role: reader, sha256: {digest}}}]"
        );
        assert!(
            TokensFile::parse(&dup, path)
                .expect_err("dup")
                .to_string()
                .contains("twice")
        );
    }
}
