//! Numbers: exact count, min, max, mean and sample standard deviation (Welford), a KLL sketch
//! for quantiles, CDFs and the histogram.

use datasketches::common::SearchCriteria;
use datasketches::kll::{KllFloat, KllSketch};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// KLL's accuracy parameter: normalized rank error about 1.65 % (99 % confidence).
const KLL_K: u16 = 200;
/// The quantiles a summary lists.
pub const QUANTILE_RANKS: [f64; 7] = [0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99];
/// Equal-width bins between min and max.
pub const HISTOGRAM_BINS: usize = 10;

type Sketch = KllSketch<KllFloat<f64>>;

/// Accumulates numbers; NaN and infinities are counted apart and left out of the rest.
#[derive(Debug, Clone)]
pub struct NumericAcc {
    non_finite: u64,
    n: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    sketch: Sketch,
}

impl Default for NumericAcc {
    fn default() -> Self {
        NumericAcc {
            non_finite: 0,
            n: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sketch: Sketch::new(KLL_K).unwrap_or_default(),
        }
    }
}

impl NumericAcc {
    pub fn add(&mut self, value: f64) {
        let item = match KllFloat::<f64>::new(value) {
            Ok(item) if value.is_finite() => item,
            _ => {
                self.non_finite += 1;
                return;
            }
        };
        self.n += 1;
        let delta = value - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (value - self.mean);
        self.min = self.min.min(value);
        self.max = self.max.max(value);
        self.sketch.update(item);
    }

    /// Adds everything `other` saw (Chan et al.'s pairwise update for the moments; the
    /// sketches merge).
    pub fn merge(&mut self, other: &NumericAcc) {
        self.non_finite += other.non_finite;
        if other.n == 0 {
            return;
        }
        let n = self.n + other.n;
        let delta = other.mean - self.mean;
        self.mean += delta * other.n as f64 / n as f64;
        self.m2 += other.m2 + delta * delta * (self.n as f64 * other.n as f64 / n as f64);
        self.n = n;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        // Same k on both sides; a total weight past u64::MAX cannot be reached by counting rows.
        let _ = self.sketch.merge(&other.sketch);
    }

    pub fn finish(self) -> NumericSummary {
        let n = self.n;
        let has = n > 0;
        let mut summary = NumericSummary {
            count: n,
            non_finite: self.non_finite,
            min: has.then_some(self.min),
            max: has.then_some(self.max),
            mean: has.then_some(self.mean),
            stddev: (n > 1).then(|| (self.m2 / (n - 1) as f64).sqrt()),
            quantiles: Vec::new(),
            histogram: Vec::new(),
            sketch: self.sketch.serialize(),
        };
        if has {
            summary.quantiles = quantiles(&self.sketch);
            summary.histogram = histogram(&self.sketch, self.min, self.max, n);
        }
        summary
    }
}

fn quantiles(sketch: &Sketch) -> Vec<Quantile> {
    let values = sketch
        .quantiles(&QUANTILE_RANKS, SearchCriteria::Inclusive)
        .ok()
        .flatten()
        .unwrap_or_default();
    QUANTILE_RANKS
        .iter()
        .zip(values)
        .map(|(rank, value)| Quantile {
            rank: *rank,
            value: value.into_inner(),
        })
        .collect()
}

/// Equal-width bins over [min, max]; counts from the sketch's CDF (exact while the sketch
/// holds every value, otherwise within its rank error), summing to `n`.
fn histogram(sketch: &Sketch, min: f64, max: f64, n: u64) -> Vec<Bin> {
    if min >= max {
        return vec![Bin {
            lower: min,
            upper: max,
            count: n,
        }];
    }
    let width = (max - min) / HISTOGRAM_BINS as f64;
    let edges: Vec<f64> = (0..=HISTOGRAM_BINS)
        .map(|i| {
            if i == HISTOGRAM_BINS {
                max
            } else {
                min + width * i as f64
            }
        })
        .collect();
    let splits: Vec<KllFloat<f64>> = edges[1..HISTOGRAM_BINS]
        .iter()
        .filter_map(|e| KllFloat::<f64>::new(*e).ok())
        .collect();
    let cdf = sketch
        .cdf(&splits, SearchCriteria::Exclusive)
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut below = 0u64;
    let mut bins = Vec::with_capacity(HISTOGRAM_BINS);
    for i in 0..HISTOGRAM_BINS {
        let upto = match cdf.get(i) {
            Some(fraction) if i + 1 < HISTOGRAM_BINS => (fraction * n as f64).round() as u64,
            _ => n,
        }
        .clamp(below, n);
        bins.push(Bin {
            lower: edges[i],
            upper: edges[i + 1],
            count: upto - below,
        });
        below = upto;
    }
    bins
}

