//! `quiver.v1.JobService`: start, watch, cancel and get materialization jobs.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::jobs;
use crate::state::AppState;

/// How often WatchJob reports progress while a job runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct JobService {
    state: Arc<AppState>,
}

impl JobService {
    pub fn new(state: Arc<AppState>) -> Self {
        JobService { state }
    }
}

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobService {
    type WatchJobStream = BoxStream<'static, Result<v1::Job, Status>>;

    async fn start_materialization(
        &self,
        request: Request<v1::StartMaterializationRequest>,
    ) -> Result<Response<v1::StartMaterializationResponse>, Status> {
        let job = jobs::start(&self.state, request.into_inner())?;
        Ok(Response::new(v1::StartMaterializationResponse {
            job: Some(job.snapshot()),
        }))
    }

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let job = self.state.jobs.get(&request.into_inner().id)?;
        let stream = futures::stream::unfold((job, false), |(job, ended)| async move {
            if ended {
                return None;
            }
            if !job.is_finished() {
                let notified = job.done.notified();
                tokio::select! {
                    () = notified => {}
                    () = tokio::time::sleep(WATCH_INTERVAL) => {}
                }
            }
            let finished = job.is_finished();
            Some((Ok(job.snapshot()), (job, finished)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let job = self.state.jobs.get(&request.into_inner().id)?;
        job.cancel.cancel();
        Ok(Response::new(v1::CancelJobResponse {
            job: Some(job.snapshot()),
        }))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let job = self.state.jobs.get(&request.into_inner().id)?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some(job.snapshot()),
        }))
    }
}
