//! Prometheus metrics (the `prometheus` crate: its atomics, its exposition, its process
//! collector) and the HTTP endpoint that serves them with the health probes.
//!
//! Recording on a request path touches no lock shared between requests: the labelled
//! children a thread uses are resolved once and kept in that thread's cache (`local.rs`), so
//! a record is a hash lookup in thread-local memory and atomic adds. Label values are bounded:
//! gRPC method names from a fixed table (anything else is `unknown`), code names, registry
//! names (views) and fixed words; never an entity key or a value.
//!
//! Figures that are cheaper to read than to keep up to date (freshness, RocksDB, registry
//! version, readiness) are computed at scrape time by `collector::StateCollector`.

mod collector;
mod http;
mod local;
pub(crate) mod rpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use quiver_proto::v1;

use crate::error::{Error, Result};

pub(crate) use collector::StateCollector;
pub use http::{Health, serve_http};
use local::{RpcHandles, ViewHandles};

/// Latency buckets (seconds) for RPCs: from 50 µs (a cached read on loopback) to 60 s.
const RPC_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets (seconds) for materialization runs and exports: 10 ms to an hour.
const JOB_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Distinguishes the thread-local caches of several servers in one process (tests).
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Every metric the server records, registered in its own registry.
#[derive(Debug)]
pub struct Metrics {
    id: u64,
    registry: Registry,
    methods: rpc::MethodTable,
    rpc_requests: IntCounterVec,
    rpc_duration: HistogramVec,
    online_entities: IntCounterVec,
    online_values: IntCounterVec,
    push_rows: IntCounterVec,
    push_skipped_older: IntCounterVec,
    violations: IntCounterVec,
    materialization_violations: IntCounterVec,
    push_bytes: IntCounter,
    materialization_runs: IntCounterVec,
    materialization_rows: IntCounterVec,
    materialization_duration: HistogramVec,
    materialization_last_success: GaugeVec,
    export_rows: IntCounterVec,
    export_duration: HistogramVec,
}

/// How a materialization of one view ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// [`Outcome`] label values.
const OUTCOMES: [&str; 3] = ["succeeded", "failed", "cancelled"];

/// Where an export's rows went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sink {
    /// A Parquet file under the export directory (ExportTrainingData).
    File,
    /// An Arrow Flight stream (DoGet).
    Flight,
}

/// Status label values, indexed by `v1::FeatureStatus as usize - 1`.
const STATUSES: [&str; 4] = ["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"];

impl Metrics {
    /// All metrics, registered; with the process collector (CPU, RSS, open files) on Linux.
    pub fn new() -> Result<Metrics> {
        let registry = Registry::new();
        let rpc = ["service", "method", "code"];
        let metrics = Metrics {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            methods: rpc::MethodTable::new()?,
            rpc_requests: counter(
                &registry,
                "quiver_rpc_requests_total",
                "RPCs finished, by method and gRPC status code (CANCELLED when the client went away).",
                &rpc,
            )?,
            rpc_duration: histogram(
                &registry,
                "quiver_rpc_duration_seconds",
                "RPC latency from request to the end of the response (streams included).",
                &rpc,
                RPC_BUCKETS,
            )?,
            online_entities: counter(
                &registry,
                "quiver_online_entities_total",
                "Entity rows read online, per view.",
                &["view"],
            )?,
            online_values: counter(
                &registry,
                "quiver_online_values_total",
                "Feature values served online, per view and status.",
                &["view", "status"],
            )?,
            push_rows: counter(
                &registry,
                "quiver_push_rows_total",
                "Pushed rows written, per view and store (online, offline).",
                &["view", "store"],
            )?,
            // Exposed by the state collector, which creates each declared rule's series (in
            // the same scrape: a family gathered on its own could come before the collector).
            materialization_violations: IntCounterVec::new(
                Opts::new(
                    "quiver_materialization_violations_total",
                    "Values scanned by materialization runs that broke a feature expectation, per view, feature and rule (each declared rule of an online view exists from 0).",
                ),
                &["view", "feature", "rule"],
            )
            .map_err(internal)?,
            push_skipped_older: counter(
                &registry,
                "quiver_push_skipped_older_rows_total",
                "Pushed rows not written online because a newer row was stored, per view.",
                &["view"],
            )?,
            // Exposed by the state collector, which creates each declared rule's series.
            violations: IntCounterVec::new(
                Opts::new(
                    "quiver_validation_violations_total",
                    "Pushed values that broke a feature expectation, per view, feature, rule and policy (warn: written anyway; reject: the push was refused).",
                ),
                &["view", "feature", "rule", "policy"],
            )
            .map_err(internal)?,
            push_bytes: {
                let bytes = IntCounter::new(
                    "quiver_push_bytes_total",
                    "Encoded bytes of accepted push requests.",
                )
                .map_err(internal)?;
                registry
                    .register(Box::new(bytes.clone()))
                    .map_err(internal)?;
                bytes
            },
            // Exposed by the state collector, which first creates every view's outcomes.
            materialization_runs: IntCounterVec::new(
                Opts::new(
                    "quiver_materialization_runs_total",
                    "Materializations of one view, by outcome (succeeded, failed, cancelled).",
                ),
                &["view", "outcome"],
            )
            .map_err(internal)?,
            materialization_rows: counter(
                &registry,
                "quiver_materialization_rows_total",
                "Rows written online by materialization, per view.",
                &["view"],
            )?,
            materialization_duration: histogram(
                &registry,
                "quiver_materialization_duration_seconds",
                "Duration of one view's materialization.",
                &["view"],
                JOB_BUCKETS,
            )?,
            materialization_last_success: {
                let gauge = GaugeVec::new(
                    Opts::new(
                        "quiver_materialization_last_success_timestamp_seconds",
                        "When the view's last successful materialization ended (Unix seconds).",
                    ),
                    &["view"],
                )
                .map_err(internal)?;
                registry
                    .register(Box::new(gauge.clone()))
                    .map_err(internal)?;
                gauge
            },
            export_rows: counter(
                &registry,
                "quiver_export_rows_total",
                "Rows exported, per sink (file, flight).",
                &["sink"],
            )?,
            export_duration: histogram(
                &registry,
                "quiver_export_duration_seconds",
                "Export duration to the last row, per sink.",
                &["sink"],
                JOB_BUCKETS,
            )?,
            registry,
        };
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .map_err(internal)?;
        Ok(metrics)
    }

