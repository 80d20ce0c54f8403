//! Quiver's server: the `quiver.v1` gRPC services, Arrow Flight export, materialization jobs,
//! health and reflection, wired onto one listener.
//!
//! Not here: argument parsing, config files, tracing initialisation, signal handling (all in
//! `quiver-cli`). The entry point takes an already bound listener and a shutdown token, so
//! tests run it in-process on `127.0.0.1:0`.
//!
//! Invariants: only this crate knows `tonic::Status` (see [`error::grpc_code`], the one
//! mapping); request paths read definitions from the in-memory registry snapshot
//! ([`registry::Registry::snapshot`]), never from storage.

pub mod admin_svc;
mod audit;
pub mod auth;
pub mod backup;
pub mod bounded;
mod compaction;
mod components;
pub mod error;
pub mod export;
pub mod flight;
mod flight_command;
pub mod jobs;
pub mod jobs_svc;
pub mod limits;
pub mod metrics;
mod monitor;
pub mod monitoring_svc;
pub mod offline_svc;
pub mod online_read;
pub mod online_svc;
pub mod options;
pub mod push;
mod push_rules;
pub mod registry;
pub mod registry_svc;
mod reload;
mod rpc_span;
mod served_log;
pub mod tls;
mod transport;
pub mod uploads;

use std::sync::Arc;

use quiver_proto::v1;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use components::Components;
pub use error::{Error, Result};
pub use metrics::{Health, Metrics};
pub use options::{Clock, FileRoots, Limits, ReplicaOptions, ServerOptions, SystemClock};
pub use served_log::ServedLogOptions;

/// Runs blocking work (RocksDB reads, writes and syncs, file I/O, large conversions) on the
/// blocking pool, never on the async workers.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("blocking task failed: {e}")))?
}

/// Waits for `future` from blocking code (a task of [`run_blocking`], where an async storage
/// call is needed): never from an async worker, which it would hold.
pub(crate) fn wait<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::Internal(format!("no runtime to wait on: {e}")))?;
    Ok(runtime.block_on(future))
}

/// Serves every service on `listener` until `shutdown` is cancelled: see [`serve_with`].
pub async fn serve(
    listener: TcpListener,
    shutdown: CancellationToken,
    options: ServerOptions,
) -> Result<()> {
    serve_with(listener, None, shutdown, options).await
}

/// Serves every service on `listener`, and metrics and health probes over HTTP on
/// `http_listener` (when given), until `shutdown` is cancelled. Then reports NOT_SERVING
/// (health service and `/readyz`), stops accepting, drains in-flight RPCs for at most
/// `options.shutdown_grace`, cancels and awaits background jobs, syncs and closes storage.
///
/// Refuses to start without auth on an address other than loopback, unless
/// `options.auth.insecure_no_auth` says so.
pub async fn serve_with(
    listener: TcpListener,
    http_listener: Option<TcpListener>,
    shutdown: CancellationToken,
    options: ServerOptions,
) -> Result<()> {
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let metrics = Arc::new(Metrics::new()?);
    let health = Arc::new(Health::default());
    // Up first, so that probes answer (not ready) while storage opens.
    let http_stop = CancellationToken::new();
    let http = http_listener.map(|http_listener| {
        tokio::spawn(metrics::serve_http(
            http_listener,
            Arc::clone(&metrics),
            Arc::clone(&health),
            http_stop.clone(),
        ))
    });
    let served = serve_grpc(listener, addr, &shutdown, options, &metrics, &health).await;
    http_stop.cancel();
    if let Some(http) = http {
        match http.await {
            Ok(result) => result?,
            Err(e) => return Err(Error::Internal(format!("metrics HTTP task: {e}"))),
        }
    }
    served
}

/// Opens everything, serves gRPC until `shutdown` and the drain, then closes storage.
async fn serve_grpc(
    listener: TcpListener,
    addr: std::net::SocketAddr,
    shutdown: &CancellationToken,
    options: ServerOptions,
    metrics: &Arc<Metrics>,
    health: &Arc<Health>,
) -> Result<()> {
    // Reading token files and fetching a JWKS URL block: off the async workers.
    let auth = {
        let (auth, shutdown) = (options.auth.clone(), shutdown.clone());
        run_blocking(move || open_auth(&auth, addr, &shutdown)).await?
    };
    let tls = options.tls.as_ref().map(tls::TlsConfig::open).transpose()?;
    // Storage opens on the blocking pool: RocksDB reads its files, a shared registry store
    // is contacted over the network.
    let components = {
        let (opening, metrics, jobs) =
            (options.clone(), Arc::clone(metrics), shutdown.child_token());
        run_blocking(move || Components::open(&opening, metrics, jobs)).await?
    };
    if options.registry_store.is_some() {
        // A shared registry: other replicas apply; an unreachable store keeps the version held.
        let registry = Arc::clone(&components.registry);
        let interval = options.registry_poll_interval;
        reload::spawn_reloader(
            "registry version",
            interval,
            shutdown.child_token(),
            move || wait(registry.refresh())?,
        );
    }
    metrics.register_state(components.state_collector(&options, Arc::clone(health))?)?;
    let (router, reporter) =
        health_and_reflection(&options.limits, auth.clone(), metrics, options.rpc_spans).await?;
    let router = components.router(router, &options, auth);
    health.set_ready();
    let _checks = components
        .drift_checks
        .spawn(options.monitoring_interval, shutdown.child_token());
    let _skew_checks = components
        .skew_checks
        .spawn(options.monitoring_interval, shutdown.child_token());
    let compaction_metrics = compaction::CompactionMetrics::new()?;
    metrics.register(compaction_metrics.collectors())?;
    let _compaction = options.push_log_compaction.map(|interval| {
        compaction::spawn(
            Arc::clone(&components.offline),
            compaction_metrics,
            interval,
            shutdown.child_token(),
        )
    });
    tracing::info!(%addr, tls = tls.is_some(), "serving gRPC and Arrow Flight");
    let (token, draining) = (shutdown.clone(), Arc::clone(health));
    let stopped = async move {
        token.cancelled().await;
        draining.set_draining();
        set_all_serving(&reporter, false).await;
        tracing::info!("draining: not accepting new connections, finishing calls in flight");
    };
    let serving = async move {
        match tls {
            Some(config) => {
                let reloaded = Arc::clone(&config);
                reload::spawn_reloader(
                    "TLS certificate",
                    reload::RELOAD_INTERVAL,
                    shutdown.clone(),
                    move || reloaded.reload_if_changed(),
                );
                let incoming = tls::incoming(listener, config, shutdown.clone());
                router.serve_with_incoming_shutdown(incoming, stopped).await
            }
            None => {
                router
                    .serve_with_incoming_shutdown(incoming(listener), stopped)
                    .await
            }
        }
    };
    let grace = options.shutdown_grace;
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = serving => served.map_err(|e| Error::Internal(format!("gRPC server: {e}")))?,
        () = deadline => tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "the drain deadline passed (--shutdown-grace): calls still running were cut"
        ),
    }
    tracing::info!("stopped serving; waiting for background jobs");
    components.materializer.shutdown().await;
    let served_log = Arc::clone(&components.served_log);
    run_blocking(move || {
        served_log.shutdown();
        Ok(())
    })
    .await?;
    components.online.sync().await?;
    components.store.sync()?;
    tracing::info!("storage synced; bye");
    Ok(())
}

