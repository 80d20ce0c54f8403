//! Registry versions in object storage ([`ObjectRegistry`], `--registry-store URL`), shared by
//! several replicas: `<prefix>/versions/<version, 20 digits>.json` (the state as JSON, the
//! format the data directory stores) and `<prefix>/tags/<name>` (the version, decimal). Both
//! are written create-only (`PutMode::Create`): "create version N+1 if absent" is the
//! compare-and-set between replicas applying at once, and a tag never moves. The newest
//! version is the greatest listed. Calls are the object store client's own async requests.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use quiver_core::ErrorCode;
use quiver_core::registry::RegistryState;
use quiver_core::registry_store::{RegistryStore, store_error};

use crate::error::{Error, Result};
use crate::object::{ObjectStores, ObjectUrl, object_error};

/// Registry versions under one object-store prefix.
#[derive(Debug)]
pub struct ObjectRegistry {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    /// The URL, for messages.
    url: String,
    /// The newest version listed so far: versions are never removed, so a poll lists only
    /// the names after it (its cost does not grow with the history).
    seen: AtomicU64,
}

impl ObjectRegistry {
    /// The registry under `url`: `s3://bucket/prefix`, `gs://...`, `az://...` (clients from
    /// `stores`: the server's environment and `--object-store-option`s), or
    /// `file:///absolute/dir` (created if missing; one machine, or tests). Contacts nothing.
    pub fn open(url: &str, stores: &ObjectStores) -> Result<ObjectRegistry> {
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match url.strip_prefix("file://") {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                    path: dir.into(),
                    source: e,
                })?;
                let local =
                    LocalFileSystem::new_with_prefix(dir).map_err(|e| object_error(url, &e))?;
                (Arc::new(local), Path::default())
            }
            None => {
                let parsed = ObjectUrl::parse("--registry-store", url)?;
                (stores.client(&parsed)?, Path::from(parsed.key.as_str()))
            }
        };
        Ok(ObjectRegistry {
            store,
            prefix,
            url: url.to_string(),
            seen: AtomicU64::new(0),
        })
    }

    fn versions(&self) -> Path {
        self.prefix.clone().join("versions")
    }

    fn tags_dir(&self) -> Path {
        self.prefix.clone().join("tags")
    }

    fn version_path(&self, version: u64) -> Path {
        self.versions().join(format!("{version:020}.json"))
    }

    /// The object's bytes, `None` when there is none.
    async fn get(&self, path: &Path) -> Result<Option<Vec<u8>>> {
        let read = match self.store.get(path).await {
            Ok(object) => object.bytes().await.map(|bytes| Some(bytes.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        };
        read.map_err(|e| object_error(&self.url, &e))
    }

    /// Writes `bytes` at `path` unless an object is there: `false` then.
    async fn put_new(&self, path: &Path, bytes: Vec<u8>) -> Result<bool> {
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let written = self
            .store
            .put_opts(path, PutPayload::from(bytes), options)
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(object_error(&self.url, &e)),
        }
    }

    /// The file names under `dir`, after `offset` (a full path) when given.
    async fn list(&self, dir: &Path, offset: Option<&Path>) -> Result<Vec<String>> {
        let listing = match offset {
            Some(offset) => self.store.list_with_offset(Some(dir), offset),
            None => self.store.list(Some(dir)),
        };
        let listed = listing.try_collect::<Vec<_>>().await;
        let objects = listed.map_err(|e| object_error(&self.url, &e))?;
        Ok(objects
            .into_iter()
            .filter_map(|meta| meta.location.filename().map(str::to_string))
            .collect())
    }

    fn parse_version(&self, text: &[u8], what: &str) -> quiver_core::Result<u64> {
        std::str::from_utf8(text)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .ok_or_else(|| {
                store_error(
                    ErrorCode::Internal,
                    format!("{what} in {} is not a version number", self.url),
                )
            })
    }
}

fn core(error: Error) -> quiver_core::Error {
    store_error(error.code(), error.to_string())
}

#[async_trait::async_trait]
impl RegistryStore for ObjectRegistry {
    async fn latest(&self) -> quiver_core::Result<Option<RegistryState>> {
        match self.latest_version().await? {
            0 => Ok(None),
            version => self.load(version).await?.map(Some).ok_or_else(|| {
                store_error(
                    ErrorCode::Internal,
                    format!(
                        "version {version} was listed in {} but cannot be read",
                        self.url
                    ),
                )
            }),
        }
    }

