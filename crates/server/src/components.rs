//! The server's parts, built once at start: each owns what it needs, and each service gets
//! only the parts it uses.

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use quiver_core::online_store::OnlineStore;
use quiver_core::registry_store::RegistryStore;
use quiver_offline::{OfflineStore, ParquetSchemaCheck};
use quiver_online::RocksStore;
use quiver_proto::v1;
use tokio_util::sync::CancellationToken;

use crate::auth::Authenticator;
use crate::backup::Backups;
use crate::error::{Error, Result};
use crate::limits::as_usize;
use crate::metrics::{Health, Metrics, StateCollector};
use crate::options::ServerOptions;
use crate::transport::Router;
use crate::{
    admin_svc, export, flight, jobs, jobs_svc, monitor, monitoring_svc, offline_svc, online_svc,
    push, registry, registry_svc, served_log, uploads,
};

/// The server's parts, each owning what it needs; services get the parts they use.
#[derive(Debug)]
pub(crate) struct Components {
    pub(crate) store: Arc<RocksStore>,
    /// Online rows: `store` itself, or a shared store (`--online-store`).
    pub(crate) online: Arc<dyn OnlineStore>,
    pub(crate) registry: Arc<registry::Registry>,
    pusher: Arc<push::Pusher>,
    exporter: Arc<export::Exporter>,
    pub(crate) materializer: Arc<jobs::Materializer>,
    backups: Arc<Backups>,
    monitor: Arc<monitor::Monitor>,
    pub(crate) drift_checks: Arc<monitor::DriftChecks>,
    pub(crate) served_log: Arc<served_log::ServedLog>,
    pub(crate) skew_checks: Arc<served_log::SkewChecks>,
    pub(crate) offline: Arc<OfflineStore>,
    metrics: Arc<Metrics>,
}

