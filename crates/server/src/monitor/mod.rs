//! Profiles and drift: computes profiles over a window of a view's or service's data (and,
//! through [`Monitor::export_profiler`], over a training export as it streams), stores them in
//! RocksDB, and compares two of them with the thresholds the registry declares.

mod check_leases;
mod drift;
mod retention;
mod run;
mod schedule;
mod subject;
mod webhook;
pub(crate) mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt;
use quiver_core::Kind;
use quiver_core::model::Feature;
use quiver_core::registry::RegistryState;
use quiver_core::selection::SelectedView;
use quiver_core::types::Micros;
use quiver_monitor::{ColumnSpec, Origin, Profile, ProfileBuilder};
use quiver_offline::OfflineStore;
use quiver_online::RocksStore;

use crate::error::{Error, Result};
use crate::options::Clock;
use crate::registry::Registry;
use crate::run_blocking;

pub(crate) use check_leases::CheckLeases;
pub(crate) use drift::ProfileSource;
pub(crate) use run::RunProfiler;
pub(crate) use schedule::{DriftChecks, spawn_ticks};
pub(crate) use subject::SubjectRef;

/// Most profiles one ListProfiles returns.
pub(crate) const MAX_LIST: usize = 1000;

#[derive(Debug)]
pub(crate) struct Monitor {
    registry: Arc<Registry>,
    offline: Arc<OfflineStore>,
    store: Arc<RocksStore>,
    clock: Arc<dyn Clock>,
    next_id: AtomicU64,
}

impl Monitor {
    pub(crate) fn open(
        registry: Arc<Registry>,
        offline: Arc<OfflineStore>,
        store: Arc<RocksStore>,
        clock: Arc<dyn Clock>,
    ) -> Result<Monitor> {
        let next_id = AtomicU64::new(store.last_profile_id()? + 1);
        Ok(Monitor {
            registry,
            offline,
            store,
            clock,
            next_id,
        })
    }

    pub(crate) fn offline(&self) -> &Arc<OfflineStore> {
        &self.offline
    }

    pub(crate) fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub(crate) fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// A new profile id (ids are never reused, even when the profile is never stored).
    pub(crate) fn reserve_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Profiles `subject` over the event-time window `[start, end)` and stores the profile.
    pub(crate) async fn profile_window(
        &self,
        subject: &SubjectRef,
        start: Micros,
        end: Micros,
    ) -> Result<Profile> {
        if end <= start {
            return Err(Error::invalid(
                "end_micros",
                "the window is empty; give `start` < `end`",
            ));
        }
        let registry = self.registry.snapshot();
        let resolved = subject.resolve(&registry)?;
        let mut features = Vec::new();
        let mut rows = 0;
        for view in &resolved.selection.views {
            let columns = column_specs(&registry, view, |f| f.name.clone());
            let mut builder = ProfileBuilder::new(columns);
            let mut stream = self.offline.read_range(view, start, end).await?.stream;
            while let Some(batch) = stream.next().await {
                builder.add_batch(&batch?)?;
            }
            rows += builder.rows();
            features.extend(builder.into_features());
        }
        let profile = Profile {
            format: quiver_monitor::profile::PROFILE_FORMAT,
            id: self.reserve_id(),
            subject: resolved.subject,
            created_at: self.clock.now(),
            window: Some((start, end)),
            origin: Origin::OnDemand,
            rows,
            features,
        };
        self.save(profile).await
    }

    /// Stores `profile` (its id reserved before) and returns it.
    pub(crate) async fn save(&self, profile: Profile) -> Result<Profile> {
        let json = serde_json::to_vec(&profile)
            .map_err(|e| Error::Internal(format!("profile to JSON: {e}")))?;
        let store = Arc::clone(&self.store);
        let id = profile.id;
        run_blocking(move || Ok(store.save_profile(id, &json)?)).await?;
        Ok(profile)
    }

    pub(crate) async fn get(&self, id: u64) -> Result<Profile> {
        let store = Arc::clone(&self.store);
        let json = run_blocking(move || Ok(store.profile(id)?)).await?;
        let json = json.ok_or_else(|| Error::NotFound {
            what: "profile",
            name: id.to_string(),
        })?;
        parse(&json)
    }

