//! Materialization jobs: for each view, scan the offline data of a window, keep the latest row
//! per key, write it online with the ordering rule, sync, then move the view's watermark.
//!
//! A view's watermark moves only after all of its window is written and synced, so a failure
//! or a cancel leaves it where the data really is. It moves to `end` only when the window
//! starts at or before the current watermark (no watermark = the beginning of time), so
//! incremental runs never skip data. Watermarks belong to the view's definition (its
//! fingerprint, see `quiver_core::lineage`): a new definition starts from the beginning.
//!
//! The [`Materializer`] owns what jobs need (the stores, the registry, the clock, the task
//! tracker that shutdown waits on) and the job table, which keeps every running job and the
//! most recent finished ones.

mod job;
mod leases;
mod request;
mod shared;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quiver_core::ResolvedView;
use quiver_core::online_store::OnlineStore;
use quiver_offline::OfflineStore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::limits::check;
use crate::metrics::{Metrics, Outcome};
use crate::monitor::{Monitor, RunProfiler};
use crate::options::{Clock, ReplicaOptions};
use crate::registry::Registry;
use job::ViewJob;
pub use job::{Job, JobReport, JobState, RunProfile, ViewReport};
use leases::JobLeases;
pub use request::{MaterializeRequest, Window};

/// Rows per online write batch during materialization.
const WRITE_CHUNK: usize = 4_096;
/// Finished jobs kept for WatchJob/GetJob; older finished jobs are forgotten first.
const MAX_FINISHED_JOBS: usize = 256;

/// Runs materialization jobs in the background and keeps their table.
#[derive(Debug)]
pub struct Materializer {
    /// Online rows, watermarks and leases.
    online: Arc<dyn OnlineStore>,
    /// This replica's name (in lease holders), lease time and look-back.
    replica: ReplicaOptions,
    offline: Arc<OfflineStore>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    next_id: AtomicU64,
    max_concurrent_jobs: u64,
    metrics: Arc<Metrics>,
    /// Profiles each run's scanned rows (None: `run_profiles` is off).
    profiler: Option<Arc<Monitor>>,
}

impl Materializer {
    /// Jobs over the stores, registry and clock `monitor` uses, writing online rows to
    /// `online`; `profiler` (when given) profiles each run.
    pub(crate) fn new(
        profiler: Option<Arc<Monitor>>,
        (monitor, online, replica): (Arc<Monitor>, Arc<dyn OnlineStore>, ReplicaOptions),
        shutdown: CancellationToken,
        max_concurrent_jobs: u64,
        metrics: Arc<Metrics>,
    ) -> Self {
        Materializer {
            online,
            replica,
            offline: Arc::clone(monitor.offline()),
            registry: Arc::clone(monitor.registry()),
            clock: Arc::clone(monitor.clock()),
            tasks: TaskTracker::new(),
            shutdown,
            metrics,
            profiler,
            jobs: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(0),
            max_concurrent_jobs,
        }
    }