impl Components {
    /// Opens storage under the data directory and builds every part on it. `jobs_shutdown`
    /// cancels running materialization jobs.
    pub(crate) fn open(
        options: &ServerOptions,
        metrics: Arc<Metrics>,
        jobs_shutdown: CancellationToken,
    ) -> Result<Components> {
        std::fs::create_dir_all(&options.data_dir).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot create data dir {}: {e}",
                options.data_dir.display()
            ))
        })?;
        let roots = options.files.open()?;
        let store = Arc::new(RocksStore::open_with(
            &options.data_dir.join("rocksdb"),
            options.online_caches,
        )?);
        let online = open_online_store(options.online_store.as_deref(), &store)?;
        let mut offline = OfflineStore::new(&options.data_dir, roots.sources.clone(), roots.labels)
            .with_memory_limit(
                crate::limits::as_usize(options.limits.offline_memory_limit),
                "--offline-memory-limit",
            )
            .with_spill_limit(options.limits.max_spill_bytes, "--max-spill-bytes");
        if let Some(location) = &options.push_log_dir {
            // Pushes logged before the log was shared would be read by no join any more.
            let local = offline.committed_push_log()?;
            if !local.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "{} holds {} push-log file(s) written without --push-log-dir, which joins on the shared push log would not read: copy them to {location} under the same relative paths (<view>[@<generation>]/<file>), then remove them, or start without --push-log-dir",
                    options.data_dir.join("offline").display(),
                    local.len()
                )));
            }
            let stores =
                quiver_offline::ObjectStores::new(options.files.object_store_options.clone());
            offline = offline.with_shared_push_log(location, &options.replica.id, &stores)?;
        }
        let offline = Arc::new(offline);
        // Nothing is being written yet: what a crashed append left behind can go.
        offline.remove_interrupted_appends()?;
        offline.resume_push_names()?;
        let registry_store: Arc<dyn RegistryStore> = match &options.registry_store {
            None => Arc::clone(&store) as Arc<dyn RegistryStore>,
            Some(url) => {
                let stores =
                    quiver_offline::ObjectStores::new(options.files.object_store_options.clone());
                Arc::new(quiver_offline::ObjectRegistry::open(url, &stores)?)
            }
        };
        // On the blocking pool (see `serve_with`): waiting holds no async worker.
        let registry = Arc::new(crate::wait(registry::Registry::open(
            registry_store,
            ParquetSchemaCheck::new(roots.sources),
            options.registry_store.is_some(),
        ))??);
        tracing::info!(
            registry_version = registry.snapshot().version,
            data_dir = %options.data_dir.display(),
            "storage opened"
        );
        let backups = Arc::new(Backups::open(
            &options.data_dir,
            Arc::clone(&store),
            Arc::clone(&offline),
            Arc::clone(&registry),
            Arc::clone(&options.clock),
        )?);
        let monitor = Arc::new(monitor::Monitor::open(
            Arc::clone(&registry),
            Arc::clone(&offline),
            Arc::clone(&store),
            Arc::clone(&options.clock),
        )?);
        let drift_checks = Arc::new(monitor::DriftChecks::new(
            Arc::clone(&monitor),
            monitor::CheckLeases::new(
                Arc::clone(&online),
                options.replica.id.clone(),
                options.replica.lease_ttl,
            ),
            options.alert_webhook.clone(),
            options
                .profile_retention
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
        )?);
        metrics.register(drift_checks.collectors())?;
        let served_log = Arc::new(served_log::ServedLog::open(
            &options.data_dir,
            &options.served_log,
            Arc::clone(&registry),
            Arc::clone(&options.clock),
        )?);
        metrics.register(served_log.collectors(Arc::clone(&registry)))?;
        let skew_checks = Arc::new(served_log::SkewChecks::new(
            Arc::clone(&served_log),
            Arc::clone(&registry),
            Arc::clone(&offline),
            Arc::clone(&options.clock),
            options.limits.max_skew_rows,
        )?);
        metrics.register(skew_checks.collectors())?;
        let mut uploads = uploads::Uploads::new(&options.limits);
        if let Some(location) = &options.upload_dir {
            let stores =
                quiver_offline::ObjectStores::new(options.files.object_store_options.clone());
            uploads = uploads.with_shared(quiver_offline::SharedUploads::open(location, &stores)?);
        }
        Ok(Components {
            offline: Arc::clone(&offline),
            served_log: Arc::clone(&served_log),
            skew_checks,
            backups,
            drift_checks,
            monitor: Arc::clone(&monitor),
            pusher: Arc::new(push::Pusher::new(Arc::clone(&online), Arc::clone(&offline))),
            exporter: Arc::new(export::Exporter::new(
                Arc::clone(&registry),
                Arc::clone(&offline),
                Arc::new(uploads),
                roots.exports,
                Arc::clone(&metrics),
                Arc::clone(&monitor),
                (Arc::clone(&served_log), options.limits.max_log_export_rows),
            )),
            materializer: Arc::new(jobs::Materializer::new(
                options.run_profiles.then_some(Arc::clone(&monitor)),
                (monitor, Arc::clone(&online), options.replica.clone()),
                jobs_shutdown,
                options.limits.max_concurrent_jobs,
                Arc::clone(&metrics),
            )),
            registry,
            store,
            online,
            metrics,
        })
    }

    /// The scrape-time metrics of these parts (freshness, registry, store) and `health`.
    pub(crate) fn state_collector(
        &self,
        options: &ServerOptions,
        health: Arc<Health>,
    ) -> Result<StateCollector> {
        StateCollector::new(
            Arc::clone(&self.registry),
            (
                Arc::clone(&self.store),
                Arc::clone(&self.online),
                Arc::clone(&self.offline),
            ),
            Arc::clone(&options.clock),
            health,
            self.metrics.materialization_runs(),
            self.metrics.violations(),
            self.metrics.materialization_violations(),
        )
    }

    /// Adds every Quiver service (and Flight) to `router`.
    pub(crate) fn router(
        &self,
        router: Router,
        options: &ServerOptions,
        auth: Option<Arc<Authenticator>>,
    ) -> Router {
        let data = as_usize(options.limits.max_message_bytes);
        let control = as_usize(options.limits.max_control_message_bytes);
        router
            .add_service(
                v1::registry_service_server::RegistryServiceServer::new(
                    registry_svc::RegistryService::new(
                        Arc::clone(&self.registry),
                        Arc::clone(&options.clock),
                    ),
                )
                .max_decoding_message_size(control),
            )
            .add_service(
                v1::online_service_server::OnlineServiceServer::new(
                    online_svc::OnlineService::new(
                        Arc::clone(&self.registry),
                        Arc::clone(&self.online),
                        Arc::clone(&self.pusher),
                        Arc::clone(&self.served_log),
                        Arc::clone(&options.clock),
                        options.limits.clone(),
                        Arc::clone(&self.metrics),
                    ),
                )
                .max_decoding_message_size(data)
                .max_encoding_message_size(data),
            )
            .add_service(
                v1::job_service_server::JobServiceServer::new(jobs_svc::JobService::new(
                    Arc::clone(&self.materializer),
                ))
                .max_decoding_message_size(control),
            )
            .add_service(
                v1::offline_service_server::OfflineServiceServer::new(
                    offline_svc::OfflineService::new(Arc::clone(&self.exporter)),
                )
                .max_decoding_message_size(control),
            )
            .add_service(
                v1::admin_service_server::AdminServiceServer::new(admin_svc::AdminService::new(
                    Arc::clone(&self.backups),
                ))
                .max_decoding_message_size(control),
            )
            .add_service(
                v1::monitoring_service_server::MonitoringServiceServer::new(
                    monitoring_svc::MonitoringService::new(
                        Arc::clone(&self.monitor),
                        Arc::clone(&self.served_log),
                        options.limits.max_skew_rows,
                    ),
                )
                .max_decoding_message_size(control)
                .max_encoding_message_size(data),
            )
            .add_service(
                FlightServiceServer::new(flight::FlightExport::new(
                    Arc::clone(&self.exporter),
                    &options.limits,
                    (
                        auth,
                        options.online_store.is_some() || options.registry_store.is_some(),
                    ),
                ))
                .max_decoding_message_size(data)
                .max_encoding_message_size(data),
            )
    }
}

/// The online store `--online-store` names: RocksDB in the data directory (`None` or
/// `rocksdb`), or a Redis Cluster (`redis+cluster://...`).
fn open_online_store(url: Option<&str>, store: &Arc<RocksStore>) -> Result<Arc<dyn OnlineStore>> {
    match url {
        None | Some("rocksdb") => Ok(Arc::clone(store) as Arc<dyn OnlineStore>),
        Some(url) if url.starts_with("redis+cluster://") => {
            let redis = quiver_redis::RedisStore::open(url).map_err(quiver_core::Error::from)?;
            Ok(Arc::new(redis))
        }
        Some(other) => Err(Error::invalid(
            "--online-store",
            format!(
                "`{}` is not a store: use `rocksdb` (the default) or redis+cluster://HOST:PORT[,HOST:PORT]",
                other.split('@').next_back().unwrap_or_default()
            ),
        )),
    }
}
