//! Scheduled drift checks (`monitoring.schedule` on a view or service): every interval the
//! server runs the checks that are due, keeps each subject's latest result as Prometheus
//! gauges, and POSTs an ALERT to the webhook. Runs in one background task, never on a
//! request path; a check that cannot run (no reference yet, a failure) is retried at the next
//! interval. Replicas sharing an online store run each due check once between them
//! (`check_leases.rs`). The same task applies the profile retention, at start and hourly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounterVec, Opts};
use quiver_core::Kind;
use quiver_core::monitoring::{DriftStatus, Schedule, ScheduleReference};
use quiver_core::types::Micros;
use quiver_monitor::{DriftReport, RowStatus};
use tokio_util::sync::CancellationToken;

use super::check_leases::{CheckLeases, Take};
use super::webhook::Webhook;
use super::{Monitor, ProfileSource, SubjectRef};
use crate::error::Result;

/// The scheduled checks of one server and their gauges.
#[derive(Debug)]
pub(crate) struct DriftChecks {
    monitor: Arc<Monitor>,
    leases: CheckLeases,
    webhook: Option<Webhook>,
    /// `--profile-retention-days` in micros (None: profiles are kept forever).
    retention: Option<Micros>,
    /// Subject (`service:name`) -> its last completed check.
    last: Mutex<HashMap<String, LastCheck>>,
    score: GaugeVec,
    status: GaugeVec,
    checked_at: GaugeVec,
    checks: IntCounterVec,
}

/// When a subject's last check completed and the (feature, metric) series it set.
#[derive(Debug, Default)]
struct LastCheck {
    at: Micros,
    series: Vec<(String, &'static str)>,
}

/// How often the profile retention runs.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

use crate::metrics::internal;

/// The gauge value of a status: 0 OK, 1 WARN, 2 ALERT, -1 no data.
fn status_value(status: RowStatus) -> f64 {
    match status {
        RowStatus::Scored(DriftStatus::Ok) => 0.0,
        RowStatus::Scored(DriftStatus::Warn) => 1.0,
        RowStatus::Scored(DriftStatus::Alert) => 2.0,
        RowStatus::NoData => -1.0,
    }
}

impl DriftChecks {
    pub(crate) fn new(
        monitor: Arc<Monitor>,
        leases: CheckLeases,
        webhook: Option<String>,
        retention: Option<Micros>,
    ) -> Result<DriftChecks> {
        let labels = ["kind", "name", "feature", "metric"];
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            GaugeVec::new(Opts::new(name, help), labels).map_err(internal)
        };
        Ok(DriftChecks {
            monitor,
            leases,
            webhook: webhook.map(Webhook::new),
            retention,
            last: Mutex::new(HashMap::new()),
            score: gauge(
                "quiver_drift_score",
                "The latest scheduled drift check's score per feature and metric (PSI, KS, JS, null rate).",
                &labels,
            )?,
            status: gauge(
                "quiver_drift_status",
                "The latest scheduled drift check's status per feature and metric: 0 OK, 1 WARN, 2 ALERT, -1 no data.",
                &labels,
            )?,
            checked_at: gauge(
                "quiver_drift_check_timestamp_seconds",
                "When the latest scheduled drift check of a view or service completed.",
                &["kind", "name"],
            )?,
            checks: IntCounterVec::new(
                Opts::new(
                    "quiver_drift_checks_total",
                    "Scheduled drift checks by outcome: ok, no_reference (no training export profiled yet), failed.",
                ),
                &["kind", "name", "outcome"],
            )
            .map_err(internal)?,
        })
    }