/// What a profile keeps of a numeric column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericSummary {
    /// Finite values.
    pub count: u64,
    /// NaN and infinite values (not in the other figures).
    pub non_finite: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub mean: Option<f64>,
    /// Sample standard deviation (n - 1), like pandas and SQL's `stddev`.
    pub stddev: Option<f64>,
    pub quantiles: Vec<Quantile>,
    pub histogram: Vec<Bin>,
    /// The KLL sketch (DataSketches `kll_sketch<double>` serial format).
    #[serde(with = "crate::b64")]
    pub sketch: Vec<u8>,
}

impl NumericSummary {
    pub(crate) fn sketch(&self, what: &str) -> Result<KllSketch<KllFloat<f64>>> {
        Sketch::deserialize(&self.sketch).map_err(|e| Error::Sketch {
            what: what.to_string(),
            message: e.to_string(),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Quantile {
    pub rank: f64,
    pub value: f64,
}

/// `[lower, upper)`, the last bin closed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Bin {
    pub lower: f64,
    pub upper: f64,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The slow reference: sort everything.
    fn reference(values: &[f64]) -> (f64, f64, f64, f64) {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        (min, max, mean, var.sqrt())
    }

    #[test]
    fn moments_are_exact_and_quantiles_within_the_sketch_error() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut values: Vec<f64> = (0..50_000)
            .map(|_| rng.random::<f64>() * 100.0 - 20.0)
            .collect();
        let mut acc = NumericAcc::default();
        for v in &values {
            acc.add(*v);
        }
        acc.add(f64::NAN);
        acc.add(f64::INFINITY);
        let summary = acc.finish();
        let (min, max, mean, sd) = reference(&values);
        assert_eq!(summary.count, 50_000);
        assert_eq!(summary.non_finite, 2);
        assert_eq!((summary.min, summary.max), (Some(min), Some(max)));
        assert!((summary.mean.unwrap_or(0.0) - mean).abs() < 1e-9);
        assert!((summary.stddev.unwrap_or(0.0) - sd).abs() < 1e-9);
        values.sort_by(f64::total_cmp);
        for q in &summary.quantiles {
            let exact = values[((q.rank * values.len() as f64) as usize).min(values.len() - 1)];
            let rank_of = values.partition_point(|v| *v <= q.value) as f64 / values.len() as f64;
            assert!(
                (rank_of - q.rank).abs() < 0.02,
                "q{} = {} (exact {exact})",
                q.rank,
                q.value
            );
        }
        let total: u64 = summary.histogram.iter().map(|b| b.count).sum();
        assert_eq!(total, 50_000);
        for bin in &summary.histogram {
            let exact = values
                .iter()
                .filter(|v| **v >= bin.lower && **v < bin.upper)
                .count();
            assert!(
                (bin.count as f64 - exact as f64).abs() < 0.02 * 50_000.0,
                "{bin:?} vs {exact}"
            );
        }
    }

    #[test]
    fn small_inputs_are_exact_and_empty_ones_have_no_figures() {
        let mut acc = NumericAcc::default();
        for v in [1.0, 2.0, 2.0, 10.0] {
            acc.add(v);
        }
        let summary = acc.finish();
        assert_eq!(summary.quantiles[3].value, 2.0);
        assert_eq!(summary.histogram[0].count, 1);
        assert_eq!(summary.histogram[1].count, 2);
        assert_eq!(summary.histogram[9].count, 1);
        let empty = NumericAcc::default().finish();
        assert_eq!((empty.count, empty.min, empty.stddev), (0, None, None));
        assert!(empty.histogram.is_empty());
    }
}
