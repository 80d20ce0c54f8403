//! What `quiver serve` reports about itself besides metrics: its log on standard error and,
//! in builds with the `otel` cargo feature, a trace span per RPC exported over OTLP/gRPC.

#[cfg(feature = "otel")]
mod otel;

use anyhow::Result;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{ConfigFile, DEFAULT_LOG, LogFormat};

/// Trace export settings of `quiver serve`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TraceArgs {
    /// OTLP/gRPC endpoint to export a span per RPC to (e.g. `http://collector:4317`); a
    /// caller's W3C `traceparent` makes it part of the caller's trace. Needs a `quiver` built
    /// with `--features otel`. Off when not given (a span per call costs throughput).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// Fraction of the traces that start at this server to sample; a caller's sampling
    /// decision is always followed. [default: 1]
    #[arg(long, env = "QUIVER_OTLP_SAMPLE_RATIO", value_name = "FRACTION")]
    pub otlp_sample_ratio: Option<f64>,
}

impl TraceArgs {
    /// The flags over the config file's keys.
    pub(crate) fn or(self, file: &ConfigFile) -> TraceArgs {
        TraceArgs {
            otlp_endpoint: self.otlp_endpoint.or(file.otlp_endpoint.clone()),
            otlp_sample_ratio: self.otlp_sample_ratio.or(file.otlp_sample_ratio),
        }
    }

    fn sample_ratio(&self) -> Result<f64> {
        let ratio = self.otlp_sample_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&ratio) {
            anyhow::bail!("--otlp-sample-ratio {ratio} is not a fraction: give 0 to 1");
        }
        Ok(ratio)
    }
}

/// The installed log and trace pipeline; [`Telemetry::shutdown`] exports what is left.
#[derive(Debug)]
pub(crate) struct Telemetry {
    #[cfg(feature = "otel")]
    traces: Option<otel::Traces>,
}

impl Telemetry {
    /// Whether the server should open a span per RPC (something exports them).
    pub(crate) fn exports_traces(&self) -> bool {
        #[cfg(feature = "otel")]
        return self.traces.is_some();
        #[cfg(not(feature = "otel"))]
        false
    }

    /// Exports the spans still buffered (at the end of `serve`).
    pub(crate) async fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(traces) = self.traces {
            traces.shutdown().await;
        }
    }
}

/// The log layer: `filter` (an `EnvFilter` directive; the default when invalid) in `format`.
fn log_layer(filter: &str, format: LogFormat) -> Box<dyn Layer<Registry> + Send + Sync> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => layer.with_filter(filter).boxed(),
        LogFormat::Json => layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_filter(filter)
            .boxed(),
    }
}

/// Logs only (client commands and the quickstart); a second call keeps the first's setup.
pub(crate) fn init_logs(filter: &str, format: LogFormat) {
    let _ = tracing_subscriber::registry()
        .with(log_layer(filter, format))
        .try_init();
}

/// Logs and, with an OTLP endpoint, trace export; must run inside the Tokio runtime.
pub(crate) fn init(filter: &str, format: LogFormat, trace: &TraceArgs) -> Result<Telemetry> {
    let ratio = trace.sample_ratio()?;
    let Some(endpoint) = trace.otlp_endpoint.as_deref() else {
        init_logs(filter, format);
        return Ok(Telemetry {
            #[cfg(feature = "otel")]
            traces: None,
        });
    };
    #[cfg(feature = "otel")]
    {
        let traces = otel::Traces::new(endpoint, ratio)?;
        let _ = tracing_subscriber::registry()
            .with(vec![log_layer(filter, format), traces.layer()])
            .try_init();
        Ok(Telemetry {
            traces: Some(traces),
        })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = ratio;
        anyhow::bail!(
            "--otlp-endpoint {endpoint}: this quiver was built without trace export; \
             build it with `cargo install --path crates/cli --features otel`"
        )
    }
}
