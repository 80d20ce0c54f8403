//! The registry component: the immutable snapshot every request path reads, and plan/apply,
//! which persist a new version and swap the snapshot atomically.

use std::sync::{Arc, RwLock};

use quiver_core::RegistryState;
use quiver_core::manifest::{ManifestFile, parse_manifests};
use quiver_core::plan::{self, Plan};
use quiver_core::types::Micros;
use quiver_offline::ParquetSchemaCheck;
use quiver_online::RocksStore;

use crate::error::{Error, Result};

/// What an apply asks for, validated on receipt.
#[derive(Debug)]
pub struct ApplyRequest {
    pub manifests: Vec<ManifestFile>,
    /// The registry version the client planned against, if it wants that checked.
    pub expected_version: Option<u64>,
    /// Apply breaking changes.
    pub force: bool,
    /// The principal applying, recorded on every version the apply creates.
    pub applied_by: String,
}

#[derive(Debug)]
pub struct Registry {
    store: Arc<RocksStore>,
    current: RwLock<Arc<RegistryState>>,
    /// Serializes applies: read state, plan, persist, swap.
    apply_lock: tokio::sync::Mutex<()>,
    /// Checks sources against their files, and that they lie under the source roots.
    schema_check: ParquetSchemaCheck,
}

impl Registry {
    /// Loads the persisted registry (empty if there is none); plans check sources with
    /// `schema_check`.
    pub fn open(store: Arc<RocksStore>, schema_check: ParquetSchemaCheck) -> Result<Registry> {
        let state = store.load_registry()?.unwrap_or_default();
        Ok(Registry {
            store,
            current: RwLock::new(Arc::new(state)),
            apply_lock: tokio::sync::Mutex::new(()),
            schema_check,
        })
    }

    /// The current immutable registry snapshot.
    pub fn snapshot(&self) -> Arc<RegistryState> {
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// Plans `manifests` against the current snapshot (no change anywhere).
    pub async fn plan(&self, manifests: Vec<ManifestFile>, now: Micros) -> Result<Plan> {
        let current = self.snapshot();
        let check = self.schema_check.clone();
        tokio::task::spawn_blocking(move || -> Result<Plan> {
            let declared = parse_manifests(&manifests)?;
            Ok(plan::plan(&current, declared, &check, now)?)
        })
        .await
        .map_err(|e| Error::Internal(format!("plan task failed: {e}")))?
    }

    /// Applies `request`: persists the new state (when anything changed), then swaps it in.
    /// Returns the registry version after the apply and the changes made.
    ///
    /// Cancel-safe: the apply runs to its end in its own task even when the caller goes away
    /// (a client timeout drops the RPC's future), so storage and the served snapshot never
    /// disagree; the apply lock makes applies one at a time, so two can never write the same
    /// version.
    pub async fn apply(
        self: &Arc<Self>,
        request: ApplyRequest,
        now: Micros,
    ) -> Result<(u64, Plan)> {
        let registry = Arc::clone(self);
        tokio::spawn(async move { registry.apply_to_end(request, now).await })
            .await
            .map_err(|e| Error::Internal(format!("apply task failed: {e}")))?
    }

    async fn apply_to_end(&self, request: ApplyRequest, now: Micros) -> Result<(u64, Plan)> {
        let _guard = self.apply_lock.lock().await;
        let current = self.snapshot();
        let store = Arc::clone(&self.store);
        let check = self.schema_check.clone();
        let (next, plan) = tokio::task::spawn_blocking(move || -> Result<_> {
            let declared = parse_manifests(&request.manifests)?;
            let (mut next, plan) = plan::apply(
                &current,
                declared,
                request.expected_version,
                request.force,
                &check,
                now,
            )?;
            if !plan.is_empty() {
                next.record_applier(&request.applied_by);
                store.save_registry(&next)?;
            }
            Ok((next, plan))
        })
        .await
        .map_err(|e| Error::Internal(format!("apply task failed: {e}")))??;
        let version = next.version;
        if !plan.is_empty() {
            tracing::info!(
                registry_version = version,
                changes = plan.changes.len(),
                "registry applied"
            );
            self.swap(next);
        }
        Ok((version, plan))
    }

    fn swap(&self, state: RegistryState) {
        let state = Arc::new(state);
        match self.current.write() {
            Ok(mut guard) => *guard = state,
            Err(poisoned) => *poisoned.into_inner() = state,
        }
    }
}
