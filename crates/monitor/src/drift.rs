//! Drift scores between two profiles of the same features (docs/MONITORING.md defines them):
//! PSI and KS for numbers and list lengths (from the KLL sketches), Jensen-Shannon for strings,
//! bytes and booleans (from the value counts), and the null-rate difference for every feature.

use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch};
use quiver_core::monitoring::{Band, DriftMetric, DriftStatus};
use serde::{Deserialize, Serialize};

use crate::categorical::CategoricalSummary;
use crate::error::Result;
use crate::profile::{FeatureProfile, Profile, Summary};

/// Added to every bin's share before PSI's logarithm, so an empty bin gives a large finite score.
pub const PSI_EPSILON: f64 = 1e-4;
/// PSI bins: the reference's deciles.
const PSI_BINS: usize = 10;
/// KS is evaluated at the 0.5 %-quantiles of both sides (within the sketches' rank error).
const KS_POINTS: usize = 200;

/// One score of one feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftRow {
    pub feature: String,
    pub view: String,
    pub metric: DriftMetric,
    /// None when a side has no values to compare (status NO_DATA).
    pub score: Option<f64>,
    pub warn: f64,
    pub alert: f64,
    pub status: RowStatus,
}

impl DriftRow {
    /// The threshold that decided the status: `alert` for ALERT, `warn` otherwise.
    pub fn threshold(&self) -> f64 {
        match self.status {
            RowStatus::Scored(DriftStatus::Alert) => self.alert,
            _ => self.warn,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RowStatus {
    Scored(DriftStatus),
    NoData,
}

impl RowStatus {
    pub fn name(self) -> &'static str {
        match self {
            RowStatus::Scored(status) => status.name(),
            RowStatus::NoData => "NO_DATA",
        }
    }
}

/// Every score of every feature both profiles have, plus what could not be compared.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DriftReport {
    pub rows: Vec<DriftRow>,
    /// Features in only one profile, or with different types: `feature: reason`.
    pub unmatched: Vec<String>,
}

impl DriftReport {
    /// The worst status among the rows (OK for none).
    pub fn worst(&self) -> DriftStatus {
        self.rows
            .iter()
            .filter_map(|r| match r.status {
                RowStatus::Scored(s) => Some(s),
                RowStatus::NoData => None,
            })
            .max()
            .unwrap_or(DriftStatus::Ok)
    }
}

/// Compares `current` with `reference`, feature by feature (in the reference's order);
/// `band(view, metric)` gives the thresholds.
pub fn compare(
    reference: &Profile,
    current: &Profile,
    band: impl Fn(&str, DriftMetric) -> Band,
) -> Result<DriftReport> {
    let mut report = DriftReport::default();
    for r in &reference.features {
        let Some(c) = current.feature(&r.feature) else {
            report
                .unmatched
                .push(format!("{}: not in the current profile", r.feature));
            continue;
        };
        if r.value_type != c.value_type {
            report.unmatched.push(format!(
                "{}: type {} in the reference, {} in the current profile",
                r.feature, r.value_type, c.value_type
            ));
            continue;
        }
        for (metric, score) in scores(r, c)? {
            let b = band(&r.view, metric);
            let status = match score {
                Some(s) => RowStatus::Scored(b.status(s)),
                None => RowStatus::NoData,
            };
            report.rows.push(DriftRow {
                feature: r.feature.clone(),
                view: r.view.clone(),
                metric,
                score,
                warn: b.warn,
                alert: b.alert,
                status,
            });
        }
    }
    for c in &current.features {
        if reference.feature(&c.feature).is_none() {
            report
                .unmatched
                .push(format!("{}: not in the reference profile", c.feature));
        }
    }
    Ok(report)
}

fn scores(r: &FeatureProfile, c: &FeatureProfile) -> Result<Vec<(DriftMetric, Option<f64>)>> {
    let null_rate =
        (r.count > 0 && c.count > 0).then(|| (r.null_fraction() - c.null_fraction()).abs());
    let mut out = Vec::new();
    match (&r.summary, &c.summary) {
        (Summary::Numeric(a), Summary::Numeric(b))
        | (Summary::List { lengths: a, .. }, Summary::List { lengths: b, .. }) => {
            let what = |side: &str| format!("{side} `{}`", r.feature);
            let (a, b) = (a.sketch(&what("reference"))?, b.sketch(&what("current"))?);
            out.push((DriftMetric::Psi, psi(&a, &b)));
            out.push((DriftMetric::Ks, ks(&a, &b)));
        }
        (Summary::Categorical(a), Summary::Categorical(b)) => {
            out.push((
                DriftMetric::Js,
                js(&category_counts(a), &category_counts(b)),
            ));
        }
        (
            Summary::Boolean {
                true_count: at,
                false_count: af,
            },
            Summary::Boolean {
                true_count: bt,
                false_count: bf,
            },
        ) => {
            let a = vec![("true".to_string(), *at), ("false".to_string(), *af)];
            let b = vec![("true".to_string(), *bt), ("false".to_string(), *bf)];
            out.push((DriftMetric::Js, js(&a, &b)));
        }
        _ => {}
    }
    out.push((DriftMetric::NullRate, null_rate));
    Ok(out)
}

type Sketch = KllSketch<KllFloat<f64>>;

/// PSI = sum over bins of (c - r) * ln(c / r), the bins cut at the reference's deciles.
pub fn psi(reference: &Sketch, current: &Sketch) -> Option<f64> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let ranks: Vec<f64> = (1..PSI_BINS).map(|i| i as f64 / PSI_BINS as f64).collect();
    let mut splits = reference
        .quantiles(&ranks, SearchCriteria::Inclusive)
        .ok()??;
    splits.dedup();
    let r = reference.pmf(&splits, SearchCriteria::Inclusive).ok()??;
    let c = current.pmf(&splits, SearchCriteria::Inclusive).ok()??;
    Some(
        r.iter()
            .zip(&c)
            .map(|(r, c)| {
                let (r, c) = (r + PSI_EPSILON, c + PSI_EPSILON);
                (c - r) * (c / r).ln()
            })
            .sum(),
    )
}