    /// The metric families, to register (handles onto the same series).
    pub(crate) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.score.clone()),
            Box::new(self.status.clone()),
            Box::new(self.checked_at.clone()),
            Box::new(self.checks.clone()),
        ]
    }

    /// Runs the due checks every `interval` until `shutdown`.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        interval: std::time::Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let checks = Arc::clone(self);
        let mut pruned: Option<std::time::Instant> = None;
        spawn_ticks(interval, shutdown, move || {
            let checks = Arc::clone(&checks);
            let prune = pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY);
            if prune {
                pruned = Some(std::time::Instant::now());
            }
            async move {
                checks.run_due().await;
                if prune {
                    checks.prune().await;
                }
            }
        })
    }

    /// Applies the profile retention, if any; a failure is logged and retried next time.
    async fn prune(&self) {
        let Some(retention) = self.retention else {
            return;
        };
        match self.monitor.prune_profiles(retention).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed profiles past the retention"),
            Err(error) => tracing::warn!(%error, "profile retention failed"),
        }
    }

    /// Every subject with a schedule whose last check is older than its `every`.
    fn due(&self) -> Vec<(SubjectRef, Schedule)> {
        let registry = self.monitor.registry.snapshot();
        let now = self.monitor.clock.now();
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let mut due = Vec::new();
        for kind in [Kind::FeatureService, Kind::FeatureView] {
            for (history, _) in registry.list(kind) {
                let Some(schedule) = &history.metadata.monitoring.schedule else {
                    continue;
                };
                let name = history.name.clone();
                let subject = match kind {
                    Kind::FeatureService => SubjectRef::Service(name),
                    _ => SubjectRef::View(name),
                };
                let ran = last.get(&key(&subject)).map(|l| l.at);
                if ran.is_none_or(|t| now.saturating_sub(t) >= schedule.every) {
                    due.push((subject, schedule.clone()));
                }
            }
        }
        due
    }

    async fn run_due(&self) {
        for (subject, schedule) in self.due() {
            let name = key(&subject);
            match self.leases.take(&name).await {
                Ok(Take::Taken) => {}
                Ok(Take::NotYet) => continue,
                Ok(Take::Elsewhere) => {
                    // Another replica runs it: its gauges are the current ones.
                    self.forget(&subject);
                    continue;
                }
                Err(error) => {
                    tracing::warn!(subject = %name, %error, "cannot take a scheduled drift check");
                    continue;
                }
            }
            let started = self.monitor.clock.now();
            let result = self
                .leases
                .while_held(&name, self.check(&subject, &schedule))
                .await;
            let ran = matches!(result, Ok(true)).then_some(started);
            let now = self.monitor.clock.now();
            self.leases.finish(&name, ran, schedule.every, now).await;
            let outcome = match result {
                Ok(true) => "ok",
                Ok(false) => "no_reference",
                Err(error) => {
                    tracing::warn!(subject = %key(&subject), %error, "scheduled drift check failed");
                    "failed"
                }
            };
            self.checks
                .with_label_values(&[subject.kind(), subject.name(), outcome])
                .inc();
        }
    }

    /// One check; false when there is no reference yet.
    async fn check(&self, subject: &SubjectRef, schedule: &Schedule) -> Result<bool> {
        let reference = match schedule.reference {
            ScheduleReference::Profile(id) => id,
            ScheduleReference::LatestExport => {
                match self.monitor.latest_export_profile(subject).await? {
                    Some(id) => id,
                    None => return Ok(false),
                }
            }
        };
        let now = self.monitor.clock.now();
        let current = ProfileSource::Window {
            start: now.saturating_sub(schedule.window),
            end: now,
        };
        let (reference, current, report) = self
            .monitor
            .drift(subject, ProfileSource::Stored(reference), current)
            .await?;
        self.record(subject, &report, now);
        if report.worst() == DriftStatus::Alert
            && let Some(webhook) = &self.webhook
        {
            webhook.notify(subject, reference.id, current.id, &report, now);
        }
        Ok(true)
    }

    /// Drops the subject's gauges (another replica checked it since).
    fn forget(&self, subject: &SubjectRef) {
        let (kind, name) = (subject.kind(), subject.name());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let Some(previous) = last.remove(&key(subject)) else {
            return;
        };
        for (feature, metric) in previous.series {
            let labels = [kind, name, feature.as_str(), metric];
            let _ = self.score.remove_label_values(&labels);
            let _ = self.status.remove_label_values(&labels);
        }
        let _ = self.checked_at.remove_label_values(&[kind, name]);
    }

    /// Replaces the subject's gauges with `report`'s scores.
    fn record(&self, subject: &SubjectRef, report: &DriftReport, now: Micros) {
        let (kind, name) = (subject.kind(), subject.name());
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = last.insert(
            key(subject),
            LastCheck {
                at: now,
                series: report
                    .rows
                    .iter()
                    .map(|r| (r.feature.clone(), r.metric.name()))
                    .collect(),
            },
        );
        for (feature, metric) in previous.map(|p| p.series).unwrap_or_default() {
            let labels = [kind, name, feature.as_str(), metric];
            let _ = self.score.remove_label_values(&labels);
            let _ = self.status.remove_label_values(&labels);
        }
        for row in &report.rows {
            let labels = [kind, name, row.feature.as_str(), row.metric.name()];
            match row.score {
                Some(score) => self.score.with_label_values(&labels).set(score),
                None => {
                    let _ = self.score.remove_label_values(&labels);
                }
            }
            self.status
                .with_label_values(&labels)
                .set(status_value(row.status));
        }
        self.checked_at
            .with_label_values(&[kind, name])
            .set(now as f64 / 1e6);
    }
}

/// Runs `tick` every `interval` (a late tick is delayed, not repeated) until `shutdown`: the
/// loop of the scheduled checks.
pub(crate) fn spawn_ticks<F, Fut>(
    interval: std::time::Duration,
    shutdown: CancellationToken,
    mut tick: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => tick().await,
            }
        }
    })
}

fn key(subject: &SubjectRef) -> String {
    format!("{}:{}", subject.kind(), subject.name())
}
