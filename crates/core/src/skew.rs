//! The skew report's rules: how one logged online value compares with the point-in-time join
//! recomputed offline at `t = served_at` (docs/MONITORING.md, "Skew report"), and the per
//! feature tally. Pure logic: the server reads the log and runs the join.

use serde::Serialize;

use crate::semantics::FeatureStatus;
use crate::types::Micros;
use crate::value::Value;

/// Why a logged value and the offline value disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkewCause {
    /// Both present, different values (exact on the stored type).
    ValueDiffers,
    /// Online served a value (PRESENT); offline has none (no row, or a null value).
    OnlinePresentOfflineNull,
    /// Online served no value (NULL_VALUE or NOT_FOUND); offline has one.
    OnlineNullOfflinePresent,
    /// Online said OUTSIDE_MAX_AGE; offline has a value within the TTL.
    OutsideMaxAgeOfflineValue,
}

impl SkewCause {
    pub const ALL: [SkewCause; 4] = [
        SkewCause::ValueDiffers,
        SkewCause::OnlinePresentOfflineNull,
        SkewCause::OnlineNullOfflinePresent,
        SkewCause::OutsideMaxAgeOfflineValue,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SkewCause::ValueDiffers => "value_differs",
            SkewCause::OnlinePresentOfflineNull => "online_present_offline_null",
            SkewCause::OnlineNullOfflinePresent => "online_null_offline_present",
            SkewCause::OutsideMaxAgeOfflineValue => "outside_max_age_offline_value",
        }
    }
}

/// What was served for one value, as logged.
#[derive(Debug, Clone, Copy)]
pub struct Served<'a> {
    pub status: FeatureStatus,
    pub value: &'a Value,
    /// The served row's event time (None when no row was found).
    pub event_time: Option<Micros>,
    pub served_at: Micros,
}

/// What the offline join found for the same key at `t = served_at`.
#[derive(Debug, Clone, Copy)]
pub struct Offline<'a> {
    pub value: &'a Value,
    /// The chosen row's event time (None when no row was a candidate).
    pub event_time: Option<Micros>,
}

/// The verdict on one value: `None` when they agree, else the cause, and whether the skew is
/// expected by construction: online served a row that the offline data did not hold (as
/// known at `served_at`), younger than `expected_lag` at serving time (pushed online before
/// the offline data caught up).
pub fn compare(
    served: Served<'_>,
    offline: Offline<'_>,
    expected_lag: Micros,
) -> Option<(SkewCause, bool)> {
    let cause = match served.status {
        FeatureStatus::Present if offline.value.is_null() => SkewCause::OnlinePresentOfflineNull,
        FeatureStatus::Present if !same_value(served.value, offline.value) => {
            SkewCause::ValueDiffers
        }
        FeatureStatus::Present => return None,
        FeatureStatus::NullValue | FeatureStatus::NotFound if !offline.value.is_null() => {
            SkewCause::OnlineNullOfflinePresent
        }
        FeatureStatus::OutsideMaxAge if !offline.value.is_null() => {
            SkewCause::OutsideMaxAgeOfflineValue
        }
        _ => return None,
    };
    let expected = served.event_time.is_some_and(|online| {
        let offline_lacks_it = offline.event_time.is_none_or(|o| o < online);
        offline_lacks_it && served.served_at.saturating_sub(online) <= expected_lag
    });
    Some((cause, expected))
}

/// Exact equality on the stored type: floats by their bits (a float32 as float32), lists
/// element by element.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float32(x), Value::Float32(y)) => x.to_bits() == y.to_bits(),
        (Value::Float64(x), Value::Float64(y)) => x.to_bits() == y.to_bits(),
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        _ => a == b,
    }
}

/// Most example keys kept per feature and cause.
pub const EXAMPLES: usize = 3;

/// One feature's tally.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FeatureSkew {
    pub feature: String,
    pub compared: u64,
    pub matches: u64,
    /// Real skew: mismatches not expected by construction.
    pub mismatches: u64,
    /// Mismatches expected by construction (see [`compare`]), not in `mismatches`.
    pub expected: u64,
    /// Real mismatches per cause, in [`SkewCause::ALL`] order.
    pub causes: [u64; 4],
    /// Up to [`EXAMPLES`] examples per cause (real skew first).
    pub examples: Vec<SkewExample>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkewExample {
    pub cause: SkewCause,
    pub expected: bool,
    /// The entity key, like `user_id=1001`.
    pub key: String,
    pub served_at: Micros,
    pub online: String,
    pub offline: String,
}

impl FeatureSkew {
    pub fn new(feature: impl Into<String>) -> FeatureSkew {
        FeatureSkew {
            feature: feature.into(),
            ..FeatureSkew::default()
        }
    }

