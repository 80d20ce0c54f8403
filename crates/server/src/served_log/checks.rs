//! Scheduled skew checks (`logging.skew_check`): every `every`, the skew report of the last
//! `window` of a service's log, exported as gauges (`quiver_skew_rate{service}`: mismatched
//! values over compared values, every feature together; mismatches per feature and cause).
//! One background task, looking for due checks every `--monitoring-interval`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, Opts};
use quiver_core::logging::SkewCheck;
use quiver_core::model::Kind;
use quiver_core::selection::{Selection, Selector};
use quiver_core::skew::{FeatureSkew, SkewCause};
use quiver_core::types::Micros;
use quiver_offline::OfflineStore;
use tokio_util::sync::CancellationToken;

use super::{ServedLog, SkewReport, SkewRequest};
use crate::error::Result;
use crate::metrics::internal;
use crate::options::Clock;
use crate::registry::Registry;

/// When a service's last check ran, and the (feature, cause) series it set.
type LastCheck = (Micros, Vec<(String, &'static str)>);

/// The scheduled skew checks and their gauges.
#[derive(Debug)]
pub(crate) struct SkewChecks {
    log: Arc<ServedLog>,
    registry: Arc<Registry>,
    offline: Arc<OfflineStore>,
    clock: Arc<dyn Clock>,
    max_rows: u64,
    /// Per service: when its last check ran, and the (feature, cause) series it set.
    last: Mutex<HashMap<String, LastCheck>>,
    rate: GaugeVec,
    compared: GaugeVec,
    mismatches: GaugeVec,
    checked_at: GaugeVec,
    checks: IntCounterVec,
}

impl SkewChecks {
    pub(crate) fn new(
        log: Arc<ServedLog>,
        registry: Arc<Registry>,
        offline: Arc<OfflineStore>,
        clock: Arc<dyn Clock>,
        max_rows: u64,
    ) -> Result<SkewChecks> {
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).map_err(internal)
        };
        Ok(SkewChecks {
            log,
            registry,
            offline,
            clock,
            max_rows,
            last: Mutex::new(HashMap::new()),
            rate: gauge(
                "quiver_skew_rate",
                "The latest scheduled skew check: mismatched served values (real skew, not expected) over compared values, every feature together.",
                &["service"],
            )?,
            compared: gauge(
                "quiver_skew_compared_values",
                "The latest scheduled skew check's compared values (rows times features); the rate is 0 when this is.",
                &["service"],
            )?,
            mismatches: gauge(
                "quiver_skew_mismatches",
                "The latest scheduled skew check's mismatched values per feature and cause.",
                &["service", "feature", "cause"],
            )?,
            checked_at: gauge(
                "quiver_skew_check_timestamp_seconds",
                "When the latest scheduled skew check of a service completed.",
                &["service"],
            )?,
            checks: IntCounterVec::new(
                Opts::new(
                    "quiver_skew_checks_total",
                    "Scheduled skew checks by outcome: ok, failed.",
                ),
                &["service", "outcome"],
            )
            .map_err(internal)?,
        })
    }

    pub(crate) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.rate.clone()),
            Box::new(self.compared.clone()),
            Box::new(self.mismatches.clone()),
            Box::new(self.checked_at.clone()),
            Box::new(self.checks.clone()),
        ]
    }

    /// Looks for due checks every `interval` until `shutdown`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        interval: std::time::Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let checks = Arc::clone(self);
        crate::monitor::spawn_ticks(interval, shutdown, move || {
            let checks = Arc::clone(&checks);
            async move { checks.run_due().await }
        })
    }

    /// Every service with a skew check whose last run is older than its `every`.
    fn due(&self) -> Vec<(String, SkewCheck)> {
        let registry = self.registry.snapshot();
        let now = self.clock.now();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        registry
            .list(Kind::FeatureService)
            .filter_map(|(history, _)| {
                let check = history.metadata.logging?.skew_check?;
                let ran = last.get(&history.name).map(|(at, _)| *at);
                ran.is_none_or(|t| now.saturating_sub(t) >= check.every)
                    .then(|| (history.name.clone(), check))
            })
            .collect()
    }

    /// Runs the due checks (from the scheduled checks' task).
    async fn run_due(&self) {
        for (service, check) in self.due() {
            let outcome = match self.check(&service, check).await {
                Ok(()) => "ok",
                Err(error) => {
                    tracing::warn!(%service, %error, "scheduled skew check failed");
                    "failed"
                }
            };
            self.checks
                .with_label_values(&[service.as_str(), outcome])
                .inc();
        }
    }

    async fn check(&self, service: &str, check: SkewCheck) -> Result<()> {
        let now = self.clock.now();
        let window = (now.saturating_sub(check.window), now.saturating_add(1));
        let request = SkewRequest::new(service.to_string(), window, check.sample, None, now)?;
        let mut report = self
            .log
            .skew(&self.registry, &self.offline, request, self.max_rows)
            .await?;
        if report.features.is_empty() {
            // Nothing logged in the window: every feature of the current version at 0.
            let selector = Selector::Service {
                reference: service.to_string(),
                expected_fingerprint: None,
            };
            let selection = Selection::resolve(&self.registry.snapshot(), &selector)?;
            report.features = selection
                .views
                .iter()
                .flat_map(|v| {
                    v.features
                        .iter()
                        .map(|f| FeatureSkew::new(v.output_name(f, true)))
                })
                .collect();
        }
        self.record(&report, now);
        Ok(())
    }

    /// Replaces the service's gauges with `report`'s figures.
    fn record(&self, report: &SkewReport, now: Micros) {
        let service = report.service.as_str();
        let (compared, mismatched) = report
            .features
            .iter()
            .fold((0u64, 0u64), |(c, m), f| (c + f.compared, m + f.mismatches));
        let series: Vec<(String, &'static str)> = report
            .features
            .iter()
            .flat_map(|f| {
                SkewCause::ALL
                    .iter()
                    .map(move |c| (f.feature.clone(), c.name()))
            })
            .collect();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.insert(service.to_string(), (now, series));
        for (feature, cause) in previous.map(|(_, s)| s).unwrap_or_default() {
            let _ = self
                .mismatches
                .remove_label_values(&[service, &feature, cause]);
        }
        for feature in &report.features {
            for cause in SkewCause::ALL {
                self.mismatches
                    .with_label_values(&[service, &feature.feature, cause.name()])
                    .set(feature.cause_count(cause) as f64);
            }
        }
        // Nothing compared: rate 0, and `compared` says why.
        let rate = match compared {
            0 => 0.0,
            n => mismatched as f64 / n as f64,
        };
        self.rate.with_label_values(&[service]).set(rate);
        self.compared
            .with_label_values(&[service])
            .set(compared as f64);
        self.checked_at
            .with_label_values(&[service])
            .set(now as f64 / 1e6);
    }
}
