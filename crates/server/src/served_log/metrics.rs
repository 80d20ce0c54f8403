//! The served-row log's metric families. Drops on the request path are counted through a
//! per-thread cache of children (as `metrics::local` does), so counting takes no lock shared
//! between requests.

use std::cell::RefCell;
use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts};

use crate::error::Result;
use crate::metrics::internal;

/// Why a sampled row was not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// The queue to the writer held `--served-log-queue-rows` rows already.
    QueueFull,
    /// Over `--served-log-max-bytes-per-second`.
    RateLimit,
    /// The rows could not be encoded or written (logged as an error).
    Error,
}

impl DropReason {
    fn name(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::RateLimit => "rate_limit",
            DropReason::Error => "error",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LogMetrics {
    id: u64,
    pub(crate) rows: IntCounterVec,
    pub(crate) bytes: IntCounterVec,
    dropped: IntCounterVec,
    pub(crate) queued: IntGauge,
}

thread_local! {
    static DROPS: RefCell<HashMap<(u64, String), IntCounter>> = RefCell::new(HashMap::new());
}

impl LogMetrics {
    pub(crate) fn new() -> Result<LogMetrics> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).map_err(internal)
        };
        Ok(LogMetrics {
            id: rand::random(),
            rows: counter(
                "quiver_served_log_rows_total",
                "Served rows written to the served-row log, per feature service.",
                &["service"],
            )?,
            bytes: counter(
                "quiver_served_log_bytes_total",
                "Bytes of served-row log files rotated (durable), per feature service.",
                &["service"],
            )?,
            dropped: counter(
                "quiver_served_log_dropped_rows_total",
                "Sampled served rows not logged, per feature service and reason: queue_full, rate_limit, error.",
                &["service", "reason"],
            )?,
            queued: IntGauge::new(
                "quiver_served_log_queue_rows",
                "Sampled rows waiting for the served-row log writer.",
            )
            .map_err(internal)?,
        })
    }

    /// One collector for the families; at each scrape it first creates the series of every
    /// logged service at 0 (a series born at 1 shows no `increase()`).
    pub(crate) fn collector(&self, logged: LoggedServices) -> Box<dyn Collector> {
        let families: [Box<dyn Collector>; 4] = [
            Box::new(self.rows.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.dropped.clone()),
            Box::new(self.queued.clone()),
        ];
        let descs = families.iter().flat_map(|f| f.desc()).cloned().collect();
        Box::new(LogCollector {
            metrics: self.clone(),
            families,
            descs,
            logged,
        })
    }

    /// Counts `rows` dropped for `reason`; for queue_full (the request path) through the
    /// thread's cache.
    pub(crate) fn dropped(&self, service: &str, reason: DropReason, rows: usize) {
        if reason != DropReason::QueueFull {
            self.dropped
                .with_label_values(&[service, reason.name()])
                .inc_by(rows as u64);
            return;
        }
        DROPS.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(counter) = cache.get(&(self.id, service.to_string())) {
                counter.inc_by(rows as u64);
                return;
            }
            let counter = self.dropped.with_label_values(&[service, reason.name()]);
            counter.inc_by(rows as u64);
            cache.insert((self.id, service.to_string()), counter);
        });
    }
}

/// The names of the services whose rows are logged now (asked at each scrape).
pub(crate) type LoggedServices = Box<dyn Fn() -> Vec<String> + Send + Sync>;

struct LogCollector {
    metrics: LogMetrics,
    families: [Box<dyn Collector>; 4],
    descs: Vec<Desc>,
    logged: LoggedServices,
}

impl Collector for LogCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for service in (self.logged)() {
            self.metrics.rows.with_label_values(&[&service]);
            self.metrics.bytes.with_label_values(&[&service]);
            for reason in [
                DropReason::QueueFull,
                DropReason::RateLimit,
                DropReason::Error,
            ] {
                self.metrics
                    .dropped
                    .with_label_values(&[service.as_str(), reason.name()]);
            }
        }
        self.families.iter().flat_map(|f| f.collect()).collect()
    }
}
