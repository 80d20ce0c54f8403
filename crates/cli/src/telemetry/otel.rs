//! OpenTelemetry trace export (the `otel` feature): the server's RPC spans (target
//! `quiver::rpc`, see quiver-server's `rpc_span`) and warnings inside them go through
//! `tracing-opentelemetry` to a batch processor and the OTLP/gRPC exporter.
//!
//! The SDK's batch processor exports from its own thread, where the tonic exporter finds no
//! Tokio reactor (it would panic and drop every later span); [`OnRuntime`] runs each export
//! as a task on the server's runtime and waits for it there instead.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::{Layer, Registry};

/// The tracer provider, kept to flush at shutdown.
#[derive(Debug)]
pub(super) struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// A provider exporting to `endpoint`, sampling `ratio` of the traces that start here;
    /// also makes W3C trace context the propagator the server reads `traceparent` with.
    pub(super) fn new(endpoint: &str, ratio: f64) -> Result<Traces> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("--otlp-endpoint {endpoint}"))?;
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: tokio::runtime::Handle::try_current()
                .context("trace export needs the Tokio runtime")?,
        };
        let mut resource = Resource::builder()
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name("quiver");
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        Ok(Traces { provider })
    }

    /// The layer turning RPC spans (and warnings or errors inside them) into OTel spans.
    pub(super) fn layer(&self) -> Box<dyn Layer<Registry> + Send + Sync> {
        let filter = Targets::new()
            .with_target("quiver::rpc", LevelFilter::INFO)
            .with_default(LevelFilter::WARN);
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("quiver"))
            .with_filter(filter)
            .boxed()
    }

    /// Exports what is buffered and stops (off the async workers: it blocks).
    pub(super) async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("trace export at shutdown: {e}"),
            Err(e) => tracing::warn!("trace export at shutdown: {e}"),
        }
    }
}

/// An exporter whose exports run as tasks on `runtime` (see the module docs).
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let inner = Arc::clone(&self.inner);
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        task.await
            .map_err(|e| OTelSdkError::InternalFailure(format!("span export task: {e}")))?
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Called once while the provider is built, before any export shares `inner`.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}
