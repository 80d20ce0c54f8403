//! The data directory as a [`RegistryStore`] (the embedded default): registry versions, the
//! head and tags in the `registry` column family, as `store.rs` and `tags.rs` write them.
//! One process owns the directory, and the server applies one at a time, so "create if
//! absent" is a read then a synced write.

use quiver_core::registry::RegistryState;
use quiver_core::registry_store::{RegistryStore, store_error};

use crate::error::Error;
use crate::online_store::blocking;
use crate::store::RocksStore;

fn core(error: Error) -> quiver_core::Error {
    store_error(error.code(), error.to_string())
}

/// Every call runs on the blocking pool with a handle of the store.
#[async_trait::async_trait]
impl RegistryStore for RocksStore {
    async fn latest(&self) -> quiver_core::Result<Option<RegistryState>> {
        let store = self.clone();
        blocking(move || store.load_registry().map_err(core)).await
    }

    async fn latest_version(&self) -> quiver_core::Result<u64> {
        Ok(self.latest().await?.map_or(0, |state| state.version))
    }

    async fn load(&self, version: u64) -> quiver_core::Result<Option<RegistryState>> {
        let store = self.clone();
        blocking(move || store.registry_state(version).map_err(core)).await
    }

    async fn create(&self, state: &RegistryState) -> quiver_core::Result<()> {
        let (store, state) = (self.clone(), state.clone());
        blocking(move || {
            if store.registry_state(state.version).map_err(core)?.is_some() {
                let latest = store.load_registry().map_err(core)?;
                return Err(quiver_core::Error::StaleRegistry {
                    expected: state.version.saturating_sub(1),
                    actual: latest.map_or(0, |latest| latest.version),
                });
            }
            store.save_registry(&state).map_err(core)
        })
        .await
    }

    async fn tag(&self, name: &str) -> quiver_core::Result<Option<u64>> {
        let (store, name) = (self.clone(), name.to_string());
        blocking(move || RocksStore::tag(&store, &name).map_err(core)).await
    }

    async fn set_tag(&self, name: &str, version: u64) -> quiver_core::Result<()> {
        let (store, name) = (self.clone(), name.to_string());
        blocking(
            move || match RocksStore::tag(&store, &name).map_err(core)? {
                Some(named) if named != version => Err(tag_moves(&name, named)),
                Some(_) => Ok(()),
                None => RocksStore::set_tag(&store, &name, version).map_err(core),
            },
        )
        .await
    }

    async fn tags(&self) -> quiver_core::Result<Vec<(String, u64)>> {
        let store = self.clone();
        blocking(move || RocksStore::tags(&store).map_err(core)).await
    }

    fn location(&self) -> String {
        format!("the data directory ({})", self.path().display())
    }
}

/// The error for a tag asked to name another version than the one it names.
fn tag_moves(name: &str, named: u64) -> quiver_core::Error {
    store_error(
        quiver_core::ErrorCode::FailedPrecondition,
        format!(
            "tag `{name}` already names registry version {named}; tags never move, choose another name"
        ),
    )
}
