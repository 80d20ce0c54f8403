//! What a feature service declares under `logging:`: which served rows the server logs, and
//! the lag by which offline data is expected to trail pushes (the skew report's "expected"
//! bucket). Logging settings are metadata: changing them never makes a new version.
//!
//! ```yaml
//! logging:
//!   sample_rate: 0.05     # log the rows of 5 % of the entity keys, every request
//!   expected_lag: 10m     # skew on rows younger than this at serving time is expected
//!   skew_check: {every: 1h, window: 1h, sample: 10000}   # a scheduled skew report
//! ```
//!
//! Sampling is by entity key: [`key_hash`] over the row's join keys decides, the same way in
//! every process and release, so a sampled key is logged on every request that reads it.

use serde::{Deserialize, Serialize};

use crate::types::Micros;
use crate::value::KeyValue;

/// A service's `logging:` block.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoggingSpec {
    /// The fraction of entity keys whose served rows are logged, in `[0, 1]`.
    pub sample_rate: f64,
    /// Skew on a value whose event time is younger than this at serving time, and that the
    /// offline data does not hold yet, is expected by construction (pushed online first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expected_lag: Micros,
    /// A skew report the server runs in the background, exported as metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_check: Option<SkewCheck>,
}

/// `skew_check: {every: 1h, window: 1h, sample: 10000}`: every `every`, the skew report of
/// the last `window` of the log, at most `sample` rows (0: all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkewCheck {
    pub every: Micros,
    pub window: Micros,
    pub sample: u64,
}

/// The default `skew_check.sample`.
pub const DEFAULT_SKEW_SAMPLE: u64 = 10_000;

fn is_zero(micros: &Micros) -> bool {
    *micros == 0
}

// The rate is checked finite when parsed (and JSON has no NaN), so equality is total.
impl Eq for LoggingSpec {}

impl LoggingSpec {
    /// Why `sample_rate` cannot be used, if it cannot.
    pub fn rate_problem(rate: f64) -> Option<String> {
        (!(0.0..=1.0).contains(&rate))
            .then(|| format!("`{rate}` is not a fraction; give a number from 0.0 to 1.0"))
    }

    /// Plan properties (`logging.*`).
    pub fn properties(&self) -> impl Iterator<Item = (String, String)> {
        let lag = (self.expected_lag > 0).then(|| {
            (
                "logging.expected_lag".to_string(),
                crate::types::format_duration(self.expected_lag),
            )
        });
        let check = self.skew_check.map(|c| {
            (
                "logging.skew_check".to_string(),
                format!(
                    "every {}, window {}, sample {}",
                    crate::types::format_duration(c.every),
                    crate::types::format_duration(c.window),
                    c.sample
                ),
            )
        });
        std::iter::once((
            "logging.sample_rate".to_string(),
            self.sample_rate.to_string(),
        ))
        .chain(lag)
        .chain(check)
    }
}

/// The threshold of [`is_sampled`] for `rate`: a key is sampled when its hash is below it.
pub fn sample_threshold(rate: f64) -> u64 {
    if rate >= 1.0 {
        u64::MAX
    } else if rate <= 0.0 || rate.is_nan() {
        0
    } else {
        // Exact enough: 2^64 * rate, truncated; 1.0 is handled above.
        (rate * 18_446_744_073_709_551_616.0) as u64
    }
}

/// Whether the row with key hash `hash` is logged under `threshold` ([`sample_threshold`]).
pub fn is_sampled(hash: u64, threshold: u64) -> bool {
    threshold == u64::MAX || hash < threshold
}

/// A stable 64-bit hash of an entity row's join keys (given in a fixed order, the service's
/// join-key order): FNV-1a over a self-delimiting encoding, then the SplitMix64 finalizer so
/// that every bit depends on every input byte. Persisted behaviour: sampled keys must stay
/// sampled across restarts and releases (pinned by a test).
pub fn key_hash<'a>(keys: impl IntoIterator<Item = &'a KeyValue>) -> u64 {
    let mut hash = Fnv::default();
    for key in keys {
        match key {
            KeyValue::Int64(v) => hash.write(1, &v.to_le_bytes()),
            KeyValue::Int32(v) => hash.write(2, &v.to_le_bytes()),
            KeyValue::String(v) => hash.write(3, v.as_bytes()),
            KeyValue::Bytes(v) => hash.write(4, v),
        }
    }
    splitmix(hash.0)
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, tag: u8, bytes: &[u8]) {
        let len = (bytes.len() as u64).to_le_bytes();
        for byte in std::iter::once(&tag).chain(&len).chain(bytes) {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hashes_are_pinned() {
        // Changing these changes which keys are logged: never do it. The values were
        // computed by an independent Python implementation of the same definition.
        assert_eq!(key_hash(&[KeyValue::Int64(1001)]), 0xf769_937b_85f6_57f7);
        assert_eq!(
            key_hash(&[KeyValue::String("a".into()), KeyValue::Int32(7)]),
            0x1b65_aa89_4024_9c5c
        );
        // Self-delimiting: ("ab", "") and ("a", "b") differ.
        let split =
            |a: &str, b: &str| key_hash(&[KeyValue::String(a.into()), KeyValue::String(b.into())]);
        assert_ne!(split("ab", ""), split("a", "b"));
    }

    #[test]
    fn the_sampled_fraction_follows_the_rate() {
        for rate in [0.0, 0.01, 0.1, 0.5, 1.0] {
            let threshold = sample_threshold(rate);
            let n = 100_000;
            let sampled = (0..n)
                .filter(|i| is_sampled(key_hash(&[KeyValue::Int64(*i)]), threshold))
                .count();
            let fraction = sampled as f64 / n as f64;
            // Binomial: 5 standard deviations at most.
            let sd = (rate * (1.0 - rate) / n as f64).sqrt();
            assert!(
                (fraction - rate).abs() <= 5.0 * sd + 1e-12,
                "{rate}: {fraction}"
            );
        }
    }

    #[test]
    fn rates_outside_zero_to_one_are_refused() {
        assert!(LoggingSpec::rate_problem(1.5).is_some());
        assert!(LoggingSpec::rate_problem(-0.1).is_some());
        assert!(LoggingSpec::rate_problem(f64::NAN).is_some());
        assert!(LoggingSpec::rate_problem(0.25).is_none());
    }
}
