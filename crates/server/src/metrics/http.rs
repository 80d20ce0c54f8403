//! The operator's HTTP port (`--metrics-addr`): `GET /metrics` (Prometheus text format),
//! `GET /healthz` (the process answers) and `GET /readyz` (registry loaded, store open, not
//! draining). Nothing on it carries data: metric labels are registry names and fixed words.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::error::{Error, Result};

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// The server's lifecycle as the probes report it: starting, ready, then draining.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
}

impl Health {
    pub fn is_ready(&self) -> bool {
        self.state.load(Ordering::Acquire) == READY
    }

    /// Storage is open and the registry loaded: ready (unless already draining).
    pub(crate) fn set_ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Shutdown began: not ready again.
    pub(crate) fn set_draining(&self) {
        self.state.store(DRAINING, Ordering::Release);
    }

    fn describe(&self) -> &'static str {
        match self.state.load(Ordering::Acquire) {
            STARTING => "starting",
            READY => "ready",
            _ => "draining",
        }
    }
}

/// Serves the metrics and probes on `listener` until `shutdown` is cancelled.
pub async fn serve_http(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<()> {
    let probe = Arc::clone(&health);
    let app = axum::Router::new()
        .route("/metrics", get(move || render(Arc::clone(&metrics))))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(move || ready(Arc::clone(&probe))));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "serving metrics and health probes over HTTP");
    }
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
        .map_err(|e| Error::Internal(format!("metrics HTTP server: {e}")))
}

async fn render(metrics: Arc<Metrics>) -> axum::response::Response {
    match crate::run_blocking(move || metrics.render()).await {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::warn!(%error, "cannot render metrics");
            (StatusCode::INTERNAL_SERVER_ERROR, "metrics unavailable\n").into_response()
        }
    }
}

async fn ready(health: Arc<Health>) -> (StatusCode, String) {
    let state = health.describe();
    let code = if health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, format!("{state}\n"))
}
