//! Profiles and drift reports on the wire (`quiver.v1` monitoring messages).

use quiver_core::monitoring::DriftStatus;
use quiver_monitor::numeric::NumericSummary;
use quiver_monitor::{DriftReport, Origin, Profile, RowStatus, Summary};
use quiver_proto::v1;

pub(crate) fn profile(p: &Profile) -> v1::Profile {
    let (origin, origin_detail) = match &p.origin {
        Origin::OnDemand => ("on_demand", String::new()),
        Origin::Export { path } => ("export", path.clone()),
        Origin::Materialization { job } => ("materialization", job.clone()),
    };
    let (start, end) = p.window.unwrap_or_default();
    v1::Profile {
        id: p.id,
        subject_kind: p.subject.kind.clone(),
        subject_name: p.subject.name.clone(),
        subject_version: p.subject.version,
        subject_fingerprint: p.subject.fingerprint.clone(),
        views: p.subject.views.clone(),
        created_at_micros: p.created_at,
        has_window: p.window.is_some(),
        window_start_micros: start,
        window_end_micros: end,
        origin: origin.into(),
        origin_detail,
        rows: p.rows,
        features: p.features.iter().map(feature).collect(),
    }
}

fn feature(f: &quiver_monitor::FeatureProfile) -> v1::FeatureProfile {
    use v1::feature_profile::Summary as W;
    let summary = match &f.summary {
        Summary::Numeric(n) => W::Numeric(numeric(n)),
        Summary::Categorical(c) => W::Categorical(v1::CategoricalSummary {
            count: c.count,
            distinct: c.distinct,
            top: c
                .top
                .iter()
                .map(|i| v1::ValueCount {
                    value: i.value.clone(),
                    count: i.count,
                })
                .collect(),
            hll_sketch: c.hll.clone(),
        }),
        Summary::Boolean {
            true_count,
            false_count,
        } => W::Boolean(v1::BooleanSummary {
            true_count: *true_count,
            false_count: *false_count,
        }),
        Summary::List { lengths, elements } => W::List(v1::ListSummary {
            lengths: Some(numeric(lengths)),
            elements: elements.as_ref().map(numeric),
        }),
    };
    v1::FeatureProfile {
        feature: f.feature.clone(),
        view: f.view.clone(),
        value_type: f.value_type.clone(),
        count: f.count,
        nulls: f.nulls,
        summary: Some(summary),
        violations: f.violations.clone().into_iter().collect(),
    }
}

fn numeric(n: &NumericSummary) -> v1::NumericSummary {
    v1::NumericSummary {
        count: n.count,
        non_finite: n.non_finite,
        min: n.min,
        max: n.max,
        mean: n.mean,
        stddev: n.stddev,
        quantiles: n
            .quantiles
            .iter()
            .map(|q| v1::Quantile {
                rank: q.rank,
                value: q.value,
            })
            .collect(),
        histogram: n
            .histogram
            .iter()
            .map(|b| v1::HistogramBin {
                lower: b.lower,
                upper: b.upper,
                count: b.count,
            })
            .collect(),
        kll_sketch: n.sketch.clone(),
    }
}

fn status(status: RowStatus) -> v1::DriftStatus {
    match status {
        RowStatus::Scored(DriftStatus::Ok) => v1::DriftStatus::Ok,
        RowStatus::Scored(DriftStatus::Warn) => v1::DriftStatus::Warn,
        RowStatus::Scored(DriftStatus::Alert) => v1::DriftStatus::Alert,
        RowStatus::NoData => v1::DriftStatus::NoData,
    }
}

pub(crate) fn drift(
    reference: &Profile,
    current: &Profile,
    report: &DriftReport,
) -> v1::ComputeDriftResponse {
    v1::ComputeDriftResponse {
        reference_profile_id: reference.id,
        current_profile_id: current.id,
        scores: report
            .rows
            .iter()
            .map(|r| v1::DriftScore {
                feature: r.feature.clone(),
                view: r.view.clone(),
                metric: r.metric.name().into(),
                score: r.score,
                warn: r.warn,
                alert: r.alert,
                status: status(r.status) as i32,
            })
            .collect(),
        unmatched: report.unmatched.clone(),
        status: status(RowStatus::Scored(report.worst())) as i32,
    }
}