/// KS = the largest |F_r(x) - F_c(x)| over the quantiles of both sides.
pub fn ks(reference: &Sketch, current: &Sketch) -> Option<f64> {
    if reference.is_empty() || current.is_empty() {
        return None;
    }
    let ranks: Vec<f64> = (0..=KS_POINTS)
        .map(|i| i as f64 / KS_POINTS as f64)
        .collect();
    let mut points = reference
        .quantiles(&ranks, SearchCriteria::Inclusive)
        .ok()??;
    points.extend(
        current
            .quantiles(&ranks, SearchCriteria::Inclusive)
            .ok()??,
    );
    points.sort();
    points.dedup();
    let r = reference.cdf(&points, SearchCriteria::Inclusive).ok()??;
    let c = current.cdf(&points, SearchCriteria::Inclusive).ok()??;
    r.iter()
        .zip(&c)
        .map(|(r, c)| (r - c).abs())
        .reduce(f64::max)
}

/// Counts per value, the values outside the kept top under one `other` bucket.
fn category_counts(summary: &CategoricalSummary) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = summary
        .top
        .iter()
        .map(|i| (i.value.clone(), i.count))
        .collect();
    // NUL cannot start a string value's hex or a user's category name by accident.
    counts.push(("\0other".into(), summary.other()));
    counts
}

