//! Job records shared through the online store, so that any replica answers GetJob, WatchJob
//! and CancelJob for a job another one runs. The replica running a job publishes its report
//! (record `job/<id>`, JSON) when it starts, every [`PUBLISH_EVERY`] and once it ends. A
//! running job's record lives [`RUNNING_TTL`], so the record of a job whose replica died goes
//! away instead of saying "running" on; a finished job's lives [`KEEP`]. CancelJob on another
//! replica writes `cancel/<id>`, which the runner looks for at each publication. With the
//! embedded store the records stay in the process, like its jobs.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::online_store::OnlineStore;

use super::job::{Job, JobReport, JobState};
use crate::error::{Error, Result};

/// How often a running job's report is published (and a cancel request looked for).
pub(super) const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// How long a running job's record outlives its last publication.
const RUNNING_TTL: Duration = Duration::from_secs(30);
/// How long a finished job's record is kept.
const KEEP: Duration = Duration::from_secs(3_600);

pub(super) async fn publish(online: &dyn OnlineStore, report: &JobReport) -> Result<()> {
    let json = serde_json::to_vec(report)
        .map_err(|e| Error::Internal(format!("a job report does not serialize: {e}")))?;
    let ttl = match report.state {
        JobState::Running => RUNNING_TTL,
        _ => KEEP,
    };
    Ok(online
        .put_record(&format!("job/{}", report.id), &json, ttl)
        .await?)
}

/// The report another replica published for job `id`, if any.
pub(super) async fn read(online: &dyn OnlineStore, id: &str) -> Result<Option<JobReport>> {
    let Some(json) = online.record(&format!("job/{id}")).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&json).map(Some).map_err(|e| {
        Error::Internal(format!(
            "the shared record of job `{id}` is unreadable: {e}"
        ))
    })
}

pub(super) async fn request_cancel(online: &dyn OnlineStore, id: &str) -> Result<()> {
    Ok(online
        .put_record(&format!("cancel/{id}"), b"1", KEEP)
        .await?)
}

/// Publishes `job`'s report every [`PUBLISH_EVERY`] until `stop`, and cancels the job when
/// another replica asked to. A failed publication is logged and retried. Await the handle
/// after `stop` before publishing the final report: a publication in flight would otherwise
/// land after it.
pub(super) fn spawn_publisher(
    online: Arc<dyn OnlineStore>,
    job: Arc<Job>,
    stop: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let cancel = async {
                publish(&*online, &job.report()).await?;
                let asked = online.record(&format!("cancel/{}", job.id)).await?;
                Ok::<_, Error>(asked.is_some())
            }
            .await;
            match cancel {
                Ok(true) => job.cancel(),
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, job = %job.id, "the job's record was not published")
                }
            }
            tokio::select! {
                () = tokio::time::sleep(PUBLISH_EVERY) => {}
                () = stop.cancelled() => {}
            }
        }
    })
}