/// The authenticator (reloaded in the background until `shutdown`), or none when auth is off,
/// which only a loopback address or an explicit `insecure_no_auth` allows.
fn open_auth(
    options: &auth::AuthOptions,
    addr: std::net::SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Option<Arc<auth::Authenticator>>> {
    let Some(authenticator) = auth::Authenticator::open(options)? else {
        if addr.ip().is_loopback() {
            tracing::info!("auth is off: serving on loopback only");
        } else if options.insecure_no_auth {
            tracing::warn!(%addr, "auth is OFF on a non-loopback address (--insecure-no-auth): anyone who reaches the port can read, write and apply");
        } else {
            return Err(Error::FailedPrecondition(format!(
                "refusing to serve {addr} without authentication: give --auth-file (or JWT \
                 settings), bind a loopback address, or pass --insecure-no-auth"
            )));
        }
        return Ok(None);
    };
    let reloaded = Arc::clone(&authenticator);
    reload::spawn_reloader(
        "auth tokens",
        reload::RELOAD_INTERVAL,
        shutdown.clone(),
        move || reloaded.reload_if_changed(),
    );
    Ok(Some(authenticator))
}

/// The health service's names: the server as a whole (`""`) and each Quiver service.
fn health_names() -> [&'static str; 7] {
    use tonic::server::NamedService;
    [
        "",
        <v1::registry_service_server::RegistryServiceServer<registry_svc::RegistryService>>::NAME,
        <v1::online_service_server::OnlineServiceServer<online_svc::OnlineService>>::NAME,
        <v1::offline_service_server::OfflineServiceServer<offline_svc::OfflineService>>::NAME,
        <v1::job_service_server::JobServiceServer<jobs_svc::JobService>>::NAME,
        <v1::admin_service_server::AdminServiceServer<admin_svc::AdminService>>::NAME,
        <v1::monitoring_service_server::MonitoringServiceServer<
            monitoring_svc::MonitoringService,
        >>::NAME,
    ]
}

/// Reports every name of [`health_names`] SERVING or NOT_SERVING.
async fn set_all_serving(reporter: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        tonic_health::ServingStatus::Serving
    } else {
        tonic_health::ServingStatus::NotServing
    };
    for name in health_names() {
        reporter.set_service_status(name, status).await;
    }
}

/// A router with `grpc.health.v1` (every Quiver service SERVING; the reporter turns them
/// NOT_SERVING at the drain) and reflection over Quiver's API, on a server with RPC metrics,
/// the transport's limits (HTTP/2 streams per connection, the request timeout and the status
/// rules of [`transport`]) and the auth layer in front of every service; the services
/// themselves are added by [`Components`].
async fn health_and_reflection(
    limits: &Limits,
    auth: Option<Arc<auth::Authenticator>>,
    metrics: &Arc<Metrics>,
    rpc_spans: bool,
) -> Result<(transport::Router, tonic_health::server::HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    set_all_serving(&reporter, true).await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quiver_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(limits.max_concurrent_streams)
        .layer(metrics::rpc::RpcMetricsLayer {
            metrics: Arc::clone(metrics),
            spans: rpc_spans,
        })
        .layer(transport::TransportLayer {
            timeout: limits.request_timeout,
        })
        .layer(auth::layer::AuthLayer::new(auth))
        .add_service(health)
        .add_service(reflection);
    Ok((router, reporter))
}

/// Accepted connections with TCP_NODELAY. Our own listener, so the builder's tcp_nodelay does
/// not apply: without it, small responses wait for delayed ACKs (~40 ms per request).
fn incoming(
    listener: TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            if let Ok(stream) = &stream
                && let Err(error) = stream.set_nodelay(true)
            {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
            stream
        },
    )
}
