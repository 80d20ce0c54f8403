//! Materialization jobs: for each view, scan the offline data of a window, keep the latest row
//! per key, write it online with the ordering rule, sync, then move the view's watermark.
//!
//! A view's watermark moves only after all of its window is written and synced, so a failure
//! or a cancel leaves it where the data really is. It moves to `end` only when the window
//! starts at or before the current watermark (no watermark = the beginning of time), so
//! incremental runs never skip data.
//!
//! The [`Materializer`] owns what jobs need (the stores, the registry, the clock, the task
//! tracker that shutdown waits on) and the job table, which keeps every running job and the
//! most recent finished ones.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_core::ResolvedView;
use quiver_core::types::{Micros, format_rfc3339};
use quiver_offline::OfflineStore;
use quiver_online::RocksStore;
use quiver_proto::v1;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::limits::check;
use crate::options::Clock;
use crate::registry::Registry;

/// Rows per online write batch during materialization.
const WRITE_CHUNK: usize = 4_096;
/// Finished jobs kept for WatchJob/GetJob; older finished jobs are forgotten first.
const MAX_FINISHED_JOBS: usize = 256;

/// Which rows a materialization reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// `[start, end)`.
    Range { start: Micros, end: Micros },
    /// From each view's watermark (the beginning of time without one) to `end`.
    Incremental { end: Micros },
}

/// A validated StartMaterialization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaterializeRequest {
    /// View names (`name` or `name@N`); empty = every online view.
    pub views: Vec<String>,
    pub window: Window,
}

impl MaterializeRequest {
    pub fn from_wire(request: &v1::StartMaterializationRequest) -> Result<MaterializeRequest> {
        let window = if request.incremental {
            Window::Incremental {
                end: request.end_micros,
            }
        } else if request.start_micros >= request.end_micros {
            return Err(Error::invalid(
                "start",
                format!(
                    "start {} is not before end {}",
                    format_rfc3339(request.start_micros),
                    format_rfc3339(request.end_micros)
                ),
            ));
        } else {
            Window::Range {
                start: request.start_micros,
                end: request.end_micros,
            }
        };
        Ok(MaterializeRequest {
            views: request.views.clone(),
            window,
        })
    }
}

