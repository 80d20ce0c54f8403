//! `quiver.v1.JobService`: start, watch, cancel and get materialization jobs.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::audit::audited;
use crate::auth::{Principal, principal};
use crate::error::{Error, Result};
use crate::jobs::{JobReport, JobState, MaterializeRequest, Materializer};

/// How often WatchJob reports progress while a job runs.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct JobService {
    materializer: Arc<Materializer>,
}

impl JobService {
    pub fn new(materializer: Arc<Materializer>) -> Self {
        JobService { materializer }
    }
}

fn state_to_proto(state: JobState) -> v1::JobState {
    match state {
        JobState::Running => v1::JobState::Running,
        JobState::Succeeded => v1::JobState::Succeeded,
        JobState::Failed => v1::JobState::Failed,
        JobState::Cancelled => v1::JobState::Cancelled,
    }
}

fn job_to_proto(report: JobReport) -> v1::Job {
    let views: Vec<v1::ViewProgress> = report
        .views
        .into_iter()
        .map(|v| v1::ViewProgress {
            view: v.view,
            version: v.version,
            start_micros: v.start,
            end_micros: v.end,
            state: state_to_proto(v.state) as i32,
            rows_scanned: v.rows_scanned,
            keys_written: v.keys_written,
            profile_id: v.profile.as_ref().map_or(0, |p| p.id),
            violations: v
                .profile
                .into_iter()
                .flat_map(|p| p.violations)
                .map(|(feature, rule, count)| v1::RuleViolations {
                    feature,
                    rule,
                    count,
                })
                .collect(),
        })
        .collect();
    v1::Job {
        id: report.id,
        state: state_to_proto(report.state) as i32,
        rows_scanned: views.iter().map(|v| v.rows_scanned).sum(),
        keys_written: views.iter().map(|v| v.keys_written).sum(),
        views,
        started_at_micros: report.started_at,
        elapsed_micros: report.elapsed.as_micros() as i64,
        error: report.error,
    }
}

/// A token scoped to views may materialize those views, and must name them (no "all views").
fn check_views(principal: &Principal, views: &[String]) -> Result<()> {
    if principal.scope.is_unrestricted() {
        return Ok(());
    }
    if views.is_empty() {
        return Err(Error::PermissionDenied(format!(
            "token `{}` is scoped: name the views to materialize (its views: {:?})",
            principal.name, principal.scope.views
        )));
    }
    views.iter().try_for_each(|view| {
        principal.check_view(quiver_core::model::split_pin(view).map_or(view.as_str(), |(n, _)| n))
    })
}

#[tonic::async_trait]
impl v1::job_service_server::JobService for JobService {
    type WatchJobStream = BoxStream<'static, Result<v1::Job, Status>>;

    async fn start_materialization(
        &self,
        request: Request<v1::StartMaterializationRequest>,
    ) -> Result<Response<v1::StartMaterializationResponse>, Status> {
        let principal = principal(&request)?;
        let objects = request.get_ref().views.join(",");
        let started = async {
            let request = MaterializeRequest::from_wire(request.get_ref())?;
            check_views(principal, &request.views)?;
            self.materializer.start(&request).await
        }
        .await;
        let job = audited(principal, "StartMaterialization", &objects, started)?;
        Ok(Response::new(v1::StartMaterializationResponse {
            job: Some(job_to_proto(job.report())),
        }))
    }

    async fn watch_job(
        &self,
        request: Request<v1::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        let id = request.into_inner().id;
        // Unknown on every replica: NOT_FOUND now, not in the stream.
        self.materializer.report(&id).await?;
        let materializer = Arc::clone(&self.materializer);
        let stream = futures::stream::unfold(Some(id), move |id| {
            let materializer = Arc::clone(&materializer);
            async move {
                let id = id?;
                match materializer.report_after(&id, WATCH_INTERVAL).await {
                    Ok(report) => {
                        let next = (report.state == JobState::Running).then_some(id);
                        Some((Ok(job_to_proto(report)), next))
                    }
                    Err(error) => Some((Err(error.into()), None)),
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn cancel_job(
        &self,
        request: Request<v1::CancelJobRequest>,
    ) -> Result<Response<v1::CancelJobResponse>, Status> {
        let principal = principal(&request)?;
        let id = &request.get_ref().id;
        let report = audited(
            principal,
            "CancelJob",
            id,
            self.materializer.cancel(id).await,
        )?;
        Ok(Response::new(v1::CancelJobResponse {
            job: Some(job_to_proto(report)),
        }))
    }

    async fn get_job(
        &self,
        request: Request<v1::GetJobRequest>,
    ) -> Result<Response<v1::GetJobResponse>, Status> {
        let report = self.materializer.report(&request.into_inner().id).await?;
        Ok(Response::new(v1::GetJobResponse {
            job: Some(job_to_proto(report)),
        }))
    }
}