    /// Registers the scrape-time figures of a running server.
    pub(crate) fn register_state(&self, state: StateCollector) -> Result<()> {
        self.registry.register(Box::new(state)).map_err(internal)
    }

    /// Registers families kept up to date elsewhere (the scheduled drift checks').
    pub(crate) fn register(
        &self,
        collectors: Vec<Box<dyn prometheus::core::Collector>>,
    ) -> Result<()> {
        for collector in collectors {
            self.registry.register(collector).map_err(internal)?;
        }
        Ok(())
    }

    /// The materialization run counter, for the state collector to create every view's
    /// series and expose it (it is not in the registry otherwise).
    pub(crate) fn materialization_runs(&self) -> IntCounterVec {
        self.materialization_runs.clone()
    }

    /// The exposition in Prometheus text format (runs the collectors: may read the store).
    pub fn render(&self) -> Result<String> {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .map_err(internal)
    }

    /// Counts one finished RPC.
    pub(crate) fn record_rpc(&self, method: u16, code: tonic::Code, elapsed: Duration) {
        local::with_rpc(
            self.id,
            method,
            code,
            |key| self.rpc_handles(key),
            |handles| {
                handles.requests.inc();
                handles.duration.observe(elapsed.as_secs_f64());
            },
        );
    }

    fn rpc_handles(&self, (method, code): (u16, tonic::Code)) -> RpcHandles {
        let (service, name) = self.methods.name(method);
        let labels = [service, name, rpc::code_name(code)];
        RpcHandles {
            requests: self.rpc_requests.with_label_values(&labels),
            duration: self.rpc_duration.with_label_values(&labels),
        }
    }

    /// The index of the method at `path` for [`Metrics::record_rpc`].
    pub(crate) fn method_index(&self, path: &str) -> u16 {
        self.methods.index(path)
    }

    /// The `(service, method)` label values of a [`Self::method_index`].
    pub(crate) fn method_name(&self, index: u16) -> (&str, &str) {
        self.methods.name(index)
    }

    /// Counts the entity rows and values (by status) of an answered online read.
    pub(crate) fn record_online_read(&self, response: &v1::GetOnlineFeaturesResponse) {
        let mut counts = vec![[0u64; 4]; response.views.len()];
        for column in &response.features {
            if let Some(view) = counts.get_mut(column.view_index as usize) {
                for status in &column.statuses {
                    // Statuses 1..=4 (the read path never answers UNSPECIFIED).
                    if let Some(n) = view.get_mut((*status as usize).wrapping_sub(1)) {
                        *n += 1;
                    }
                }
            }
        }
        for (view, counts) in response.views.iter().zip(counts) {
            local::with_view(
                self.id,
                &view.name,
                |name| self.view_handles(name),
                |handles| {
                    handles.entities.inc_by(view.found.len() as u64);
                    for (counter, n) in handles.values.iter().zip(counts) {
                        if n > 0 {
                            counter.inc_by(n);
                        }
                    }
                },
            );
        }
    }

