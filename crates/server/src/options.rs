//! State shared by every service: storage, the registry snapshot, jobs and the clock.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use quiver_core::RegistryState;
use quiver_core::types::Micros;
use quiver_offline::OfflineStore;
use quiver_online::RocksStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::jobs::Jobs;
use crate::uploads::Uploads;

/// Where "now" comes from. Tests inject a fixed clock to check the consistency invariant.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Micros;
}

#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        chrono::Utc::now().timestamp_micros()
    }
}

/// Options of the library server (the CLI builds them from flags, env and config file).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
}

#[derive(Debug)]
pub struct AppState {
    pub store: Arc<RocksStore>,
    pub offline: Arc<OfflineStore>,
    registry: RwLock<Arc<RegistryState>>,
    /// Serializes applies: read state, plan, persist, swap.
    pub apply_lock: tokio::sync::Mutex<()>,
    pub clock: Arc<dyn Clock>,
    pub jobs: Jobs,
    pub uploads: Uploads,
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

impl AppState {
    pub fn open(options: &ServerOptions, shutdown: CancellationToken) -> Result<AppState> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot create data dir {}: {e}",
                options.data_dir.display()
            ))
        })?;
        let store = RocksStore::open(&options.data_dir.join("rocksdb"))?;
        let registry = store.load_registry()?.unwrap_or_default();
        tracing::info!(registry_version = registry.version, data_dir = %options.data_dir.display(), "storage opened");
        Ok(AppState {
            store: Arc::new(store),
            offline: Arc::new(OfflineStore::new(&options.data_dir)),
            registry: RwLock::new(Arc::new(registry)),
            apply_lock: tokio::sync::Mutex::new(()),
            clock: Arc::clone(&options.clock),
            jobs: Jobs::default(),
            uploads: Uploads::default(),
            tasks: TaskTracker::new(),
            shutdown,
        })
    }

    /// The current immutable registry snapshot.
    pub fn registry(&self) -> Arc<RegistryState> {
        match self.registry.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Swaps in a new snapshot (after it was persisted).
    pub fn set_registry(&self, state: RegistryState) {
        let state = Arc::new(state);
        match self.registry.write() {
            Ok(mut guard) => *guard = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}