    pub fn get(&self, id: &str) -> Result<Arc<Job>> {
        self.jobs
            .lock()
            .map_err(|_| Error::Internal("job table poisoned".into()))?
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "job",
                name: id.to_string(),
            })
    }

    /// Takes the views' leases, plans the job (windows from the watermarks) and starts it
    /// in the background.
    pub async fn start(self: &Arc<Self>, request: &MaterializeRequest) -> Result<Arc<Job>> {
        let views = self.selected_views(request)?;
        let now = self.clock.now();
        let seq = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("mat-{now}-{}-{seq}", self.replica.id);
        let (online, window) = (Arc::clone(&self.online), request.window);
        let (holder, ttl) = (format!("{}/{id}", self.replica.id), self.replica.lease_ttl);
        let lookback =
            i64::try_from(self.replica.materialize_lookback.as_micros()).unwrap_or(i64::MAX);
        let leases = Arc::new(JobLeases::acquire(Arc::clone(&online), &views, holder, ttl).await?);
        let mut planned = Vec::with_capacity(views.len());
        for view in views {
            planned.push(ViewJob::new(&*online, view, window, lookback).await?);
        }
        let job = Arc::new(Job::new(
            id.clone(),
            seq,
            now,
            self.shutdown.child_token(),
            planned,
        ));
        self.insert(id, Arc::clone(&job))?;
        // Published before the start is answered, so every replica knows the job at once.
        if let Err(error) = shared::publish(&*self.online, &job.report()).await {
            tracing::warn!(%error, "the job's record was not published");
        }
        let (materializer, task_job) = (Arc::clone(self), Arc::clone(&job));
        self.tasks.spawn(async move {
            let keeper = leases.keep(Arc::clone(&task_job));
            let stop_publishing = CancellationToken::new();
            let publisher = shared::spawn_publisher(
                Arc::clone(&materializer.online),
                Arc::clone(&task_job),
                stop_publishing.clone(),
            );
            let result = materializer.run(&task_job).await;
            keeper.abort();
            stop_publishing.cancel();
            let _ = publisher.await;
            // Given back before the job is seen to finish, so that a next run may start.
            leases.release().await;
            match result {
                Ok(()) => task_job.finish(JobState::Succeeded, String::new()),
                Err(Error::Cancelled) => match task_job.lease_lost.get() {
                    Some(lost) => task_job.finish(JobState::Failed, lost.clone()),
                    None => task_job.finish(JobState::Cancelled, String::new()),
                },
                Err(error) => {
                    tracing::warn!(job = %task_job.id, %error, "materialization failed");
                    task_job.finish(JobState::Failed, error.to_string());
                }
            }
            let report = task_job.report();
            if let Err(error) = shared::publish(&*materializer.online, &report).await {
                tracing::warn!(%error, "the finished job's record was not published");
            }
        });
        Ok(job)
    }

    /// Job `id`'s report: from this replica's table, else from the record the replica that
    /// runs it publishes.
    pub async fn report(&self, id: &str) -> Result<JobReport> {
        if let Ok(job) = self.get(id) {
            return Ok(job.report());
        }
        shared::read(&*self.online, id)
            .await?
            .ok_or_else(|| Error::NotFound {
                what: "job",
                name: id.to_string(),
            })
    }

    /// Job `id`'s report once it ends or `timeout` passes (a job of another replica: its
    /// record after `timeout`, at least a second).
    pub async fn report_after(&self, id: &str, timeout: Duration) -> Result<JobReport> {
        match self.get(id) {
            Ok(job) => {
                job.wait(timeout).await;
                Ok(job.report())
            }
            Err(_) => {
                tokio::time::sleep(timeout.max(shared::PUBLISH_EVERY)).await;
                self.report(id).await
            }
        }
    }

    /// Cancels job `id`: at once when it runs here, else by asking the replica that runs it
    /// (which stops within about a second). Its report.
    pub async fn cancel(&self, id: &str) -> Result<JobReport> {
        if let Ok(job) = self.get(id) {
            job.cancel();
            return Ok(job.report());
        }
        let report = self.report(id).await?;
        if report.state == JobState::Running {
            shared::request_cancel(&*self.online, id).await?;
        }
        Ok(report)
    }

    /// Cancels every job and waits for all of them to stop.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The views of `request` (every online view when it names none), each online.
    fn selected_views(&self, request: &MaterializeRequest) -> Result<Vec<ResolvedView>> {
        let registry = self.registry.snapshot();
        let views: Vec<ResolvedView> = if request.views.is_empty() {
            registry
                .list(quiver_core::Kind::FeatureView)
                .filter_map(|(_, v)| v.view.clone())
                .filter(|v| v.online)
                .collect()
        } else {
            request
                .views
                .iter()
                .map(|name| registry.view(name).cloned())
                .collect::<quiver_core::Result<_>>()?
        };
        if views.is_empty() {
            return Err(Error::FailedPrecondition(
                "no online feature views to materialize; apply manifests first".into(),
            ));
        }
        if let Some(view) = views.iter().find(|v| !v.online) {
            return Err(Error::invalid(
                "views",
                format!("view `{}` is declared `online: false`", view.name),
            ));
        }
        Ok(views)
    }

    /// Adds a job to the table, forgetting the oldest finished jobs beyond the bound. A job
    /// is refused while another running job writes one of its views (FAILED_PRECONDITION
    /// naming it), or when `max_concurrent_jobs` are running (RESOURCE_EXHAUSTED).
    fn insert(&self, id: String, job: Arc<Job>) -> Result<()> {
        let mut jobs = self
            .jobs
            .lock()
            .map_err(|_| Error::Internal("job table poisoned".into()))?;
        let running: Vec<&Arc<Job>> = jobs.values().filter(|j| !j.is_finished()).collect();
        for other in &running {
            let shared = other
                .views
                .iter()
                .find(|o| job.views.iter().any(|v| v.view.name == o.view.name));
            if let Some(shared) = shared {
                return Err(Error::FailedPrecondition(format!(
                    "view `{}` is being materialized by job `{}`; one job per view runs at a time: wait for it (WatchJob) or cancel it",
                    shared.view.name, other.id
                )));
            }
        }
        let counted = running.len() as u64 + u64::from(!job.is_finished());
        check(
            "materialization: the server",
            counted,
            "running jobs",
            self.max_concurrent_jobs,
            "--max-concurrent-jobs",
        )?;
        jobs.insert(id, job);
        let mut finished: Vec<(u64, String)> = jobs
            .iter()
            .filter(|(_, j)| j.is_finished())
            .map(|(id, j)| (j.seq, id.clone()))
            .collect();
        let excess = finished.len().saturating_sub(MAX_FINISHED_JOBS);
        if excess > 0 {
            finished.sort_unstable();
            for (_, id) in finished.into_iter().take(excess) {
                jobs.remove(&id);
            }
        }
        Ok(())
    }

    async fn run(&self, job: &Job) -> Result<()> {
        for view_job in &job.views {
            let span = tracing::info_span!("materialize", feature_view = %view_job.view.name, job = %job.id);
            let started = std::time::Instant::now();
            let result = self.run_view(job, view_job).instrument(span).await;
            self.metrics.record_materialization(
                &view_job.view.name,
                match &result {
                    Ok(()) => Outcome::Succeeded,
                    Err(Error::Cancelled) => Outcome::Cancelled,
                    Err(_) => Outcome::Failed,
                },
                view_job.written.load(Ordering::Relaxed),
                started.elapsed(),
                self.clock.now(),
            );
            if let Ok(mut state) = view_job.state.lock() {
                *state = match &result {
                    Ok(()) => JobState::Succeeded,
                    Err(Error::Cancelled) => JobState::Cancelled,
                    Err(_) => JobState::Failed,
                };
            }
            result?;
        }
        Ok(())
    }

    async fn run_view(&self, job: &Job, view_job: &ViewJob) -> Result<()> {
        let view = &view_job.view;
        if view_job.start >= view_job.end {
            return Ok(());
        }
        // A profiler that cannot be set up is logged; the run goes on without a profile.
        let profiler = self.profiler.as_ref().and_then(|monitor| {
            let window = (view_job.start, view_job.end);
            let scanned = Arc::clone(&view_job.scanned);
            match monitor.run_profiler(view, &job.id, window, scanned) {
                Ok(profiler) => Some(Arc::new(profiler)),
                Err(error) => {
                    tracing::warn!(%error, "the materialization run is not profiled");
                    None
                }
            }
        });
        let observer: Arc<dyn quiver_offline::ScanObserver> = match &profiler {
            Some(profiler) => profiler.clone(),
            None => view_job.scanned.clone(),
        };
        let scan = self
            .offline
            .scan_latest(view, view_job.start, view_job.end, observer);
        let batches = tokio::select! {
            result = scan => result?,
            () = job.cancel.cancelled() => return Err(Error::Cancelled),
        };
        for batch in batches {
            for chunk in batch.chunks(WRITE_CHUNK) {
                if job.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let stats = self.online.write_rows(view, chunk.to_vec(), false).await?;
                view_job.written.fetch_add(stats.written, Ordering::Relaxed);
            }
        }
        self.online.sync().await?;
        // The fence: moves only over a window that covers the watermark, whoever runs it.
        let moved = self
            .online
            .advance_watermark(view, view_job.start, view_job.end)
            .await?;
        tracing::info!(
            scanned = view_job.scanned.load(Ordering::Relaxed),
            written = view_job.written.load(Ordering::Relaxed),
            watermark_moved = moved,
            "view materialized"
        );
        if let Some(profiler) = &profiler {
            self.store_profile(view_job, profiler).await;
        }
        Ok(())
    }

    /// Stores the run's profile and counts its violations; a profile that cannot be stored
    /// is logged, and the run (whose rows are written and synced) still succeeds.
    async fn store_profile(&self, view_job: &ViewJob, profiler: &RunProfiler) {
        let profile = match profiler.finish().await {
            Ok(profile) => profile,
            Err(error) => {
                tracing::warn!(%error, "the materialization profile was not stored");
                return;
            }
        };
        // Profiles name features `view__feature`; reports and metrics, as on push, `feature`.
        let prefix = format!("{}__", view_job.view.name);
        let violations: Vec<(String, String, u64)> = profile
            .features
            .iter()
            .flat_map(|f| {
                let feature = f.feature.strip_prefix(&prefix).unwrap_or(&f.feature);
                f.violations
                    .iter()
                    .map(move |(rule, n)| (feature.to_string(), rule.clone(), *n))
            })
            .collect();
        self.metrics
            .record_materialization_violations(&view_job.view.name, &violations);
        if let Ok(mut slot) = view_job.profile.lock() {
            *slot = Some(RunProfile {
                id: profile.id,
                violations,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::SystemClock;
    use quiver_online::RocksStore;

    fn job(id: &str, seq: u64, state: JobState) -> Arc<Job> {
        let job = Job::new(id.to_string(), seq, 0, CancellationToken::new(), Vec::new());
        if state != JobState::Running {
            job.finish(state, String::new());
        }
        Arc::new(job)
    }

    async fn materializer(dir: &std::path::Path, max_jobs: u64) -> Result<Materializer> {
        let store = Arc::new(RocksStore::open(&dir.join("rocksdb"))?);
        let offline = Arc::new(OfflineStore::new(
            dir,
            quiver_offline::Roots::none("a source root", "--source-root"),
            quiver_offline::Roots::none("a labels root", "--labels-root"),
        ));
        let registry = Arc::new(
            Registry::open(
                Arc::clone(&store) as Arc<dyn quiver_core::registry_store::RegistryStore>,
                quiver_offline::ParquetSchemaCheck::new(quiver_offline::Roots::none(
                    "a source root",
                    "--source-root",
                )),
                false,
            )
            .await?,
        );
        let online = Arc::clone(&store) as Arc<dyn OnlineStore>;
        let monitor = Arc::new(Monitor::open(
            registry,
            offline,
            store,
            Arc::new(SystemClock),
        )?);
        Ok(Materializer::new(
            Some(Arc::clone(&monitor)),
            (monitor, online, ReplicaOptions::default()),
            CancellationToken::new(),
            max_jobs,
            Arc::new(crate::Metrics::new()?),
        ))
    }

    fn view_job(name: &str) -> ViewJob {
        let view = quiver_core::testdata::view(name, &[], &[]);
        ViewJob {
            view,
            start: 0,
            end: 1,
            state: Mutex::new(JobState::Running),
            scanned: Arc::new(AtomicU64::new(0)),
            written: AtomicU64::new(0),
            profile: Mutex::new(None),
        }
    }

    #[tokio::test]
    async fn one_running_job_per_view() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let materializer = materializer(dir.path(), 8).await?;
        let job = |id: &str, seq, views: &[&str]| {
            let views = views.iter().map(|v| view_job(v)).collect();
            Arc::new(Job::new(id.into(), seq, 0, CancellationToken::new(), views))
        };
        materializer.insert("first".into(), job("first", 0, &["a", "b"]))?;
        let refused = materializer.insert("second".into(), job("second", 1, &["c", "b"]));
        let Err(Error::FailedPrecondition(message)) = refused else {
            panic!("a second job on view b: {refused:?}");
        };
        assert!(
            message.contains("`b`") && message.contains("`first`"),
            "{message}"
        );
        materializer.insert("third".into(), job("third", 2, &["c"]))?;
        // Once the first job has finished, its views are free again.
        materializer
            .get("first")?
            .finish(JobState::Succeeded, String::new());
        materializer.insert("fourth".into(), job("fourth", 3, &["b"]))?;
        Ok(())
    }

    #[tokio::test]
    async fn the_job_table_forgets_the_oldest_finished_jobs_only() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let materializer = materializer(dir.path(), 1).await?;
        let running = job("running", 0, JobState::Running);
        materializer.insert("running".into(), running)?;
        // Ids that sort in another order than the jobs started: age is the start order.
        for i in 0..MAX_FINISHED_JOBS + 5 {
            let id = format!("mat-{}", 10_000 - i);
            materializer.insert(id.clone(), job(&id, i as u64 + 1, JobState::Succeeded))?;
        }
        assert!(materializer.get("running").is_ok(), "running jobs stay");
        for i in 0..5 {
            let error = materializer.get(&format!("mat-{}", 10_000 - i)).map(|_| ());
            assert!(
                matches!(error, Err(Error::NotFound { .. })),
                "{i}: {error:?}"
            );
        }
        for i in 5..MAX_FINISHED_JOBS + 5 {
            assert!(
                materializer.get(&format!("mat-{}", 10_000 - i)).is_ok(),
                "{i}"
            );
        }
        Ok(())
    }
}
