//! `quiver.v1.MonitoringService`: profiles and drift (the `monitor` module does the work).

use std::sync::Arc;

use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::audit::audited;
use crate::auth::{Principal, principal};
use crate::error::{Error, Result};
use crate::monitor::{Monitor, ProfileSource, SubjectRef, wire};
use crate::served_log::{ServedLog, SkewReport, SkewRequest};
use tokio_stream::StreamExt;

/// ListProfiles without a limit.
const DEFAULT_LIST: usize = 50;

#[derive(Debug, Clone)]
pub struct MonitoringService {
    monitor: Arc<Monitor>,
    served_log: Arc<ServedLog>,
    max_skew_rows: u64,
}

impl MonitoringService {
    pub(crate) fn new(
        monitor: Arc<Monitor>,
        served_log: Arc<ServedLog>,
        max_skew_rows: u64,
    ) -> Self {
        MonitoringService {
            monitor,
            served_log,
            max_skew_rows,
        }
    }
}

fn skew_to_wire(report: SkewReport) -> v1::ComputeSkewResponse {
    use quiver_core::skew::SkewCause;
    let features = report
        .features
        .into_iter()
        .map(|f| v1::FeatureSkew {
            value_differs: f.cause_count(SkewCause::ValueDiffers),
            online_present_offline_null: f.cause_count(SkewCause::OnlinePresentOfflineNull),
            online_null_offline_present: f.cause_count(SkewCause::OnlineNullOfflinePresent),
            outside_max_age_offline_value: f.cause_count(SkewCause::OutsideMaxAgeOfflineValue),
            feature: f.feature,
            compared: f.compared,
            matches: f.matches,
            mismatches: f.mismatches,
            expected: f.expected,
            examples: f
                .examples
                .into_iter()
                .map(|e| v1::SkewExample {
                    cause: e.cause.name().to_string(),
                    expected: e.expected,
                    key: e.key,
                    served_at_micros: e.served_at,
                    online: e.online,
                    offline: e.offline,
                })
                .collect(),
        })
        .collect();
    v1::ComputeSkewResponse {
        feature_service: report.service,
        rows: report.rows,
        service_versions: report.versions,
        expected_lag_micros: report.expected_lag,
        features,
    }
}

/// Whether the caller may see the features of `kind` `name`.
fn check_subject(principal: &Principal, kind: &str, name: &str) -> Result<()> {
    match kind {
        "service" => principal.check_service(name),
        _ => principal.check_view(name),
    }
}

fn profile_subject(subject: Option<&v1::compute_profile_request::Subject>) -> Result<SubjectRef> {
    use v1::compute_profile_request::Subject as S;
    match subject {
        Some(S::View(v)) => SubjectRef::from_wire(Some(v), None),
        Some(S::Service(s)) => SubjectRef::from_wire(None, Some(s)),
        None => SubjectRef::from_wire(None, None),
    }
}

fn drift_subject(subject: Option<&v1::compute_drift_request::Subject>) -> Result<SubjectRef> {
    use v1::compute_drift_request::Subject as S;
    match subject {
        Some(S::View(v)) => SubjectRef::from_wire(Some(v), None),
        Some(S::Service(s)) => SubjectRef::from_wire(None, Some(s)),
        None => SubjectRef::from_wire(None, None),
    }
}

fn source(field: &str, source: Option<&v1::ProfileSource>) -> Result<ProfileSource> {
    use v1::profile_source::Source;
    match source.and_then(|s| s.source.as_ref()) {
        Some(Source::ProfileId(id)) => Ok(ProfileSource::Stored(*id)),
        Some(Source::Window(w)) if w.start_micros < w.end_micros => Ok(ProfileSource::Window {
            start: w.start_micros,
            end: w.end_micros,
        }),
        Some(Source::Window(_)) => Err(Error::invalid(
            field,
            "the window is empty; give `start_micros` < `end_micros`",
        )),
        None => Err(Error::invalid(
            field,
            "give a stored `profile_id` or a `window` of the data",
        )),
    }
}

fn check(principal: &Principal, subject: &SubjectRef) -> Result<()> {
    check_subject(principal, subject.kind(), subject.name())
}

