//! How `quiver profile` and `quiver drift` print: aligned tables, or JSON for scripts (one
//! object per feature, or per feature and metric).

use quiver_core::types::format_rfc3339;
use quiver_proto::v1;
use serde_json::{Value, json};
use v1::feature_profile::Summary;

use crate::output::table;

fn numeric_json(n: &v1::NumericSummary) -> Value {
    let quantiles: serde_json::Map<String, Value> = n
        .quantiles
        .iter()
        .map(|q| (format!("p{}", (q.rank * 100.0).round()), json!(q.value)))
        .collect();
    json!({
        "values": n.count,
        "non_finite": n.non_finite,
        "min": n.min,
        "max": n.max,
        "mean": n.mean,
        "stddev": n.stddev,
        "quantiles": quantiles,
        "histogram": n.histogram.iter().map(|b| json!({"lower": b.lower, "upper": b.upper, "count": b.count})).collect::<Vec<_>>(),
    })
}

/// One object per feature: `feature`, `count`, `nulls`, the figures of its type (numbers:
/// `min`, `max`, `mean`, `stddev`, `quantiles`, `histogram` at the top level).
pub(crate) fn profile_json(p: &v1::Profile) -> Value {
    p.features
        .iter()
        .map(|f| {
            let mut object = json!({
                "profile_id": p.id,
                "feature": f.feature,
                "view": f.view,
                "type": f.value_type,
                "count": f.count,
                "nulls": f.nulls,
                "null_fraction": if f.count == 0 { 0.0 } else { f.nulls as f64 / f.count as f64 },
            });
            let extra = match &f.summary {
                Some(Summary::Numeric(n)) => numeric_json(n),
                Some(Summary::Categorical(c)) => json!({
                    "distinct": c.distinct,
                    "top": c.top.iter().map(|i| json!({"value": i.value, "count": i.count})).collect::<Vec<_>>(),
                }),
                Some(Summary::Boolean(b)) => json!({
                    "true_count": b.true_count,
                    "false_count": b.false_count,
                    "true_rate": rate(b.true_count, b.true_count + b.false_count),
                }),
                Some(Summary::List(l)) => json!({
                    "lengths": l.lengths.as_ref().map(numeric_json),
                    "elements": l.elements.as_ref().map(numeric_json),
                }),
                None => json!({}),
            };
            if let (Some(object), Value::Object(extra)) = (object.as_object_mut(), extra) {
                object.extend(extra);
                if !f.violations.is_empty() {
                    let violations: std::collections::BTreeMap<_, _> = f.violations.iter().collect();
                    object.insert("violations".into(), json!(violations));
                }
            }
            object
        })
        .collect()
}

