//! Strings and bytes: a distinct-count estimate (HLL) and the most frequent values with their
//! counts (DataSketches' frequent-items sketch: exact while fewer than ~768 distinct values
//! have been seen, otherwise within its documented error).

use datasketches::frequencies::{ErrorType, FrequentItemsSketch};
use datasketches::hll::{HllSketch, HllType};
use serde::{Deserialize, Serialize};

/// HLL precision: 2^12 buckets, about 1.6 % relative error.
const HLL_LG_K: u8 = 12;
/// Frequent-items map size (a power of 2).
const FREQUENT_MAP: usize = 1024;
/// How many frequent values a summary keeps.
pub const TOP_KEPT: usize = 256;

#[derive(Debug)]
pub struct CategoricalAcc {
    count: u64,
    hll: Option<HllSketch>,
    frequent: Option<FrequentItemsSketch<String>>,
}

impl Default for CategoricalAcc {
    fn default() -> Self {
        CategoricalAcc {
            count: 0,
            hll: HllSketch::new(HLL_LG_K, HllType::Hll8).ok(),
            frequent: FrequentItemsSketch::new(FREQUENT_MAP).ok(),
        }
    }
}

impl CategoricalAcc {
    /// Adds everything `other` saw (HLL union, frequent-items merge).
    pub fn merge(&mut self, other: &CategoricalAcc) {
        self.count += other.count;
        if let (Some(hll), Some(theirs)) = (&mut self.hll, &other.hll)
            && let Ok(mut union) = datasketches::hll::HllUnion::new(HLL_LG_K)
        {
            union.update(hll);
            union.update(theirs);
            *hll = union.to_sketch(HllType::Hll8);
        }
        if let (Some(frequent), Some(theirs)) = (&mut self.frequent, &other.frequent) {
            frequent.merge(theirs);
        }
    }

    pub fn add(&mut self, value: &str) {
        self.count += 1;
        if let Some(hll) = &mut self.hll {
            hll.update(value);
        }
        if let Some(frequent) = &mut self.frequent {
            frequent.update_ref(value);
        }
    }

    pub fn finish(self) -> CategoricalSummary {
        let mut top: Vec<Item> = self
            .frequent
            .map(|f| {
                f.frequent_items(ErrorType::NoFalseNegatives)
                    .into_iter()
                    .map(|row| Item {
                        value: row.item().clone(),
                        count: row.estimate(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
        top.truncate(TOP_KEPT);
        let distinct = self.hll.as_ref().map(HllSketch::estimate).unwrap_or(0.0);
        CategoricalSummary {
            count: self.count,
            distinct: distinct.round(),
            top,
            hll: self.hll.map(|h| h.serialize()).unwrap_or_default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalSummary {
    /// Non-null values.
    pub count: u64,
    /// Estimated number of distinct values.
    pub distinct: f64,
    /// The most frequent values, most frequent first (ties by value).
    pub top: Vec<Item>,
    /// The HLL sketch (DataSketches `hll_sketch` serial format, HLL_8, lg_k 12).
    #[serde(with = "crate::b64")]
    pub hll: Vec<u8>,
}

impl CategoricalSummary {
    /// Values outside `top`.
    pub fn other(&self) -> u64 {
        self.count
            .saturating_sub(self.top.iter().map(|i| i.count).sum::<u64>())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub value: String,
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_exact_for_few_values_and_distinct_is_estimated() {
        let mut acc = CategoricalAcc::default();
        for i in 0..10_000u32 {
            acc.add(&format!("v{}", i % 7));
        }
        let summary = acc.finish();
        assert_eq!(summary.count, 10_000);
        assert_eq!(summary.distinct, 7.0);
        assert_eq!(summary.top.len(), 7);
        assert_eq!(
            summary.top[0],
            Item {
                value: "v0".into(),
                count: 1429
            }
        );
        assert_eq!(summary.other(), 0);
        let mut many = CategoricalAcc::default();
        for i in 0..100_000u32 {
            many.add(&i.to_string());
        }
        let summary = many.finish();
        assert!(
            (summary.distinct - 100_000.0).abs() < 5_000.0,
            "{}",
            summary.distinct
        );
        assert!(summary.top.len() <= TOP_KEPT);
    }
}