    async fn latest_version(&self) -> quiver_core::Result<u64> {
        let seen = self.seen.load(Ordering::SeqCst);
        let after = self.version_path(seen);
        let names = self
            .list(&self.versions(), Some(&after))
            .await
            .map_err(core)?;
        let newest = names
            .iter()
            .filter_map(|name| name.strip_suffix(".json")?.parse::<u64>().ok())
            .fold(seen, u64::max);
        self.seen.fetch_max(newest, Ordering::SeqCst);
        Ok(newest)
    }

    async fn load(&self, version: u64) -> quiver_core::Result<Option<RegistryState>> {
        let Some(json) = self.get(&self.version_path(version)).await.map_err(core)? else {
            return Ok(None);
        };
        let state: RegistryState = serde_json::from_slice(&json).map_err(|e| {
            quiver_core::Error::Corrupt(format!("version {version} in {}: {e}", self.url))
        })?;
        if state.version != version {
            return Err(quiver_core::Error::Corrupt(format!(
                "version {version} in {} says it is version {}",
                self.url, state.version
            )));
        }
        Ok(Some(state))
    }

    async fn create(&self, state: &RegistryState) -> quiver_core::Result<()> {
        let json = serde_json::to_vec(state).map_err(|e| {
            store_error(
                ErrorCode::Internal,
                format!("serialize version {}: {e}", state.version),
            )
        })?;
        if !self
            .put_new(&self.version_path(state.version), json)
            .await
            .map_err(core)?
        {
            return Err(quiver_core::Error::StaleRegistry {
                expected: state.version.saturating_sub(1),
                actual: self.latest_version().await?,
            });
        }
        tracing::info!(registry_version = state.version, store = %self.url, "saved registry version");
        Ok(())
    }

    async fn tag(&self, name: &str) -> quiver_core::Result<Option<u64>> {
        let path = self.tags_dir().join(name);
        match self.get(&path).await.map_err(core)? {
            Some(text) => self
                .parse_version(&text, &format!("tag `{name}`"))
                .map(Some),
            None => Ok(None),
        }
    }

    async fn set_tag(&self, name: &str, version: u64) -> quiver_core::Result<()> {
        let path = self.tags_dir().join(name);
        if self
            .put_new(&path, version.to_string().into_bytes())
            .await
            .map_err(core)?
        {
            return Ok(());
        }
        match self.tag(name).await? {
            Some(named) if named == version => Ok(()),
            named => Err(store_error(
                ErrorCode::FailedPrecondition,
                format!(
                    "tag `{name}` already names registry version {}; tags never move, choose another name",
                    named.unwrap_or_default()
                ),
            )),
        }
    }

    async fn tags(&self) -> quiver_core::Result<Vec<(String, u64)>> {
        let mut tags = Vec::new();
        for name in self.list(&self.tags_dir(), None).await.map_err(core)? {
            if let Some(version) = self.tag(&name).await? {
                tags.push((name, version));
            }
        }
        tags.sort();
        Ok(tags)
    }

    fn location(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(version: u64) -> RegistryState {
        RegistryState {
            version,
            ..RegistryState::default()
        }
    }

    #[test]
    fn versions_are_created_once_and_tags_never_move() -> Result<(), Box<dyn std::error::Error>> {
        let runtime = tokio::runtime::Runtime::new()?;
        runtime.block_on(created_once_and_tags_never_move())
    }

    async fn created_once_and_tags_never_move() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("file://{}", dir.path().join("registry").display());
        let registry = ObjectRegistry::open(&url, &ObjectStores::new(Vec::new()))?;
        assert_eq!(
            (registry.latest().await?, registry.latest_version().await?),
            (None, 0)
        );
        registry.create(&state(1)).await?;
        registry.set_tag("v1", 1).await?;
        registry.create(&state(2)).await?;
        // Another replica created version 2 first: this one is told to plan again.
        let error = registry.create(&state(2)).await.expect_err("exists");
        assert!(matches!(
            error,
            quiver_core::Error::StaleRegistry {
                expected: 1,
                actual: 2
            }
        ));
        assert_eq!(registry.latest().await?.map(|s| s.version), Some(2));
        assert_eq!(registry.load(1).await?, Some(state(1)));
        assert_eq!(registry.load(7).await?, None);
        registry.set_tag("prod", 2).await?;
        registry.set_tag("prod", 2).await?;
        let error = registry.set_tag("prod", 1).await.expect_err("moves");
        assert_eq!(error.code(), ErrorCode::FailedPrecondition);
        assert_eq!(
            registry.tags().await?,
            vec![("prod".to_string(), 2), ("v1".to_string(), 1)]
        );
        // A second handle on the same location sees the same registry.
        let other = ObjectRegistry::open(&url, &ObjectStores::new(Vec::new()))?;
        assert_eq!(other.latest_version().await?, 2);
        assert_eq!(other.tag("v1").await?, Some(1));
        Ok(())
    }
}
