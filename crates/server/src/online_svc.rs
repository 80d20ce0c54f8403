//! `quiver.v1.OnlineService`: GetOnlineFeatures (statuses per SEMANTICS.md), Push and Echo.
//! Handlers parse the wire request into a domain request, dispatch, and encode the answer.

use std::sync::Arc;

use quiver_core::RegistryState;
use quiver_core::online_store::OnlineStore;
use quiver_core::semantics::FeatureStatus;
use quiver_proto::convert::optional_values_to_column;
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use quiver_proto::selector::online_selector;

use crate::audit::audited;
use crate::auth::principal;
use crate::error::Result;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::online_read::{OnlineRead, Served, ViewRead};
use crate::options::Clock;
use crate::push::{PushBatch, Pushed, Pusher};
use crate::registry::Registry;
use crate::served_log::ServedLog;

/// Largest GetOnlineFeatures request (encoded bytes) answered on the async worker when all of
/// its rows are in memory; larger ones convert and read on the blocking pool.
const INLINE_READ_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct OnlineService {
    registry: Arc<Registry>,
    store: Arc<dyn OnlineStore>,
    pusher: Arc<Pusher>,
    served_log: Arc<ServedLog>,
    clock: Arc<dyn Clock>,
    limits: Arc<Limits>,
    metrics: Arc<Metrics>,
}

