//! What a view or service declares under `monitoring:`: drift thresholds and, for views, the
//! freshness bound. Monitoring settings are metadata: changing them never makes a new version
//! (plan shows them as `monitoring.*` metadata changes).
//!
//! ```yaml
//! monitoring:
//!   max_staleness: 2h            # views: newest event older than this = STALE
//!   drift:
//!     psi: {warn: 0.1, alert: 0.25}
//!     ks: {warn: 0.1, alert: 0.2}
//!     js: {warn: 0.05, alert: 0.1}
//!     null_rate: {warn: 0.05, alert: 0.1}
//!   schedule: {every: 1h, window: 1h, reference: latest_export}   # or profile:ID
//! ```
//!
//! A metric's thresholds come from the service, else from the feature's view, else from
//! [`DriftMetric::default_band`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::expectations::{Expectation, OnViolation};
use crate::types::Micros;

/// The drift scores Quiver computes (see docs/MONITORING.md for their definitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftMetric {
    /// Population stability index over the reference's deciles (numbers, list lengths).
    Psi,
    /// Kolmogorov-Smirnov statistic: the largest distance between the two CDFs (numbers).
    Ks,
    /// Jensen-Shannon divergence, base 2, in [0, 1] (strings, bytes, booleans).
    Js,
    /// Absolute difference of the null fractions (every feature).
    NullRate,
}

impl DriftMetric {
    pub const ALL: [DriftMetric; 4] = [
        DriftMetric::Psi,
        DriftMetric::Ks,
        DriftMetric::Js,
        DriftMetric::NullRate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DriftMetric::Psi => "psi",
            DriftMetric::Ks => "ks",
            DriftMetric::Js => "js",
            DriftMetric::NullRate => "null_rate",
        }
    }

    pub fn parse(text: &str) -> Option<DriftMetric> {
        DriftMetric::ALL.into_iter().find(|m| m.name() == text)
    }

    /// The documented defaults, used when neither the service nor the view declares one.
    pub fn default_band(self) -> Band {
        let (warn, alert) = match self {
            DriftMetric::Psi => (0.1, 0.25),
            DriftMetric::Ks => (0.1, 0.2),
            DriftMetric::Js => (0.05, 0.1),
            DriftMetric::NullRate => (0.05, 0.1),
        };
        Band { warn, alert }
    }
}

/// A score at or above `warn` is WARN, at or above `alert` ALERT.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Band {
    pub warn: f64,
    pub alert: f64,
}

// Bands are checked finite when parsed (and JSON has no NaN), so equality is total.
impl Eq for Band {}

impl Band {
    pub fn status(&self, score: f64) -> DriftStatus {
        if score >= self.alert {
            DriftStatus::Alert
        } else if score >= self.warn {
            DriftStatus::Warn
        } else {
            DriftStatus::Ok
        }
    }

    /// Why the band cannot be used, if it cannot.
    pub fn problem(&self) -> Option<String> {
        if !(self.warn.is_finite() && self.alert.is_finite()) || self.warn < 0.0 {
            return Some("`warn` and `alert` must be finite numbers >= 0".into());
        }
        (self.warn > self.alert).then(|| {
            format!(
                "`warn` ({}) must not be above `alert` ({})",
                self.warn, self.alert
            )
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DriftStatus {
    Ok,
    Warn,
    Alert,
}

impl DriftStatus {
    pub fn name(self) -> &'static str {
        match self {
            DriftStatus::Ok => "OK",
            DriftStatus::Warn => "WARN",
            DriftStatus::Alert => "ALERT",
        }
    }
}

/// An object's `monitoring:` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitoringSpec {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drift: BTreeMap<DriftMetric, Band>,
    /// Views only: the newest event is STALE when older than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<Micros>,
    /// A drift check the server runs in the background.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
    /// Views only: rules per feature, checked on push ([`crate::expectations`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub expectations: BTreeMap<String, Expectation>,
    /// What a push that breaks an expectation gets.
    #[serde(default, skip_serializing_if = "is_warn")]
    pub on_violation: OnViolation,
}

fn is_warn(policy: &OnViolation) -> bool {
    *policy == OnViolation::Warn
}

/// `schedule: {every: 1h, window: 1h, reference: latest_export}`: every `every`, the server
/// profiles the last `window` of data and scores it against the reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub every: Micros,
    pub window: Micros,
    pub reference: ScheduleReference,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleReference {
    /// The newest stored profile of a training export of the subject.
    LatestExport,
    /// A stored profile.
    Profile(u64),
}

impl ScheduleReference {
    pub fn parse(text: &str) -> Option<ScheduleReference> {
        match text.split_once(':') {
            None if text == "latest_export" => Some(ScheduleReference::LatestExport),
            Some(("profile", id)) => id.parse().ok().map(ScheduleReference::Profile),
            _ => None,
        }
    }
}

impl std::fmt::Display for ScheduleReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScheduleReference::LatestExport => f.write_str("latest_export"),
            ScheduleReference::Profile(id) => write!(f, "profile:{id}"),
        }
    }
}

