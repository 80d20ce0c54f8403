//! The data directory as a [`RegistryStore`] (the embedded default): registry versions, the
//! head and tags in the `registry` column family, as `store.rs` and `tags.rs` write them.
//! One process owns the directory, and the server applies one at a time, so "create if
//! absent" is a read then a synced write.

use quiver_core::registry::RegistryState;
use quiver_core::registry_store::{RegistryStore, store_error};

use crate::error::Error;
use crate::store::RocksStore;

fn core(error: Error) -> quiver_core::Error {
    store_error(error.code(), error.to_string())
}

impl RegistryStore for RocksStore {
    fn latest(&self) -> quiver_core::Result<Option<RegistryState>> {
        self.load_registry().map_err(core)
    }

    fn latest_version(&self) -> quiver_core::Result<u64> {
        Ok(self.latest()?.map_or(0, |state| state.version))
    }

    fn load(&self, version: u64) -> quiver_core::Result<Option<RegistryState>> {
        self.registry_state(version).map_err(core)
    }

    fn create(&self, state: &RegistryState) -> quiver_core::Result<()> {
        if self.registry_state(state.version).map_err(core)?.is_some() {
            return Err(quiver_core::Error::StaleRegistry {
                expected: state.version.saturating_sub(1),
                actual: self.latest_version()?,
            });
        }
        self.save_registry(state).map_err(core)
    }

    fn tag(&self, name: &str) -> quiver_core::Result<Option<u64>> {
        RocksStore::tag(self, name).map_err(core)
    }

    fn set_tag(&self, name: &str, version: u64) -> quiver_core::Result<()> {
        match RocksStore::tag(self, name).map_err(core)? {
            Some(named) if named != version => Err(tag_moves(name, named)),
            Some(_) => Ok(()),
            None => RocksStore::set_tag(self, name, version).map_err(core),
        }
    }

    fn tags(&self) -> quiver_core::Result<Vec<(String, u64)>> {
        RocksStore::tags(self).map_err(core)
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
