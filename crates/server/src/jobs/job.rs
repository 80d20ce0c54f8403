//! One materialization job: its views and windows, its state, and its progress counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_core::ResolvedView;
use quiver_core::online_store::OnlineStore;
use quiver_core::types::Micros;
use tokio_util::sync::CancellationToken;

use super::request::{Window, incremental_window};
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

/// A job's progress at one moment (shared between replicas as JSON, `shared`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobReport {
    pub id: String,
    pub state: JobState,
    pub views: Vec<ViewReport>,
    pub started_at: Micros,
    pub elapsed: Duration,
    pub error: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ViewReport {
    pub view: String,
    pub version: u32,
    pub start: Micros,
    pub end: Micros,
    pub state: JobState,
    pub rows_scanned: u64,
    pub keys_written: u64,
    /// The run's profile, once stored: its id and the violations (feature, rule, count).
    pub profile: Option<RunProfile>,
}

/// What the profile of a view's run says about the rows scanned.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunProfile {
    pub id: u64,
    pub violations: Vec<(String, String, u64)>,
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    /// Start order in this process (the job table forgets the lowest first).
    pub(super) seq: u64,
    started_at: Micros,
    started: Instant,
    pub(super) cancel: CancellationToken,
    pub(super) views: Vec<ViewJob>,
    status: Mutex<(JobState, String, Option<Duration>)>,
    done: tokio::sync::Notify,
    /// Why the job lost a view's lease, when it did (it is then cancelled, and fails).
    pub(super) lease_lost: std::sync::OnceLock<String>,
}

/// One view of a job: its window and progress.
#[derive(Debug)]
pub(super) struct ViewJob {
    pub(super) view: ResolvedView,
    pub(super) start: Micros,
    pub(super) end: Micros,
    pub(super) state: Mutex<JobState>,
    pub(super) scanned: Arc<AtomicU64>,
    pub(super) written: AtomicU64,
    pub(super) profile: Mutex<Option<RunProfile>>,
}

impl ViewJob {
    /// The job of `view` over `window`; an incremental window starts `lookback` before the
    /// watermark of the view's definition (read from the online store).
    pub(super) async fn new(
        store: &dyn OnlineStore,
        view: ResolvedView,
        window: Window,
        lookback: Micros,
    ) -> Result<ViewJob> {
        let (start, end) = match window {
            Window::Range { start, end } => (start, end),
            Window::Incremental { end } => {
                let (start, end) =
                    incremental_window(&view.name, store.watermark(&view).await?, end)?;
                (start.saturating_sub(lookback), end)
            }
        };
        Ok(ViewJob {
            view,
            start,
            end,
            state: Mutex::new(JobState::Running),
            scanned: Arc::new(AtomicU64::new(0)),
            written: AtomicU64::new(0),
            profile: Mutex::new(None),
        })
    }
}

fn lock<T: Clone>(mutex: &Mutex<T>) -> T {
    match mutex.lock() {
        Ok(guard) => guard.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

impl Job {
    pub(super) fn new(
        id: String,
        seq: u64,
        started_at: Micros,
        cancel: CancellationToken,
        views: Vec<ViewJob>,
    ) -> Job {
        Job {
            id,
            seq,
            started_at,
            started: Instant::now(),
            cancel,
            views,
            status: Mutex::new((JobState::Running, String::new(), None)),
            done: tokio::sync::Notify::new(),
            lease_lost: std::sync::OnceLock::new(),
        }
    }

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
                    profile: lock(&v.profile),
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

    pub(super) fn finish(&self, state: JobState, error: String) {
        if let Ok(mut status) = self.status.lock() {
            *status = (state, error, Some(self.started.elapsed()));
        }
        self.done.notify_waiters();
    }
}