#[tonic::async_trait]
impl v1::monitoring_service_server::MonitoringService for MonitoringService {
    async fn compute_profile(
        &self,
        request: Request<v1::ComputeProfileRequest>,
    ) -> Result<Response<v1::ComputeProfileResponse>, Status> {
        let principal = principal(&request)?;
        let wire = request.get_ref();
        let subject = profile_subject(wire.subject.as_ref())?;
        check(principal, &subject)?;
        let profile = self
            .monitor
            .profile_window(&subject, wire.start_micros, wire.end_micros)
            .await;
        let objects = format!("{}:{}", subject.kind(), subject.name());
        let profile = audited(principal, "ComputeProfile", &objects, profile)?;
        Ok(Response::new(v1::ComputeProfileResponse {
            profile: Some(wire::profile(&profile)),
        }))
    }

    async fn get_profile(
        &self,
        request: Request<v1::GetProfileRequest>,
    ) -> Result<Response<v1::GetProfileResponse>, Status> {
        let principal = principal(&request)?;
        let profile = self.monitor.get(request.get_ref().id).await?;
        check_subject(principal, &profile.subject.kind, &profile.subject.name)?;
        Ok(Response::new(v1::GetProfileResponse {
            profile: Some(wire::profile(&profile)),
        }))
    }

    async fn list_profiles(
        &self,
        request: Request<v1::ListProfilesRequest>,
    ) -> Result<Response<v1::ListProfilesResponse>, Status> {
        let principal = principal(&request)?;
        let wire = request.get_ref();
        let limit = match wire.limit {
            0 => DEFAULT_LIST,
            n => n as usize,
        };
        let profiles = self.monitor.list(wire.name.clone(), limit).await?;
        let profiles = profiles
            .iter()
            .filter(|p| check_subject(principal, &p.subject.kind, &p.subject.name).is_ok())
            .map(wire::profile)
            .collect();
        Ok(Response::new(v1::ListProfilesResponse { profiles }))
    }

    async fn compute_drift(
        &self,
        request: Request<v1::ComputeDriftRequest>,
    ) -> Result<Response<v1::ComputeDriftResponse>, Status> {
        let principal = principal(&request)?;
        let wire = request.get_ref();
        let subject = drift_subject(wire.subject.as_ref())?;
        check(principal, &subject)?;
        let reference = source("reference", wire.reference.as_ref())?;
        let current = source("current", wire.current.as_ref())?;
        let result = self.monitor.drift(&subject, reference, current).await;
        let objects = format!("{}:{}", subject.kind(), subject.name());
        let (reference, current, report) = audited(principal, "ComputeDrift", &objects, result)?;
        Ok(Response::new(wire::drift(&reference, &current, &report)))
    }

    async fn compute_skew(
        &self,
        request: Request<v1::ComputeSkewRequest>,
    ) -> Result<Response<v1::ComputeSkewResponse>, Status> {
        let principal = principal(&request)?;
        let wire = request.get_ref();
        principal.check_service(&wire.feature_service)?;
        let skew = SkewRequest::new(
            wire.feature_service.clone(),
            (wire.start_micros, wire.end_micros),
            wire.sample,
            wire.expected_lag_micros,
            self.monitor.clock().now(),
        )?;
        let report = self
            .served_log
            .skew(
                self.monitor.registry(),
                self.monitor.offline(),
                skew,
                self.max_skew_rows,
            )
            .await;
        let objects = format!("service:{}", wire.feature_service);
        let report = audited(principal, "ComputeSkew", &objects, report)?;
        Ok(Response::new(skew_to_wire(report)))
    }

    type ReadServedLogStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<v1::ReadServedLogResponse, Status>> + Send>,
    >;

    async fn read_served_log(
        &self,
        request: Request<v1::ReadServedLogRequest>,
    ) -> Result<Response<Self::ReadServedLogStream>, Status> {
        let principal = principal(&request)?;
        let wire = request.get_ref();
        principal.check_service(&wire.feature_service)?;
        // Known services only: a name never reaches the file system unchecked.
        self.monitor
            .registry()
            .snapshot()
            .get(
                quiver_core::model::Kind::FeatureService,
                &wire.feature_service,
            )
            .map_err(Error::from)?;
        let chunks = self.served_log.read_ipc(
            wire.feature_service.clone(),
            (wire.start_micros, wire.end_micros),
            wire.version,
        );
        let objects = format!("service:{}", wire.feature_service);
        let chunks = audited(principal, "ReadServedLog", &objects, chunks)?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(chunks).map(|chunk| {
            chunk
                .map(|arrow_ipc| v1::ReadServedLogResponse { arrow_ipc })
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