impl OnlineService {
    pub(crate) fn new(
        registry: Arc<Registry>,
        store: Arc<dyn OnlineStore>,
        pusher: Arc<Pusher>,
        served_log: Arc<ServedLog>,
        clock: Arc<dyn Clock>,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> Self {
        OnlineService {
            registry,
            store,
            pusher,
            served_log,
            clock,
            limits: Arc::new(limits),
            metrics,
        }
    }

    /// A large read: converted on the blocking pool, read from the store, and answered on
    /// the blocking pool. One registry snapshot serves the whole request: resolution and
    /// reading alike. The served rows are offered to the served-row log.
    async fn get_large(
        &self,
        request: Arc<v1::GetOnlineFeaturesRequest>,
    ) -> Result<v1::GetOnlineFeaturesResponse> {
        let registry = self.registry.snapshot();
        let (snapshot, limits) = (Arc::clone(&registry), Arc::clone(&self.limits));
        let read = crate::run_blocking(move || OnlineRead::from_wire(&request, &snapshot, &limits))
            .await?;
        let now = self.clock.now();
        let views = read.execute(&*self.store, &registry, now).await?;
        let (served_log, call) = (
            Arc::clone(&self.served_log),
            (crate::transport::request_id(), now),
        );
        crate::run_blocking(move || Ok(respond_and_log(&served_log, &registry, read, views, call)))
            .await
    }

    /// A small read is validated here and answered here when its rows are all in memory
    /// (no I/O, little CPU); a large one is converted and read on the blocking pool.
    async fn answer(
        &self,
        request: &Arc<v1::GetOnlineFeaturesRequest>,
    ) -> Result<v1::GetOnlineFeaturesResponse> {
        if prost::Message::encoded_len(&**request) <= INLINE_READ_BYTES {
            return self.get_small(request).await;
        }
        self.get_large(Arc::clone(request)).await
    }

    /// A small read: validated here, answered here when its rows are all in memory, else
    /// read from the store (validated once either way).
    async fn get_small(
        &self,
        request: &v1::GetOnlineFeaturesRequest,
    ) -> Result<v1::GetOnlineFeaturesResponse> {
        let registry = self.registry.snapshot();
        let read = OnlineRead::from_wire(request, &registry, &self.limits)?;
        let now = self.clock.now();
        let request_id = crate::transport::request_id();
        if let Some(views) = read.execute_from_memory(&*self.store, &registry, now)? {
            let call = (request_id, now);
            return Ok(respond_and_log(
                &self.served_log,
                &registry,
                read,
                views,
                call,
            ));
        }
        let views = read.execute(&*self.store, &registry, now).await?;
        let call = (request_id, now);
        Ok(respond_and_log(
            &self.served_log,
            &registry,
            read,
            views,
            call,
        ))
    }
}

/// A token scoped to services/views may read only what its scope names.
fn check_scope(request: &Request<v1::GetOnlineFeaturesRequest>) -> Result<()> {
    let principal = principal(request)?;
    if principal.scope.is_unrestricted() {
        return Ok(());
    }
    principal.check_selector(&online_selector(request.get_ref())?)
}

/// `view:NAME` or `source:NAME`, for the audit log.
fn push_target(request: &v1::PushRequest) -> String {
    match &request.target {
        Some(v1::push_request::Target::FeatureView(name)) => format!("view:{name}"),
        Some(v1::push_request::Target::Source(name)) => format!("source:{name}"),
        None => String::new(),
    }
}

fn status_to_proto(status: FeatureStatus) -> v1::FeatureStatus {
    match status {
        FeatureStatus::Present => v1::FeatureStatus::Present,
        FeatureStatus::NullValue => v1::FeatureStatus::NullValue,
        FeatureStatus::NotFound => v1::FeatureStatus::NotFound,
        FeatureStatus::OutsideMaxAge => v1::FeatureStatus::OutsideMaxAge,
    }
}

/// The response to `read`; the rows the service logs go to the served-row log, moved (not
/// copied) when every row is logged.
fn respond_and_log(
    log: &ServedLog,
    registry: &RegistryState,
    mut read: OnlineRead,
    views: Vec<ViewRead>,
    (request_id, now): (Arc<str>, i64),
) -> v1::GetOnlineFeaturesResponse {
    let Some(sampled) = log.sample(registry, &read) else {
        return response(read, &views, now);
    };
    let keys = std::mem::take(&mut read.keys);
    let positions = read
        .selection
        .views
        .iter()
        .map(|selected| selected.positions.clone())
        .collect();
    let answer = response(read, &views, now);
    log.record(sampled, keys, (views, positions), request_id, now);
    answer
}

/// The wire response of `read`: each feature's typed column and statuses filled in one pass
/// over the rows read, from the stored values (no intermediate values).
fn response(read: OnlineRead, views: &[ViewRead], now: i64) -> v1::GetOnlineFeaturesResponse {
    let mut response = v1::GetOnlineFeaturesResponse {
        served_at_micros: now,
        ..Default::default()
    };
    if let Some(service) = read.selection.service {
        response.feature_service = service.name;
        response.feature_service_version = service.version;
        response.fingerprint = service.fingerprint;
    }
    for (view_index, ((selected, names), view_read)) in read
        .selection
        .views
        .into_iter()
        .zip(read.names)
        .zip(views)
        .enumerate()
    {
        let rows = &view_read.rows;
        for (&position, name) in selected.positions.iter().zip(names) {
            let Some(feature) = selected.view.features.get(position) else {
                continue;
            };
            let values = rows.iter().map(|row| row.value(position).0);
            response.features.push(v1::FeatureColumn {
                name,
                view_index: view_index as u32,
                values: Some(optional_values_to_column(values, feature.value_type)),
                statuses: rows
                    .iter()
                    .map(|row| status_to_proto(row.value(position).1) as i32)
                    .collect(),
            });
        }
        response.views.push(v1::ServedView {
            name: selected.view.name,
            version: selected.view.version,
            fingerprint: selected.view.fingerprint,
            event_timestamps: rows.iter().map(Served::event_ts).collect(),
            found: rows.iter().map(Served::found).collect(),
        });
    }
    response
}

fn pushed_to_proto(n_rows: u64, pushed: Vec<Pushed>) -> v1::PushResponse {
    v1::PushResponse {
        rows: n_rows,
        views: pushed
            .into_iter()
            .map(|p| v1::PushedView {
                view: p.view,
                version: p.version,
                written_online: p.written_online,
                skipped_older: p.skipped_older,
                written_offline: p.written_offline,
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl v1::online_service_server::OnlineService for OnlineService {
    async fn get_online_features(
        &self,
        request: Request<v1::GetOnlineFeaturesRequest>,
    ) -> Result<Response<v1::GetOnlineFeaturesResponse>, Status> {
        check_scope(&request)?;
        let request = Arc::new(request.into_inner());
        let response = match self.answer(&request).await {
            // A name or version this replica has not seen may come from an apply on another
            // replica: look at the shared registry now (rate-limited), then answer again.
            Err(error) if self.registry.may_be_elsewhere(&error) => {
                match self.registry.refresh_on_demand().await {
                    Ok(true) => self.answer(&request).await?,
                    Ok(false) => return Err(error.into()),
                    Err(unreachable) => {
                        tracing::warn!(error = %unreachable, "registry store unreachable");
                        return Err(error.into());
                    }
                }
            }
            other => other?,
        };
        self.metrics.record_online_read(&response);
        Ok(Response::new(response))
    }

    /// Validation (a chunk of rows at a time) and the push log run on the blocking pool, then
    /// the online writes.
    async fn push(
        &self,
        request: Request<v1::PushRequest>,
    ) -> Result<Response<v1::PushResponse>, Status> {
        let principal = principal(&request)?.clone();
        let target = push_target(request.get_ref());
        let registry = self.registry.snapshot();
        let (received_at, limits) = (self.clock.now(), Arc::clone(&self.limits));
        let pusher = Arc::clone(&self.pusher);
        let request = request.into_inner();
        let bytes = prost::Message::encoded_len(&request);
        let by = principal.clone();
        let (metrics, warned) = (Arc::clone(&self.metrics), Arc::clone(&self.metrics));
        let result = async move {
            let logging = Arc::clone(&pusher);
            let (batch, logged) = crate::run_blocking(move || {
                let batch = PushBatch::from_wire(request, &registry, received_at, &limits);
                let batch = batch.inspect_err(|e| {
                    if let crate::error::Error::Violation {
                        view,
                        feature,
                        rule,
                        ..
                    } = e
                    {
                        metrics.record_violations(
                            "reject",
                            [(view.as_str(), feature.as_str(), *rule, 1)],
                        );
                    }
                })?;
                batch
                    .view_names()
                    .try_for_each(|view| by.check_view(view))?;
                let logged = logging.log_blocking(&batch)?;
                Ok((Arc::new(batch), logged))
            })
            .await?;
            // In a task of its own, like the blocking part: a call cut short (timeout, client
            // gone, shutdown) still writes online what its push log holds.
            let writing = Arc::clone(&batch);
            let pushed = tokio::spawn(async move { pusher.write_online(writing, logged).await })
                .await
                .map_err(|e| {
                    crate::error::Error::Internal(format!("the online write failed: {e}"))
                })??;
            warned.record_violations(
                "warn",
                batch
                    .violations
                    .iter()
                    .map(|((v, f, r), n)| (v.as_str(), f.as_str(), r.name(), *n)),
            );
            Ok((batch.n_rows, pushed))
        }
        .await;
        let (n_rows, pushed) = audited(&principal, "Push", &target, result)?;
        let response = pushed_to_proto(n_rows, pushed);
        self.metrics.record_push(bytes, &response.views);
        Ok(Response::new(response))
    }

    async fn echo(
        &self,
        request: Request<v1::GetOnlineFeaturesRequest>,
    ) -> Result<Response<v1::GetOnlineFeaturesResponse>, Status> {
        check_scope(&request)?;
        let registry = self.registry.snapshot();
        let read = OnlineRead::from_wire(request.get_ref(), &registry, &self.limits)?;
        let now = self.clock.now();
        let views = read.echo(&*self.store, &registry, now)?;
        Ok(Response::new(response(read, &views, now)))
    }
}
