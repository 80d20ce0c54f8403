//! Materialization jobs: for each view, scan the offline data of a window, keep the latest row
//! per key, write it online with the ordering rule, sync, then move the view's watermark.
//!
//! A view's watermark moves only after all of its window is written and synced, so a failure
//! or a cancel leaves it where the data really is. It moves to `end` only when the window
//! starts at or before the current watermark (no watermark = the beginning of time), so
//! incremental runs never skip data.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use quiver_core::ResolvedView;
use quiver_core::types::format_rfc3339;
use quiver_proto::v1;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::state::AppState;

/// Rows per online write batch during materialization.
const WRITE_CHUNK: usize = 4_096;

#[derive(Debug, Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<String, Arc<Job>>>,
    next_id: AtomicU64,
}

#[derive(Debug)]
pub struct Job {
    pub id: String,
    pub started_at: i64,
    started: std::time::Instant,
    pub cancel: CancellationToken,
    views: Vec<ViewJob>,
    status: Mutex<(v1::JobState, String, Option<std::time::Duration>)>,
    pub done: tokio::sync::Notify,
}

#[derive(Debug)]
struct ViewJob {
    view: ResolvedView,
    start: i64,
    end: i64,
    state: Mutex<v1::JobState>,
    scanned: Arc<AtomicU64>,
    written: AtomicU64,
}

impl Job {
    pub fn snapshot(&self) -> v1::Job {
        let (state, error, elapsed) = match self.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        let views: Vec<v1::ViewProgress> = self
            .views
            .iter()
            .map(|v| v1::ViewProgress {
                view: v.view.name.clone(),
                version: v.view.version,
                start_micros: v.start,
                end_micros: v.end,
                state: v
                    .state
                    .lock()
                    .map(|s| *s)
                    .unwrap_or(v1::JobState::Unspecified) as i32,
                rows_scanned: v.scanned.load(Ordering::Relaxed),
                keys_written: v.written.load(Ordering::Relaxed),
            })
            .collect();
        v1::Job {
            id: self.id.clone(),
            state: state as i32,
            rows_scanned: views.iter().map(|v| v.rows_scanned).sum(),
            keys_written: views.iter().map(|v| v.keys_written).sum(),
            views,
            started_at_micros: self.started_at,
            elapsed_micros: elapsed
                .unwrap_or_else(|| self.started.elapsed())
                .as_micros() as i64,
            error,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.status
            .lock()
            .map(|s| s.0 != v1::JobState::Running)
            .unwrap_or(true)
    }

    fn finish(&self, state: v1::JobState, error: String) {
        if let Ok(mut status) = self.status.lock() {
            *status = (state, error, Some(self.started.elapsed()));
        }
        self.done.notify_waiters();
    }
}

impl Jobs {
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
}

/// Plans the job (views and windows) and starts it in the background.
pub fn start(state: &Arc<AppState>, request: v1::StartMaterializationRequest) -> Result<Arc<Job>> {
    let registry = state.registry();
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
    let mut view_jobs = Vec::new();
    for view in views {
        if !view.online {
            return Err(Error::invalid(
                "views",
                format!("view `{}` is declared `online: false`", view.name),
            ));
        }
        let start = if request.incremental {
            state.store.watermark(&view.name)?.unwrap_or(i64::MIN)
        } else {
            request.start_micros
        };
        if start >= request.end_micros && !request.incremental {
            return Err(Error::invalid(
                "start",
                format!(
                    "start {} is not before end {}",
                    format_rfc3339(start),
                    format_rfc3339(request.end_micros)
                ),
            ));
        }
        view_jobs.push(ViewJob {
            view,
            start,
            end: request.end_micros,
            state: Mutex::new(v1::JobState::Running),
            scanned: Arc::new(AtomicU64::new(0)),
            written: AtomicU64::new(0),
        });
    }
    let id = format!(
        "mat-{}-{}",
        state.clock.now(),
        state.jobs.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let job = Arc::new(Job {
        id: id.clone(),
        started_at: state.clock.now(),
        started: std::time::Instant::now(),
        cancel: state.shutdown.child_token(),
        views: view_jobs,
        status: Mutex::new((v1::JobState::Running, String::new(), None)),
        done: tokio::sync::Notify::new(),
    });
    state
        .jobs
        .jobs
        .lock()
        .map_err(|_| Error::Internal("job table poisoned".into()))?
        .insert(id, Arc::clone(&job));
    let (task_state, task_job) = (Arc::clone(state), Arc::clone(&job));
    state.tasks.spawn(async move {
        let outcome = run(&task_state, &task_job).await;
        match outcome {
            Ok(()) => task_job.finish(v1::JobState::Succeeded, String::new()),
            Err(Error::Cancelled) => task_job.finish(v1::JobState::Cancelled, String::new()),
            Err(error) => {
                tracing::warn!(job = %task_job.id, %error, "materialization failed");
                task_job.finish(v1::JobState::Failed, error.to_string());
            }
        }
    });
    Ok(job)
}

async fn run(state: &Arc<AppState>, job: &Job) -> Result<()> {
    for view_job in &job.views {
        let set_state = |s| {
            if let Ok(mut guard) = view_job.state.lock() {
                *guard = s;
            }
        };
        let span =
            tracing::info_span!("materialize", feature_view = %view_job.view.name, job = %job.id);
        let result = run_view(state, job, view_job).instrument(span).await;
        set_state(match &result {
            Ok(()) => v1::JobState::Succeeded,
            Err(Error::Cancelled) => v1::JobState::Cancelled,
            Err(_) => v1::JobState::Failed,
        });
        result?;
    }
    Ok(())
}

async fn run_view(state: &Arc<AppState>, job: &Job, view_job: &ViewJob) -> Result<()> {
    let view = &view_job.view;
    if view_job.start >= view_job.end {
        return Ok(());
    }
    let scan = state.offline.scan_latest(
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
            let (store, view, chunk) = (Arc::clone(&state.store), view.clone(), chunk.to_vec());
            let stats = tokio::task::spawn_blocking(move || store.write_rows(&view, &chunk, false))
                .await
                .map_err(|e| Error::Internal(format!("write task failed: {e}")))??;
            view_job.written.fetch_add(stats.written, Ordering::Relaxed);
        }
    }
    state.store.sync()?;
    let watermark = state.store.watermark(&view.name)?.unwrap_or(i64::MIN);
    if view_job.start <= watermark && view_job.end > watermark {
        state.store.set_watermark(&view.name, view_job.end)?;
    }
    tracing::info!(
        scanned = view_job.scanned.load(Ordering::Relaxed),
        written = view_job.written.load(Ordering::Relaxed),
        "view materialized"
    );
    Ok(())
}