    fn view_handles(&self, view: &str) -> ViewHandles {
        ViewHandles {
            entities: self.online_entities.with_label_values(&[view]),
            values: STATUSES.map(|status| self.online_values.with_label_values(&[view, status])),
            pushed_online: self.push_rows.with_label_values(&[view, "online"]),
            pushed_offline: self.push_rows.with_label_values(&[view, "offline"]),
            skipped_older: self.push_skipped_older.with_label_values(&[view]),
        }
    }

    /// Counts an accepted push: its bytes and, per view, rows written and skipped.
    pub(crate) fn record_push(&self, bytes: usize, views: &[v1::PushedView]) {
        self.push_bytes.inc_by(bytes as u64);
        for view in views {
            local::with_view(
                self.id,
                &view.view,
                |name| self.view_handles(name),
                |handles| {
                    handles.pushed_online.inc_by(view.written_online);
                    handles.pushed_offline.inc_by(view.written_offline);
                    handles.skipped_older.inc_by(view.skipped_older);
                },
            );
        }
    }

    /// The violation counter, for the state collector to create each declared rule's series
    /// at 0 (a series born at 1 shows no `increase()`).
    pub(crate) fn violations(&self) -> IntCounterVec {
        self.violations.clone()
    }

    /// `quiver_materialization_violations_total`, for the state collector to expose and to
    /// create each declared rule's series of an online view at 0.
    pub(crate) fn materialization_violations(&self) -> IntCounterVec {
        self.materialization_violations.clone()
    }

    /// Counts broken expectations: each of `violations` (view, feature, rule) under `policy`.
    pub(crate) fn record_violations<'a>(
        &self,
        policy: &str,
        violations: impl IntoIterator<Item = (&'a str, &'a str, &'a str, u64)>,
    ) {
        for (view, feature, rule, n) in violations {
            self.violations
                .with_label_values(&[view, feature, rule, policy])
                .inc_by(n);
        }
    }

    /// Counts the violations (feature, rule, count) among the rows a run of `view` scanned.
    pub(crate) fn record_materialization_violations(
        &self,
        view: &str,
        violations: &[(String, String, u64)],
    ) {
        for (feature, rule, n) in violations {
            self.materialization_violations
                .with_label_values(&[view, feature.as_str(), rule.as_str()])
                .inc_by(*n);
        }
    }

    /// Counts one view's materialization; a success also sets its last success time.
    pub(crate) fn record_materialization(
        &self,
        view: &str,
        outcome: Outcome,
        rows: u64,
        elapsed: Duration,
        ended_at_micros: i64,
    ) {
        let outcome_name = OUTCOMES[match outcome {
            Outcome::Succeeded => 0,
            Outcome::Failed => 1,
            Outcome::Cancelled => 2,
        }];
        self.materialization_runs
            .with_label_values(&[view, outcome_name])
            .inc();
        self.materialization_rows
            .with_label_values(&[view])
            .inc_by(rows);
        self.materialization_duration
            .with_label_values(&[view])
            .observe(elapsed.as_secs_f64());
        if outcome == Outcome::Succeeded {
            self.materialization_last_success
                .with_label_values(&[view])
                .set(ended_at_micros as f64 / 1e6);
        }
    }

    /// Counts a finished export.
    pub(crate) fn record_export(&self, sink: Sink, rows: u64, elapsed: Duration) {
        let sink = match sink {
            Sink::File => "file",
            Sink::Flight => "flight",
        };
        self.export_rows.with_label_values(&[sink]).inc_by(rows);
        self.export_duration
            .with_label_values(&[sink])
            .observe(elapsed.as_secs_f64());
    }
}

/// Counts the rows of a streamed export and records it when dropped (at the end of the
/// stream, or when the client goes away).
#[derive(Debug)]
pub(crate) struct ExportRecorder {
    metrics: Arc<Metrics>,
    sink: Sink,
    rows: u64,
    started: std::time::Instant,
}

impl ExportRecorder {
    pub(crate) fn new(metrics: Arc<Metrics>, sink: Sink) -> Self {
        ExportRecorder {
            metrics,
            sink,
            rows: 0,
            started: std::time::Instant::now(),
        }
    }

    pub(crate) fn add_rows(&mut self, rows: usize) {
        self.rows += rows as u64;
    }
}

impl Drop for ExportRecorder {
    fn drop(&mut self) {
        self.metrics
            .record_export(self.sink, self.rows, self.started.elapsed());
    }
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec> {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).map_err(internal)?;
    registry
        .register(Box::new(counter.clone()))
        .map_err(internal)?;
    Ok(counter)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> Result<HistogramVec> {
    let opts = HistogramOpts::new(name, help).buckets(buckets.to_vec());
    let histogram = HistogramVec::new(opts, labels).map_err(internal)?;
    registry
        .register(Box::new(histogram.clone()))
        .map_err(internal)?;
    Ok(histogram)
}

pub(crate) fn internal(error: prometheus::Error) -> Error {
    Error::Internal(format!("metrics: {error}"))
}