impl MonitoringSpec {
    pub fn is_empty(&self) -> bool {
        self.drift.is_empty()
            && self.max_staleness.is_none()
            && self.schedule.is_none()
            && self.expectations.is_empty()
            && self.on_violation == OnViolation::Warn
    }

    /// Plan properties: `monitoring.drift.psi` = `warn 0.1, alert 0.25`, ...
    pub fn properties(&self) -> impl Iterator<Item = (String, String)> + '_ {
        let drift = self.drift.iter().map(|(metric, band)| {
            (
                format!("monitoring.drift.{}", metric.name()),
                format!("warn {}, alert {}", band.warn, band.alert),
            )
        });
        let staleness = self.max_staleness.map(|s| {
            (
                "monitoring.max_staleness".to_string(),
                crate::types::format_duration(s),
            )
        });
        let schedule = self.schedule.as_ref().map(|s| {
            (
                "monitoring.schedule".to_string(),
                format!(
                    "every {}, window {}, reference {}",
                    crate::types::format_duration(s.every),
                    crate::types::format_duration(s.window),
                    s.reference
                ),
            )
        });
        let expectations = self
            .expectations
            .iter()
            .map(|(feature, e)| (format!("monitoring.expectations.{feature}"), e.describe()));
        let policy = (!self.expectations.is_empty()).then(|| {
            (
                "monitoring.on_violation".to_string(),
                self.on_violation.name().to_string(),
            )
        });
        drift
            .chain(staleness)
            .chain(schedule)
            .chain(expectations)
            .chain(policy)
    }
}

/// The band for `metric`: the service's, else the view's, else the default.
pub fn band_for(
    metric: DriftMetric,
    service: Option<&MonitoringSpec>,
    view: Option<&MonitoringSpec>,
) -> Band {
    [service, view]
        .into_iter()
        .flatten()
        .find_map(|spec| spec.drift.get(&metric).copied())
        .unwrap_or_else(|| metric.default_band())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_map_scores_to_statuses_at_the_boundaries() {
        let band = DriftMetric::Psi.default_band();
        assert_eq!(band.status(0.0), DriftStatus::Ok);
        assert_eq!(band.status(0.099), DriftStatus::Ok);
        assert_eq!(band.status(0.1), DriftStatus::Warn);
        assert_eq!(band.status(0.25), DriftStatus::Alert);
        assert!(
            Band {
                warn: 0.3,
                alert: 0.2
            }
            .problem()
            .is_some()
        );
        assert!(
            Band {
                warn: f64::NAN,
                alert: 0.2
            }
            .problem()
            .is_some()
        );
    }

    #[test]
    fn the_service_overrides_the_view_which_overrides_the_default() {
        let spec = |warn| MonitoringSpec {
            drift: [(DriftMetric::Ks, Band { warn, alert: 0.9 })].into(),
            max_staleness: None,
            schedule: None,
            ..MonitoringSpec::default()
        };
        let (service, view) = (spec(0.3), spec(0.4));
        assert_eq!(
            band_for(DriftMetric::Ks, Some(&service), Some(&view)).warn,
            0.3
        );
        assert_eq!(band_for(DriftMetric::Ks, None, Some(&view)).warn, 0.4);
        assert_eq!(
            band_for(DriftMetric::Psi, Some(&service), Some(&view)),
            DriftMetric::Psi.default_band()
        );
    }
}