    /// Counts one comparison; `example` builds the example when one is still wanted.
    pub fn add(
        &mut self,
        verdict: Option<(SkewCause, bool)>,
        example: impl FnOnce() -> (String, Micros, String, String),
    ) {
        self.compared += 1;
        let Some((cause, expected)) = verdict else {
            self.matches += 1;
            return;
        };
        if expected {
            self.expected += 1;
        } else {
            self.mismatches += 1;
            self.causes[cause as usize] += 1;
        }
        let kept = self
            .examples
            .iter()
            .filter(|e| e.cause == cause && e.expected == expected)
            .count();
        if kept < EXAMPLES {
            let (key, served_at, online, offline) = example();
            self.examples.push(SkewExample {
                cause,
                expected,
                key,
                served_at,
                online,
                offline,
            });
        }
    }

    pub fn cause_count(&self, cause: SkewCause) -> u64 {
        self.causes[cause as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(status: FeatureStatus, value: &Value, event: Option<i64>) -> Served<'_> {
        Served {
            status,
            value,
            event_time: event,
            served_at: 100,
        }
    }

    #[test]
    fn each_status_against_offline_values() {
        use FeatureStatus::*;
        let (one, two, null) = (Value::Int64(1), Value::Int64(2), Value::Null);
        let off = |value, event| Offline {
            value,
            event_time: event,
        };
        let cases = [
            (served(Present, &one, Some(90)), off(&one, Some(90)), None),
            (
                served(Present, &one, Some(90)),
                off(&two, Some(90)),
                Some(SkewCause::ValueDiffers),
            ),
            (
                served(Present, &one, Some(90)),
                off(&null, None),
                Some(SkewCause::OnlinePresentOfflineNull),
            ),
            (
                served(NullValue, &null, Some(90)),
                off(&null, Some(90)),
                None,
            ),
            (
                served(NullValue, &null, Some(90)),
                off(&one, Some(90)),
                Some(SkewCause::OnlineNullOfflinePresent),
            ),
            (served(NotFound, &null, None), off(&null, None), None),
            (
                served(NotFound, &null, None),
                off(&one, Some(50)),
                Some(SkewCause::OnlineNullOfflinePresent),
            ),
            (
                served(OutsideMaxAge, &null, Some(10)),
                off(&null, None),
                None,
            ),
            (
                served(OutsideMaxAge, &null, Some(10)),
                off(&one, Some(60)),
                Some(SkewCause::OutsideMaxAgeOfflineValue),
            ),
        ];
        for (i, (s, o, want)) in cases.into_iter().enumerate() {
            assert_eq!(compare(s, o, 0).map(|(c, _)| c), want, "case {i}");
        }
    }

    #[test]
    fn fresh_online_rows_the_offline_data_lacks_are_expected_within_the_lag() {
        let (one, two) = (Value::Int64(1), Value::Int64(2));
        let pushed = served(FeatureStatus::Present, &one, Some(95));
        let older = Offline {
            value: &two,
            event_time: Some(80),
        };
        assert_eq!(
            compare(pushed, older, 10),
            Some((SkewCause::ValueDiffers, true))
        );
        // Older than the lag, or offline holds the same event: real skew.
        assert_eq!(
            compare(pushed, older, 4),
            Some((SkewCause::ValueDiffers, false))
        );
        let same_event = Offline {
            value: &two,
            event_time: Some(95),
        };
        assert_eq!(
            compare(pushed, same_event, 10),
            Some((SkewCause::ValueDiffers, false))
        );
    }

    #[test]
    fn floats_compare_exactly_on_their_stored_type() {
        assert!(same_value(&Value::Float32(0.1), &Value::Float32(0.1)));
        assert!(!same_value(
            &Value::Float32(0.1),
            &Value::Float64(0.1f32 as f64)
        ));
        assert!(same_value(
            &Value::Float64(f64::NAN),
            &Value::Float64(f64::NAN)
        ));
        assert!(!same_value(&Value::Float64(0.0), &Value::Float64(-0.0)));
        let list = |v: f32| Value::List(vec![Value::Float32(v), Value::Null]);
        assert!(same_value(&list(1.5), &list(1.5)));
        assert!(!same_value(&list(1.5), &list(2.5)));
    }

    #[test]
    fn the_tally_splits_real_from_expected_and_keeps_few_examples() {
        let mut tally = FeatureSkew::new("f");
        let example = || ("k=1".to_string(), 5, "1".to_string(), "2".to_string());
        tally.add(None, example);
        for _ in 0..5 {
            tally.add(Some((SkewCause::ValueDiffers, false)), example);
        }
        tally.add(Some((SkewCause::ValueDiffers, true)), example);
        assert_eq!(
            (
                tally.compared,
                tally.matches,
                tally.mismatches,
                tally.expected
            ),
            (7, 1, 5, 1)
        );
        assert_eq!(tally.cause_count(SkewCause::ValueDiffers), 5);
        assert_eq!(tally.examples.len(), EXAMPLES + 1);
    }
}