    /// Stored profiles of `name` (any, when empty), newest first, without their features.
    pub(crate) async fn list(&self, name: String, limit: usize) -> Result<Vec<Profile>> {
        let store = Arc::clone(&self.store);
        let limit = limit.clamp(1, MAX_LIST);
        let found = run_blocking(move || {
            let mut profiles = Vec::new();
            let mut bad = None;
            store.profiles(limit, |json| match parse(json) {
                Ok(mut p) if name.is_empty() || p.subject.name == name => {
                    p.features.clear();
                    profiles.push(p);
                    true
                }
                Ok(_) => false,
                Err(e) => {
                    bad.get_or_insert(e);
                    false
                }
            })?;
            match bad {
                Some(e) => Err(e),
                None => Ok(profiles),
            }
        })
        .await?;
        Ok(found)
    }

    /// The newest stored profile of a training export of `subject`.
    pub(crate) async fn latest_export_profile(&self, subject: &SubjectRef) -> Result<Option<u64>> {
        let store = Arc::clone(&self.store);
        let (kind, name) = (subject.kind().to_string(), subject.name().to_string());
        run_blocking(move || {
            let mut found = None;
            store.profiles(1, |json| {
                found = parse(json).ok().filter(|p| {
                    p.subject.kind == kind
                        && p.subject.name == name
                        && matches!(p.origin, Origin::Export { .. })
                });
                found.is_some()
            })?;
            Ok(found.map(|p| p.id))
        })
        .await
    }

    /// A profiler for the rows of a training export of `selection` with `full_names`: the
    /// export feeds it every batch and stores the profile when the export succeeds.
    pub(crate) fn export_profiler(
        self: &Arc<Self>,
        selection: &quiver_core::selection::Selection,
        full_names: bool,
        path: String,
    ) -> ExportProfiler {
        let registry = self.registry.snapshot();
        let columns = selection
            .views
            .iter()
            .flat_map(|view| {
                column_specs(&registry, view, |f| view.output_name(&f.name, full_names))
            })
            .collect();
        ExportProfiler {
            monitor: Arc::clone(self),
            id: self.reserve_id(),
            subject: subject::subject_of(selection),
            builder: ProfileBuilder::new(columns),
            path,
        }
    }
}

/// The profiled columns of `view`'s selected features, named in the batches by `column`,
/// each with the expectations the view declares for it.
fn column_specs(
    registry: &RegistryState,
    view: &SelectedView,
    column: impl Fn(&Feature) -> String,
) -> Vec<ColumnSpec> {
    let expectations = registry
        .history(Kind::FeatureView, &view.view.name)
        .map(|h| &h.metadata.monitoring.expectations);
    view.selected_features()
        .map(|f| ColumnSpec {
            column: column(f),
            name: view.output_name(&f.name, true),
            view: view.view.pinned_name(),
            value_type: f.value_type,
            expectation: expectations.and_then(|e| e.get(&f.name)).cloned(),
        })
        .collect()
}

fn parse(json: &[u8]) -> Result<Profile> {
    serde_json::from_slice(json).map_err(|e| Error::Internal(format!("a stored profile: {e}")))
}

/// Profiles an export's rows as they stream; see [`Monitor::export_profiler`].
#[derive(Debug)]
pub(crate) struct ExportProfiler {
    monitor: Arc<Monitor>,
    id: u64,
    subject: quiver_monitor::Subject,
    builder: ProfileBuilder,
    path: String,
}

impl ExportProfiler {
    /// The id the profile will have (for the export's metadata).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn add(&mut self, batch: &arrow::array::RecordBatch) -> Result<()> {
        Ok(self.builder.add_batch(batch)?)
    }

    /// Stores the profile of every row added.
    pub(crate) async fn finish(self) -> Result<Profile> {
        let mut profile = self.builder.finish(
            self.subject,
            Origin::Export { path: self.path },
            None,
            self.monitor.clock.now(),
        );
        profile.id = self.id;
        self.monitor.save(profile).await
    }
}
