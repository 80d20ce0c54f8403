//! The push-log compaction task (`quiver_offline::OfflineStore::compact_push_logs`, see
//! `crates/offline/src/compaction.rs`) and its metrics.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Compacts the push logs every `interval` (`quiver_offline::OfflineStore::compact_push_logs`)
/// on the blocking pool until `shutdown`; a failed pass is logged, counted and retried next
/// time.
pub(crate) fn spawn(
    offline: Arc<quiver_offline::OfflineStore>,
    metrics: CompactionMetrics,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    crate::monitor::spawn_ticks(interval, shutdown, move || {
        let (offline, metrics) = (Arc::clone(&offline), metrics.clone());
        async move {
            let policy = quiver_offline::CompactionPolicy::default();
            let pass = crate::run_blocking(move || Ok(offline.compact_push_logs(&policy)?)).await;
            metrics.record(&pass);
            if let Err(error) = pass {
                tracing::warn!(%error, "push-log compaction failed; retrying at the next interval");
            }
        }
    })
}

/// `quiver_push_log_compactions_total{result}` (passes, `ok` or `error`) and
/// `quiver_push_log_merged_files_total` (push-log files merged into larger ones).
#[derive(Debug, Clone)]
pub(crate) struct CompactionMetrics {
    passes: prometheus::IntCounterVec,
    merged: prometheus::IntCounter,
}

impl CompactionMetrics {
    pub(crate) fn new() -> Result<CompactionMetrics> {
        let passes = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "quiver_push_log_compactions_total",
                "Push-log compaction passes, by result (ok, error).",
            ),
            &["result"],
        )
        .map_err(crate::metrics::internal)?;
        for result in ["ok", "error"] {
            passes.with_label_values(&[result]);
        }
        let merged = prometheus::IntCounter::new(
            "quiver_push_log_merged_files_total",
            "Push-log files merged into larger ones by compaction.",
        )
        .map_err(crate::metrics::internal)?;
        Ok(CompactionMetrics { passes, merged })
    }

    pub(crate) fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        vec![Box::new(self.passes.clone()), Box::new(self.merged.clone())]
    }

    fn record(&self, pass: &Result<quiver_offline::CompactionReport>) {
        let result = match pass {
            Ok(report) => {
                self.merged.inc_by(report.merged as u64);
                "ok"
            }
            Err(_) => "error",
        };
        self.passes.with_label_values(&[result]).inc();
    }
}
