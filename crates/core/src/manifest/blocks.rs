//! The `monitoring:` (views and services) and `logging:` (services) blocks of a manifest
//! document: their raw shapes and how [`Document`] checks them into metadata.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::Document;
use crate::expectations::{Expectation, OnViolation};
use crate::logging::{DEFAULT_SKEW_SAMPLE, LoggingSpec, SkewCheck};
use crate::model::Feature;
use crate::monitoring::{Band, DriftMetric, MonitoringSpec, Schedule, ScheduleReference};

/// The shortest `every` of a scheduled check.
const MIN_SCHEDULE: i64 = 60_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMonitoring {
    #[serde(default)]
    drift: BTreeMap<String, Band>,
    #[serde(default)]
    max_staleness: Option<serde_norway::Value>,
    #[serde(default)]
    schedule: Option<RawSchedule>,
    #[serde(default)]
    expectations: BTreeMap<String, Expectation>,
    #[serde(default)]
    on_violation: Option<OnViolation>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogging {
    sample_rate: f64,
    #[serde(default)]
    expected_lag: Option<serde_norway::Value>,
    #[serde(default)]
    skew_check: Option<RawSkewCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSkewCheck {
    every: serde_norway::Value,
    #[serde(default)]
    window: Option<serde_norway::Value>,
    #[serde(default)]
    sample: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSchedule {
    every: serde_norway::Value,
    #[serde(default)]
    window: Option<serde_norway::Value>,
    #[serde(default)]
    reference: Option<String>,
}

impl Document<'_> {
    /// A view's (with its `features`) or service's `monitoring:` block; `max_staleness` and
    /// expectations are views' settings.
    pub(super) fn monitoring(
        &mut self,
        raw: Option<RawMonitoring>,
        features: Option<&[Feature]>,
    ) -> MonitoringSpec {
        let view = features.is_some();
        let Some(raw) = raw else {
            return MonitoringSpec::default();
        };
        let mut spec = MonitoringSpec::default();
        for (name, band) in raw.drift {
            let field = format!("monitoring.drift.{name}");
            match DriftMetric::parse(&name) {
                None => self.push(
                    &field,
                    format!("unknown drift metric `{name}`; use psi, ks, js or null_rate"),
                ),
                Some(metric) => match band.problem() {
                    Some(problem) => self.push(&field, problem),
                    None => {
                        spec.drift.insert(metric, band);
                    }
                },
            }
        }
        if let Some(value) = raw.max_staleness {
            if !view {
                self.push(
                    "monitoring.max_staleness",
                    "freshness is a view's setting; declare `max_staleness` on the view",
                );
            }
            let micros = self.duration("monitoring.max_staleness", Some(&value), "0 (no bound)");
            spec.max_staleness = (micros > 0).then_some(micros);
        }
        spec.schedule = raw.schedule.and_then(|raw| self.schedule(raw));
        if !view && (!raw.expectations.is_empty() || raw.on_violation.is_some()) {
            self.push(
                "monitoring.expectations",
                "expectations are a view's setting; declare them on the view",
            );
        }
        for (name, expectation) in raw.expectations {
            let field = format!("monitoring.expectations.{name}");
            let feature = features.into_iter().flatten().find(|f| f.name == name);
            match feature.map(|f| expectation.problem(f.value_type)) {
                None if view => self.push(&field, format!("the view has no feature `{name}`")),
                Some(Some(problem)) => self.push(&field, problem),
                _ => {
                    spec.expectations.insert(name, expectation);
                }
            }
        }
        spec.on_violation = raw.on_violation.unwrap_or_default();
        spec
    }

    /// A scheduled check's `every` (at least a minute) and `window` (default `every`), under
    /// `prefix` (like `monitoring.schedule`).
    fn every_and_window(
        &mut self,
        prefix: &str,
        every: &serde_norway::Value,
        window: Option<serde_norway::Value>,
    ) -> (i64, i64) {
        let every = self.duration(&format!("{prefix}.every"), Some(every), "1h");
        if every < MIN_SCHEDULE {
            self.push(
                &format!("{prefix}.every"),
                "a scheduled check runs at most once a minute; write `every: 1m` or more",
            );
        }
        let window = match window {
            None => every,
            Some(w) => self.duration(&format!("{prefix}.window"), Some(&w), "1h"),
        };
        if window <= 0 {
            self.push(
                &format!("{prefix}.window"),
                "the window must be longer than 0, like `1h`",
            );
        }
        (every, window)
    }

    fn schedule(&mut self, raw: RawSchedule) -> Option<Schedule> {
        let (every, window) = self.every_and_window("monitoring.schedule", &raw.every, raw.window);
        let text = raw.reference.unwrap_or_else(|| "latest_export".into());
        let Some(reference) = ScheduleReference::parse(&text) else {
            self.push(
                "monitoring.schedule.reference",
                format!("unknown reference `{text}`; use `latest_export` or `profile:ID`"),
            );
            return None;
        };
        Some(Schedule {
            every,
            window,
            reference,
        })
    }

    pub(super) fn logging(&mut self, raw: RawLogging) -> LoggingSpec {
        if let Some(problem) = LoggingSpec::rate_problem(raw.sample_rate) {
            self.push("logging.sample_rate", problem);
        }
        LoggingSpec {
            sample_rate: raw.sample_rate,
            expected_lag: self.duration("logging.expected_lag", raw.expected_lag.as_ref(), "0"),
            skew_check: raw.skew_check.map(|raw| self.skew_check(raw)),
        }
    }

    fn skew_check(&mut self, raw: RawSkewCheck) -> SkewCheck {
        let (every, window) = self.every_and_window("logging.skew_check", &raw.every, raw.window);
        SkewCheck {
            every,
            window,
            sample: raw.sample.unwrap_or(DEFAULT_SKEW_SAMPLE),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest::tests::parse;
    use crate::monitoring::DriftMetric;

    #[test]
    fn monitoring_blocks_parse_and_bad_ones_name_the_field() {
        let view = "kind: FeatureView\nname: v\nsource: s\nfeatures: [{name: f, type: float64}]\n";
        let objects = parse(&format!(
            "{view}monitoring:\n  max_staleness: 2h\n  drift: {{psi: {{warn: 0.2, alert: 0.4}}}}\n"
        ))
        .expect("parses");
        let monitoring = &objects[0].metadata.monitoring;
        assert_eq!(monitoring.max_staleness, Some(7_200_000_000));
        assert_eq!(monitoring.drift[&DriftMetric::Psi].alert, 0.4);
        for (block, field, message) in [
            (
                "drift: {psx: {warn: 1, alert: 2}}",
                "monitoring.drift.psx",
                "use psi, ks",
            ),
            (
                "drift: {ks: {warn: 3, alert: 2}}",
                "monitoring.drift.ks",
                "must not be above",
            ),
            (
                "max_staleness: soon",
                "monitoring.max_staleness",
                "invalid duration",
            ),
        ] {
            let err = parse(&format!("{view}monitoring: {{{block}}}\n")).expect_err(block);
            let text = err.to_string();
            assert!(
                text.contains(field) && text.contains(message),
                "{block}: {text}"
            );
        }
        let service = "kind: FeatureService\nname: s\nfeatures: [{view: v}]\nmonitoring: {max_staleness: 1h}\n";
        let text = parse(service).expect_err("service staleness").to_string();
        assert!(
            text.contains("declare `max_staleness` on the view"),
            "{text}"
        );
    }

    #[test]
    fn service_logging_parses_and_bad_rates_name_the_field() {
        let service = |block: &str| {
            format!("kind: FeatureService\nname: s\nfeatures: [{{view: v}}]\nlogging: {block}\n")
        };
        let block = "{sample_rate: 0.25, expected_lag: 10m, skew_check: {every: 1h}}";
        let objects = parse(&service(block)).expect("parses");
        let logging = objects[0].metadata.logging.expect("logging");
        assert_eq!(logging.sample_rate, 0.25);
        assert_eq!(logging.expected_lag, 600_000_000);
        let check = logging.skew_check.expect("skew_check");
        assert_eq!(
            (check.every, check.window, check.sample),
            (3_600_000_000, 3_600_000_000, 10_000)
        );
        for (block, message) in [
            ("{sample_rate: 2}", "logging.sample_rate"),
            (
                "{sample_rate: 0.1, expected_lag: soon}",
                "logging.expected_lag",
            ),
            ("{sample: 0.1}", "sample"),
            (
                "{sample_rate: 0.1, skew_check: {every: 10s}}",
                "logging.skew_check.every",
            ),
        ] {
            let text = parse(&service(block)).expect_err(block).to_string();
            assert!(text.contains(message), "{block}: {text}");
        }
    }
}
