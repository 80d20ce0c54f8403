//! The profile of a materialization run: every row the run's scan reads (all rows of the
//! window, before the latest row per key is kept), stored when the run has written and synced
//! its rows, with the expectation violations counted over those rows.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use quiver_core::ResolvedView;
use quiver_core::types::Micros;
use quiver_monitor::{Origin, Profile, ProfileBuilder, Subject};
use quiver_offline::ScanObserver;

use super::{Monitor, SubjectRef, column_specs};
use crate::error::{Error, Result};

/// Counts and profiles the rows one view's materialization scans (see
/// [`Monitor::run_profiler`]). Scan units call it from several threads at once: each call
/// takes a builder from the pool (a new one when all are busy), profiles its batch without a
/// lock, and gives it back; the builders merge at the end. So profiling runs in parallel,
/// with as many builders as scan units ran at once.
#[derive(Debug)]
pub(crate) struct RunProfiler {
    monitor: Arc<Monitor>,
    subject: Subject,
    job: String,
    window: (Micros, Micros),
    scanned: Arc<AtomicU64>,
    columns: Vec<quiver_monitor::ColumnSpec>,
    /// Idle builders; `Err` once a batch could not be profiled (the run goes on, without a
    /// profile) or the profile was stored.
    pool: Mutex<std::result::Result<Vec<ProfileBuilder>, String>>,
}

impl Monitor {
    /// A profiler of the rows job `job` scans in `view`'s window `[start, end)`; it also
    /// counts them into `scanned`.
    pub(crate) fn run_profiler(
        self: &Arc<Self>,
        view: &ResolvedView,
        job: &str,
        window: (Micros, Micros),
        scanned: Arc<AtomicU64>,
    ) -> Result<RunProfiler> {
        let registry = self.registry.snapshot();
        let resolved = SubjectRef::View(view.pinned_name()).resolve(&registry)?;
        let columns: Vec<_> = resolved
            .selection
            .views
            .iter()
            .flat_map(|v| column_specs(&registry, v, |f| f.name.clone()))
            .collect();
        Ok(RunProfiler {
            monitor: Arc::clone(self),
            subject: resolved.subject,
            job: job.to_string(),
            window,
            scanned,
            pool: Mutex::new(Ok(vec![ProfileBuilder::new(columns.clone())])),
            columns,
        })
    }
}

impl ScanObserver for RunProfiler {
    fn observe(&self, batch: &RecordBatch) {
        self.scanned.observe(batch);
        let mut builder = match self.pool.lock().as_deref_mut() {
            Ok(Ok(idle)) => idle
                .pop()
                .unwrap_or_else(|| ProfileBuilder::new(self.columns.clone())),
            _ => return,
        };
        let added = builder.add_batch(batch);
        if let Ok(pool) = &mut self.pool.lock().as_deref_mut() {
            match (added, pool) {
                (Ok(()), Ok(idle)) => idle.push(builder),
                (Err(e), pool) => **pool = Err(e.to_string()),
                (Ok(()), Err(_)) => {}
            }
        }
    }
}

impl RunProfiler {
    /// Stores the profile of every row observed (once: a second call fails).
    pub(crate) async fn finish(&self) -> Result<Profile> {
        let builders = {
            let mut guard = self
                .pool
                .lock()
                .map_err(|_| Error::Internal("run profiler poisoned".into()))?;
            std::mem::replace(&mut *guard, Err("the profile was already stored".into()))
        };
        let mut builders =
            builders.map_err(|e| Error::Internal(format!("profiling the scanned rows: {e}")))?;
        let mut builder = builders
            .pop()
            .unwrap_or_else(|| ProfileBuilder::new(self.columns.clone()));
        for other in &builders {
            builder.merge(other)?;
        }
        let mut profile = builder.finish(
            self.subject.clone(),
            Origin::Materialization {
                job: self.job.clone(),
            },
            Some(self.window),
            self.monitor.clock.now(),
        );
        profile.id = self.monitor.reserve_id();
        self.monitor.save(profile).await
    }
}
