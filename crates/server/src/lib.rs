//! Quiver's server: the `quiver.v1` gRPC services, Arrow Flight export, materialization jobs,
//! health and reflection, wired onto one listener.
//!
//! Not here: argument parsing, config files, tracing initialisation, signal handling (all in
//! `quiver-cli`). The entry point takes an already bound listener and a shutdown token, so
//! tests run it in-process on `127.0.0.1:0`.
//!
//! Invariants: only this crate knows `tonic::Status` (see [`error::grpc_code`], the one
//! mapping); request paths read definitions from the in-memory registry snapshot
//! ([`state::AppState::registry`]), never from storage.

pub mod bounded;
pub mod error;
pub mod export;
pub mod flight;
pub mod jobs;
pub mod jobs_svc;
pub mod offline_svc;
pub mod online_svc;
pub mod push;
pub mod registry_svc;
pub mod selection;
pub mod state;
pub mod uploads;

use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use quiver_proto::v1;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use error::{Error, Result};
pub use state::{AppState, Clock, ServerOptions, SystemClock};

/// Largest gRPC message accepted or sent (pushes and online batches are columnar and large).
const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Serves every service on `listener` until `shutdown` is cancelled, then drains in-flight
/// RPCs, cancels and awaits background jobs, syncs and closes storage.
pub async fn serve(
    listener: TcpListener,
    shutdown: CancellationToken,
    options: ServerOptions,
) -> Result<()> {
    let state = Arc::new(AppState::open(&options, shutdown.child_token())?);
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<v1::registry_service_server::RegistryServiceServer<registry_svc::RegistryService>>().await;
    health_reporter
        .set_serving::<v1::online_service_server::OnlineServiceServer<online_svc::OnlineService>>()
        .await;
    health_reporter.set_serving::<v1::offline_service_server::OfflineServiceServer<offline_svc::OfflineService>>().await;
    health_reporter
        .set_serving::<v1::job_service_server::JobServiceServer<jobs_svc::JobService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(quiver_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Internal(format!("reflection: {e}")))?;

    // Our own listener, so the builder's tcp_nodelay does not apply: set it per connection
    // (without it, small responses wait for delayed ACKs: ~40 ms per request).
    let incoming = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::TcpListenerStream::new(listener),
        |stream| {
            if let Ok(stream) = &stream
                && let Err(error) = stream.set_nodelay(true)
            {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
            stream
        },
    );
    tracing::info!(%addr, "serving gRPC and Arrow Flight");
    let router = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            v1::registry_service_server::RegistryServiceServer::new(
                registry_svc::RegistryService::new(Arc::clone(&state)),
            )
            .max_decoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(
            v1::online_service_server::OnlineServiceServer::new(online_svc::OnlineService::new(
                Arc::clone(&state),
            ))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(v1::job_service_server::JobServiceServer::new(
            jobs_svc::JobService::new(Arc::clone(&state)),
        ))
        .add_service(v1::offline_service_server::OfflineServiceServer::new(
            offline_svc::OfflineService::new(Arc::clone(&state)),
        ))
        .add_service(
            FlightServiceServer::new(flight::FlightExport::new(Arc::clone(&state)))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        );
    let token = shutdown.clone();
    router
        .serve_with_incoming_shutdown(incoming, async move { token.cancelled().await })
        .await
        .map_err(|e| Error::Internal(format!("gRPC server: {e}")))?;
    tracing::info!("stopped accepting; waiting for background jobs");
    state.shutdown.cancel();
    state.tasks.close();
    state.tasks.wait().await;
    state.store.sync()?;
    tracing::info!("storage synced; bye");
    Ok(())
}
