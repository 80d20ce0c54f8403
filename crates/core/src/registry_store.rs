//! [`RegistryStore`]: where registry versions live. The data directory (RocksDB, the
//! embedded default) implements it in `quiver-online`; object storage (`s3://`, `gs://`,
//! `az://`, `file://`, shared by several replicas) in `quiver-offline`. Versions are
//! immutable: "create version N+1 if absent" is the compare-and-set that keeps two replicas
//! applying at once from both writing N+1; the loser is told the registry moved
//! ([`Error::StaleRegistry`]) and plans again. Async: an implementation keeps blocking I/O
//! (RocksDB) off the caller's async worker.

use crate::error::{Error, ErrorCode, Result};
use crate::registry::RegistryState;

#[async_trait::async_trait]
pub trait RegistryStore: Send + Sync + std::fmt::Debug {
    /// The newest version saved; `None` for an empty registry.
    async fn latest(&self) -> Result<Option<RegistryState>>;

    /// The newest version number (0 for an empty registry): what replicas poll.
    async fn latest_version(&self) -> Result<u64>;

    /// Version `version`, `None` if there is none.
    async fn load(&self, version: u64) -> Result<Option<RegistryState>>;

    /// Saves `state` as version `state.version` if no such version exists, else
    /// [`Error::StaleRegistry`].
    async fn create(&self, state: &RegistryState) -> Result<()>;

    /// The version a release tag names.
    async fn tag(&self, name: &str) -> Result<Option<u64>>;

    /// Names `version` `name`; a tag never moves: naming another version with an existing
    /// tag is `FAILED_PRECONDITION`.
    async fn set_tag(&self, name: &str, version: u64) -> Result<()>;

    /// Every tag and the version it names, by name.
    async fn tags(&self) -> Result<Vec<(String, u64)>>;

    /// Where the versions live, for logs and messages (no secrets).
    fn location(&self) -> String;
}

/// A store failure with the code its backend chose (`UNAVAILABLE` when it cannot be reached).
pub fn store_error(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::Store {
        code,
        message: message.into(),
    }
}