/// An incremental run's window: from the watermark (the beginning of time without one) to
/// `end`. An `end` before the watermark would write nothing and report success; it is
/// refused, since the data up to the watermark is already online.
fn incremental_window(
    view: &str,
    watermark: Option<Micros>,
    end: Micros,
) -> Result<(Micros, Micros)> {
    match watermark {
        Some(watermark) if end < watermark => Err(Error::invalid(
            "end",
            format!(
                "end {} is before view `{view}`'s watermark {}: it is materialized up to there already; give an end at or after the watermark, or run a window with `start`",
                format_rfc3339(end),
                format_rfc3339(watermark)
            ),
        )),
        Some(watermark) => Ok((watermark, end)),
        None => Ok((i64::MIN, end)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A job's progress at one moment.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub id: String,
    pub state: JobState,
    pub views: Vec<ViewReport>,
    pub started_at: Micros,
    pub elapsed: Duration,
    pub error: String,
}

#[derive(Debug, Clone)]
pub struct ViewReport {
    pub view: String,
    pub version: u32,
    pub start: Micros,
    pub end: Micros,
    pub state: JobState,
    pub rows_scanned: u64,
    pub keys_written: u64,
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    /// Start order in this process (the job table forgets the lowest first).
    seq: u64,
    started_at: Micros,
    started: Instant,
    cancel: CancellationToken,
    views: Vec<ViewJob>,
    status: Mutex<(JobState, String, Option<Duration>)>,
    done: tokio::sync::Notify,
}

#[derive(Debug)]
struct ViewJob {
    view: ResolvedView,
    start: Micros,
    end: Micros,
    state: Mutex<JobState>,
    scanned: Arc<AtomicU64>,
    written: AtomicU64,
}

fn lock<T: Clone>(mutex: &Mutex<T>) -> T {
    match mutex.lock() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl Job {
    pub fn report(&self) -> JobReport {
        let (state, error, elapsed) = lock(&self.status);
        JobReport {
            id: self.id.clone(),
            state,
            views: self
                .views
                .iter()
                .map(|v| ViewReport {
                    view: v.view.name.clone(),
                    version: v.view.version,
                    start: v.start,
                    end: v.end,
                    state: lock(&v.state),
                    rows_scanned: v.scanned.load(Ordering::Relaxed),
                    keys_written: v.written.load(Ordering::Relaxed),
                })
                .collect(),
            started_at: self.started_at,
            elapsed: elapsed.unwrap_or_else(|| self.started.elapsed()),
            error,
        }
    }

    pub fn is_finished(&self) -> bool {
        lock(&self.status).0 != JobState::Running
    }

    /// Asks the job to stop between write batches.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits until the job finishes or `timeout` passes, whichever is first.
    pub async fn wait(&self, timeout: Duration) {
        if !self.is_finished() {
            let notified = self.done.notified();
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep(timeout) => {}
            }
        }
    }

    fn finish(&self, state: JobState, error: String) {
        if let Ok(mut status) = self.status.lock() {
            *status = (state, error, Some(self.started.elapsed()));
        }
        self.done.notify_waiters();
    }
}

/// Runs materialization jobs in the background and keeps their table.
#[derive(Debug)]
pub struct Materializer {
    store: Arc<RocksStore>,
    offline: Arc<OfflineStore>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    next_id: AtomicU64,
    max_concurrent_jobs: u64,
}

impl Materializer {
    pub fn new(
        store: Arc<RocksStore>,
        offline: Arc<OfflineStore>,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
        max_concurrent_jobs: u64,
    ) -> Self {
        Materializer {
            store,
            offline,
            registry,
            clock,
            tasks: TaskTracker::new(),
            shutdown,
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

    /// Plans the job (views and windows) and starts it in the background.
    pub fn start(self: &Arc<Self>, request: &MaterializeRequest) -> Result<Arc<Job>> {
        let views = self.view_jobs(request)?;
        let now = self.clock.now();
        let seq = self.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("mat-{now}-{seq}");
        let job = Arc::new(Job {
            id: id.clone(),
            seq,
            started_at: now,
            started: Instant::now(),
            cancel: self.shutdown.child_token(),
            views,
            status: Mutex::new((JobState::Running, String::new(), None)),
            done: tokio::sync::Notify::new(),
        });
        self.insert(id, Arc::clone(&job))?;
        let (materializer, task_job) = (Arc::clone(self), Arc::clone(&job));
        self.tasks.spawn(async move {
            match materializer.run(&task_job).await {
                Ok(()) => task_job.finish(JobState::Succeeded, String::new()),
                Err(Error::Cancelled) => task_job.finish(JobState::Cancelled, String::new()),
                Err(error) => {
                    tracing::warn!(job = %task_job.id, %error, "materialization failed");
                    task_job.finish(JobState::Failed, error.to_string());
                }
            }
        });
        Ok(job)
    }

    /// Cancels every job and waits for all of them to stop.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The views of `request` (every online view when it names none) with their windows.
    fn view_jobs(&self, request: &MaterializeRequest) -> Result<Vec<ViewJob>> {
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
        views
            .into_iter()
            .map(|view| {
                if !view.online {
                    return Err(Error::invalid(
                        "views",
                        format!("view `{}` is declared `online: false`", view.name),
                    ));
                }
                let (start, end) = match request.window {
                    Window::Range { start, end } => (start, end),
                    Window::Incremental { end } => {
                        let watermark = self.store.watermark(&view.name)?;
                        incremental_window(&view.name, watermark, end)?
                    }
                };
                Ok(ViewJob {
                    view,
                    start,
                    end,
                    state: Mutex::new(JobState::Running),
                    scanned: Arc::new(AtomicU64::new(0)),
                    written: AtomicU64::new(0),
                })
            })
            .collect()
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
            let result = self.run_view(job, view_job).instrument(span).await;
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
        let scan = self.offline.scan_latest(
            view,
            view_job.start,
            view_job.end,
            Arc::clone(&view_job.scanned),
        );
        let batches = tokio::select! {
            result = scan => result?,
            () = job.cancel.cancelled() => return Err(Error::Cancelled),
        };
        for batch in batches {
            for chunk in batch.chunks(WRITE_CHUNK) {
                if job.cancel.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                let (store, view, chunk) = (Arc::clone(&self.store), view.clone(), chunk.to_vec());
                let stats =
                    crate::run_blocking(move || Ok(store.write_rows(&view, &chunk, false)?))
                        .await?;
                view_job.written.fetch_add(stats.written, Ordering::Relaxed);
            }
        }
        let (store, name, start, end) = (
            Arc::clone(&self.store),
            view.name.clone(),
            view_job.start,
            view_job.end,
        );
        crate::run_blocking(move || {
            store.sync()?;
            let watermark = store.watermark(&name)?.unwrap_or(i64::MIN);
            if start <= watermark && end > watermark {
                store.set_watermark(&name, end)?;
            }
            Ok(())
        })
        .await?;
        tracing::info!(
            scanned = view_job.scanned.load(Ordering::Relaxed),
            written = view_job.written.load(Ordering::Relaxed),
            "view materialized"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::SystemClock;

    fn job(id: &str, seq: u64, state: JobState) -> Arc<Job> {
        Arc::new(Job {
            id: id.to_string(),
            seq,
            started_at: 0,
            started: Instant::now(),
            cancel: CancellationToken::new(),
            views: Vec::new(),
            status: Mutex::new((state, String::new(), None)),
            done: tokio::sync::Notify::new(),
        })
    }

    #[test]
    fn the_job_table_forgets_the_oldest_finished_jobs_only() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Internal(e.to_string()))?;
        let store = Arc::new(RocksStore::open(&dir.path().join("rocksdb"))?);
        let materializer = Materializer::new(
            Arc::clone(&store),
            Arc::new(OfflineStore::new(
                dir.path(),
                quiver_offline::Roots::none("a source root", "--source-root"),
                quiver_offline::Roots::none("a labels root", "--labels-root"),
            )),
            Arc::new(Registry::open(
                store,
                quiver_offline::ParquetSchemaCheck::new(quiver_offline::Roots::none(
                    "a source root",
                    "--source-root",
                )),
            )?),
            Arc::new(SystemClock),
            CancellationToken::new(),
            1,
        );
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