/// Jensen-Shannon divergence (base 2, in [0, 1]) between two count vectors by value.
pub fn js(reference: &[(String, u64)], current: &[(String, u64)]) -> Option<f64> {
    let total = |side: &[(String, u64)]| side.iter().map(|(_, n)| *n).sum::<u64>() as f64;
    let (tr, tc) = (total(reference), total(current));
    if tr == 0.0 || tc == 0.0 {
        return None;
    }
    let mut keys: Vec<&str> = reference
        .iter()
        .chain(current)
        .map(|(k, _)| k.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let share = |side: &[(String, u64)], key: &str, t: f64| {
        side.iter()
            .filter(|(k, _)| k == key)
            .map(|(_, n)| *n)
            .sum::<u64>() as f64
            / t
    };
    let kl = |p: f64, m: f64| if p > 0.0 { p * (p / m).log2() } else { 0.0 };
    let divergence: f64 = keys
        .iter()
        .map(|key| {
            let (p, q) = (share(reference, key, tr), share(current, key, tc));
            let m = (p + q) / 2.0;
            (kl(p, m) + kl(q, m)) / 2.0
        })
        .sum();
    Some(divergence.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn sketch(values: impl IntoIterator<Item = f64>) -> Sketch {
        let mut s = Sketch::new(200).expect("k");
        for v in values {
            s.update(KllFloat::<f64>::new(v).expect("not NaN"));
        }
        s
    }

    fn normal(rng: &mut rand::rngs::StdRng, mean: f64, sd: f64, n: usize) -> Vec<f64> {
        // Box-Muller, enough for tests.
        (0..n)
            .map(|_| {
                let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-12), rng.random());
                mean + sd * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
            })
            .collect()
    }

    /// Exact PSI over sorted data, deciles of the reference: the slow reference.
    fn exact_psi(r: &[f64], c: &[f64]) -> f64 {
        let mut sorted = r.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mut splits: Vec<f64> = (1..10)
            .map(|i| sorted[((i as f64 / 10.0) * sorted.len() as f64).ceil() as usize - 1])
            .collect();
        splits.dedup();
        let share = |data: &[f64], lo: f64, hi: f64| {
            data.iter().filter(|v| **v > lo && **v <= hi).count() as f64 / data.len() as f64
        };
        let mut edges = vec![f64::NEG_INFINITY];
        edges.extend(&splits);
        edges.push(f64::INFINITY);
        edges
            .windows(2)
            .map(|w| {
                let (p, q) = (
                    share(r, w[0], w[1]) + PSI_EPSILON,
                    share(c, w[0], w[1]) + PSI_EPSILON,
                );
                (q - p) * (q / p).ln()
            })
            .sum()
    }

    #[test]
    fn psi_and_ks_follow_the_exact_values_and_see_shifts() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let reference = normal(&mut rng, 0.0, 1.0, 20_000);
        let same = normal(&mut rng, 0.0, 1.0, 20_000);
        let shifted = normal(&mut rng, 0.5, 1.0, 20_000);
        let wider = normal(&mut rng, 0.0, 2.0, 20_000);
        let r = sketch(reference.iter().copied());
        for (current, drifted) in [(&same, false), (&shifted, true), (&wider, true)] {
            let c = sketch(current.iter().copied());
            let got = psi(&r, &c).expect("psi");
            let exact = exact_psi(&reference, current);
            assert!(
                (got - exact).abs() < 0.02 + 0.1 * exact,
                "psi {got} vs exact {exact}"
            );
            let band = DriftMetric::Psi.default_band();
            assert_eq!(band.status(got) != DriftStatus::Ok, drifted, "psi {got}");
            let d = ks(&r, &c).expect("ks");
            assert_eq!(d >= 0.1, drifted, "ks {d}");
        }
        assert_eq!(psi(&r, &sketch([])), None);
    }

    #[test]
    fn js_is_zero_for_equal_shares_and_one_for_disjoint_ones() {
        let counts = |pairs: &[(&str, u64)]| -> Vec<(String, u64)> {
            pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
        };
        let a = counts(&[("x", 10), ("y", 30)]);
        assert_eq!(js(&a, &counts(&[("y", 3), ("x", 1)])), Some(0.0));
        assert_eq!(js(&a, &counts(&[("z", 5)])), Some(1.0));
        let half = js(&counts(&[("x", 1)]), &counts(&[("x", 1), ("z", 1)])).expect("js");
        // p = (1, 0), q = (1/2, 1/2), m = (3/4, 1/4): exact value by hand.
        let expected =
            0.5 * (1.0f64 / 0.75).log2() + 0.5 * (0.5 * (0.5f64 / 0.75).log2() + 0.5 * 2f64.log2());
        assert!((half - expected).abs() < 1e-12, "{half} vs {expected}");
        assert_eq!(js(&a, &[]), None);
    }
}