fn rate(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn num(value: Option<f64>) -> String {
    match value {
        None => "-".into(),
        Some(v) if v != 0.0 && (v.abs() >= 1e7 || v.abs() < 1e-3) => format!("{v:.4e}"),
        Some(v) => format!("{:.4}", v)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string(),
    }
}

fn median(n: &v1::NumericSummary) -> Option<f64> {
    n.quantiles.iter().find(|q| q.rank == 0.5).map(|q| q.value)
}

fn describe(summary: Option<&Summary>) -> [String; 6] {
    let numeric = |n: &v1::NumericSummary, note: String| {
        [
            num(n.min),
            num(n.max),
            num(n.mean),
            num(n.stddev),
            num(median(n)),
            note,
        ]
    };
    match summary {
        Some(Summary::Numeric(n)) => {
            let note = if n.non_finite > 0 {
                format!("{} NaN/inf", n.non_finite)
            } else {
                String::new()
            };
            numeric(n, note)
        }
        Some(Summary::List(l)) => match &l.lengths {
            Some(n) => numeric(n, "list lengths".into()),
            None => Default::default(),
        },
        Some(Summary::Categorical(c)) => {
            let top: Vec<String> = c
                .top
                .iter()
                .take(3)
                .map(|i| {
                    format!(
                        "{} ({:.1}%)",
                        i.value,
                        100.0 * i.count as f64 / c.count.max(1) as f64
                    )
                })
                .collect();
            let dash = || "-".to_string();
            [
                dash(),
                dash(),
                dash(),
                dash(),
                dash(),
                format!("~{} distinct; {}", c.distinct, top.join(", ")),
            ]
        }
        Some(Summary::Boolean(b)) => {
            let dash = || "-".to_string();
            let rate = rate(b.true_count, b.true_count + b.false_count);
            [
                dash(),
                dash(),
                num(rate),
                dash(),
                dash(),
                "mean = true rate".into(),
            ]
        }
        None => Default::default(),
    }
}

pub(crate) fn profile_table(p: &v1::Profile) -> String {
    let window = if p.has_window {
        format!(
            ", window [{}, {})",
            format_rfc3339(p.window_start_micros),
            format_rfc3339(p.window_end_micros)
        )
    } else {
        String::new()
    };
    let origin = match p.origin_detail.as_str() {
        "" => p.origin.clone(),
        detail => format!("{} {detail}", p.origin),
    };
    let head = format!(
        "profile {} of {} {}@{} ({}), {} rows{window}",
        p.id, p.subject_kind, p.subject_name, p.subject_version, origin, p.rows
    );
    let rows: Vec<Vec<String>> = p
        .features
        .iter()
        .map(|f| {
            let mut row = vec![
                f.feature.clone(),
                f.value_type.clone(),
                f.count.to_string(),
                f.nulls.to_string(),
            ];
            row.extend(describe(f.summary.as_ref()));
            row
        })
        .collect();
    let header = [
        "FEATURE", "TYPE", "COUNT", "NULLS", "MIN", "MAX", "MEAN", "STDDEV", "P50", "NOTES",
    ];
    format!("{head}\n{}{}", table(&header, &rows), violations_lines(p))
}

/// `expectations:` then one line per feature with declared rules: each rule's violations.
fn violations_lines(p: &v1::Profile) -> String {
    let lines: Vec<String> = p
        .features
        .iter()
        .filter(|f| !f.violations.is_empty())
        .map(|f| {
            let counts: std::collections::BTreeMap<_, _> = f.violations.iter().collect();
            let counts: Vec<String> = counts.iter().map(|(r, n)| format!("{r}={n}")).collect();
            format!("  {}: {}", f.feature, counts.join(" "))
        })
        .collect();
    match lines.is_empty() {
        true => String::new(),
        false => format!("\nexpectation violations:\n{}", lines.join("\n")),
    }
}

pub(crate) fn profiles_table(profiles: &[v1::Profile]) -> String {
    let rows: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            vec![
                p.id.to_string(),
                format!(
                    "{} {}@{}",
                    p.subject_kind, p.subject_name, p.subject_version
                ),
                format!("{} {}", p.origin, p.origin_detail)
                    .trim()
                    .to_string(),
                format_rfc3339(p.created_at_micros),
                p.rows.to_string(),
            ]
        })
        .collect();
    table(&["ID", "SUBJECT", "ORIGIN", "CREATED", "ROWS"], &rows)
}

fn status_name(status: i32) -> &'static str {
    match v1::DriftStatus::try_from(status) {
        Ok(v1::DriftStatus::Ok) => "OK",
        Ok(v1::DriftStatus::Warn) => "WARN",
        Ok(v1::DriftStatus::Alert) => "ALERT",
        Ok(v1::DriftStatus::NoData) => "NO_DATA",
        Ok(v1::DriftStatus::Unspecified) | Err(_) => "UNKNOWN",
    }
}

fn threshold(score: &v1::DriftScore) -> f64 {
    if status_name(score.status) == "ALERT" {
        score.alert
    } else {
        score.warn
    }
}

/// One object per feature and metric: `feature`, `metric`, `score`, `threshold` (the one
/// that decided the status: `alert` for ALERT, else `warn`), `status`.
pub(crate) fn drift_json(report: &v1::ComputeDriftResponse) -> Value {
    report
        .scores
        .iter()
        .map(|s| {
            json!({
                "feature": s.feature,
                "view": s.view,
                "metric": s.metric,
                "score": s.score,
                "threshold": threshold(s),
                "warn": s.warn,
                "alert": s.alert,
                "status": status_name(s.status),
                "reference_profile_id": report.reference_profile_id,
                "current_profile_id": report.current_profile_id,
            })
        })
        .collect()
}

pub(crate) fn drift_table(report: &v1::ComputeDriftResponse) -> String {
    let rows: Vec<Vec<String>> = report
        .scores
        .iter()
        .map(|s| {
            vec![
                s.feature.clone(),
                s.metric.clone(),
                num(s.score),
                format!("{} / {}", num(Some(s.warn)), num(Some(s.alert))),
                status_name(s.status).to_string(),
            ]
        })
        .collect();
    let mut out = format!(
        "drift of profile {} against reference profile {}: {}\n{}",
        report.current_profile_id,
        report.reference_profile_id,
        status_name(report.status),
        table(
            &["FEATURE", "METRIC", "SCORE", "WARN / ALERT", "STATUS"],
            &rows
        )
    );
    for line in &report.unmatched {
        out.push_str(&format!("\nnot compared: {line}"));
    }
    out
}
