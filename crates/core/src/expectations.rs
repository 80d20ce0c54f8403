//! Feature expectations (`monitoring.expectations` on a view) and the rules a value is
//! checked against, row by row, on push. `on_violation` says what a violating push gets:
//! `warn` (the default: written, and counted) or `reject` (INVALID_ARGUMENT naming the row,
//! the column and the rule).
//!
//! ```yaml
//! monitoring:
//!   on_violation: reject
//!   expectations:
//!     conv_rate: {not_null: true, min: 0, max: 1}
//!     vehicle_type: {allowed: [sedan, suv, van, bike]}
//!     embedding: {list_length: {min: 8, max: 8}}
//!     acc_rate: {max_null_fraction: 0.1}      # over a push batch
//! ```

use serde::{Deserialize, Serialize};

use crate::types::{ScalarType, ValueType};
use crate::value::Value;

/// The rules of one feature. `min`/`max` bound numbers (and the elements of numeric lists);
/// `allowed` lists the values of a string, integer or bytes (hex) feature.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectation {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub not_null: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list_length: Option<LengthBounds>,
    /// The largest fraction of nulls in one push batch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_null_fraction: Option<f64>,
}

// Numbers are checked finite when parsed (and JSON has no NaN), so equality is total.
impl Eq for Expectation {}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthBounds {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u32>,
}

/// What a violating push gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    #[default]
    Warn,
    Reject,
}

impl OnViolation {
    pub fn name(self) -> &'static str {
        match self {
            OnViolation::Warn => "warn",
            OnViolation::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    NotNull,
    Min,
    Max,
    Allowed,
    ListLength,
    MaxNullFraction,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::NotNull => "not_null",
            Rule::Min => "min",
            Rule::Max => "max",
            Rule::Allowed => "allowed",
            Rule::ListLength => "list_length",
            Rule::MaxNullFraction => "max_null_fraction",
        }
    }
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int32(v) => Some(f64::from(*v)),
        Value::Int64(v) => Some(*v as f64),
        Value::Float32(v) => Some(f64::from(*v)),
        Value::Float64(v) => Some(*v),
        Value::Timestamp(v) => Some(*v as f64),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Int32(v) => Some(v.to_string()),
        Value::Int64(v) => Some(v.to_string()),
        Value::Bytes(b) => Some(crate::fingerprint::hex(b)),
        _ => None,
    }
}

impl Expectation {
    /// The first row rule `value` breaks (`max_null_fraction` is a batch rule: see
    /// [`Expectation::null_fraction_ok`]). NaN is outside every `min`/`max`.
    pub fn check(&self, value: &Value) -> Option<Rule> {
        if value.is_null() {
            return self.not_null.then_some(Rule::NotNull);
        }
        if let Value::List(items) = value {
            if let Some(rule) = self.length_rule(items.len() as u64) {
                return Some(rule);
            }
            return items
                .iter()
                .find_map(|item| number(item).and_then(|v| self.number_rule(v)));
        }
        if self.allowed.is_some()
            && let Some(rule) = text(value).and_then(|text| self.text_rule(&text))
        {
            return Some(rule);
        }
        number(value).and_then(|v| self.number_rule(v))
    }

    /// `min`/`max` on a number (a timestamp as micros, a list element): NaN breaks both.
    pub fn number_rule(&self, v: f64) -> Option<Rule> {
        if self.min.is_some_and(|m| v.is_nan() || v < m) {
            return Some(Rule::Min);
        }
        if self.max.is_some_and(|m| v.is_nan() || v > m) {
            return Some(Rule::Max);
        }
        None
    }

    /// `allowed` on the text of a string, an integer or bytes (lowercase hex).
    pub fn text_rule(&self, text: &str) -> Option<Rule> {
        match &self.allowed {
            Some(allowed) if !allowed.iter().any(|a| a == text) => Some(Rule::Allowed),
            _ => None,
        }
    }

    /// `list_length` on the length of a non-null list.
    pub fn length_rule(&self, len: u64) -> Option<Rule> {
        let bounds = self.list_length?;
        (bounds.min.is_some_and(|m| len < u64::from(m))
            || bounds.max.is_some_and(|m| len > u64::from(m)))
        .then_some(Rule::ListLength)
    }

    /// Whether `nulls` of `rows` respects `max_null_fraction`.
    pub fn null_fraction_ok(&self, nulls: usize, rows: usize) -> bool {
        match self.max_null_fraction {
            Some(max) if rows > 0 => nulls as f64 / rows as f64 <= max,
            _ => true,
        }
    }

    /// Why these rules cannot apply to a feature of `value_type`, if they cannot.
    pub fn problem(&self, value_type: ValueType) -> Option<String> {
        let numeric = !matches!(
            value_type.scalar,
            ScalarType::Bool | ScalarType::String | ScalarType::Bytes
        );
        let countable = matches!(
            value_type.scalar,
            ScalarType::String | ScalarType::Bytes | ScalarType::Int32 | ScalarType::Int64
        );
        let finite = [self.min, self.max, self.max_null_fraction]
            .into_iter()
            .flatten()
            .all(f64::is_finite);
        if !finite {
            return Some("`min`, `max` and `max_null_fraction` must be finite numbers".into());
        }
        if (self.min.is_some() || self.max.is_some()) && !numeric {
            return Some(format!(
                "`min`/`max` bound numbers; this feature is {value_type}"
            ));
        }
        if self.allowed.is_some() && (value_type.list || !countable) {
            return Some(format!(
                "`allowed` lists string, integer or bytes values; this feature is {value_type}"
            ));
        }
        if self.list_length.is_some() && !value_type.list {
            return Some(format!(
                "`list_length` bounds lists; this feature is {value_type}"
            ));
        }
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Some(format!("`min` ({min}) is above `max` ({max})"));
        }
        self.max_null_fraction
            .filter(|f| !(0.0..=1.0).contains(f))
            .map(|_| "`max_null_fraction` is a fraction between 0 and 1".to_string())
    }

    /// The rules declared.
    pub fn rules(&self) -> Vec<Rule> {
        [
            (self.not_null, Rule::NotNull),
            (self.min.is_some(), Rule::Min),
            (self.max.is_some(), Rule::Max),
            (self.allowed.is_some(), Rule::Allowed),
            (self.list_length.is_some(), Rule::ListLength),
            (self.max_null_fraction.is_some(), Rule::MaxNullFraction),
        ]
        .into_iter()
        .filter_map(|(declared, rule)| declared.then_some(rule))
        .collect()
    }

    /// The rules as plan text: `not_null, min 0, max 1`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.not_null {
            parts.push("not_null".to_string());
        }
        if let Some(m) = self.min {
            parts.push(format!("min {m}"));
        }
        if let Some(m) = self.max {
            parts.push(format!("max {m}"));
        }
        if let Some(allowed) = &self.allowed {
            parts.push(format!("allowed [{}]", allowed.join(", ")));
        }
        if let Some(b) = self.list_length {
            let bound = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
            parts.push(format!("list_length {}..{}", bound(b.min), bound(b.max)));
        }
        if let Some(f) = self.max_null_fraction {
            parts.push(format!("max_null_fraction {f}"));
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_catches_its_values_and_passes_the_rest() {
        let e = Expectation {
            not_null: true,
            min: Some(0.0),
            max: Some(1.0),
            ..Expectation::default()
        };
        assert_eq!(e.check(&Value::Null), Some(Rule::NotNull));
        assert_eq!(e.check(&Value::Float32(-0.5)), Some(Rule::Min));
        assert_eq!(e.check(&Value::Float64(1.5)), Some(Rule::Max));
        assert_eq!(e.check(&Value::Float64(f64::NAN)), Some(Rule::Min));
        assert_eq!(e.check(&Value::Float64(1.0)), None);
        let allowed = Expectation {
            allowed: Some(vec!["a".into(), "7".into()]),
            ..Expectation::default()
        };
        assert_eq!(
            allowed.check(&Value::String("b".into())),
            Some(Rule::Allowed)
        );
        assert_eq!(allowed.check(&Value::Int64(7)), None);
        assert_eq!(allowed.check(&Value::Null), None);
        let list = Expectation {
            list_length: Some(LengthBounds {
                min: Some(2),
                max: Some(2),
            }),
            max: Some(10.0),
            ..Expectation::default()
        };
        let floats = |v: &[f32]| Value::List(v.iter().map(|x| Value::Float32(*x)).collect());
        assert_eq!(list.check(&floats(&[1.0])), Some(Rule::ListLength));
        assert_eq!(list.check(&floats(&[1.0, 11.0])), Some(Rule::Max));
        assert_eq!(list.check(&floats(&[1.0, 2.0])), None);
        let nulls = Expectation {
            max_null_fraction: Some(0.25),
            ..Expectation::default()
        };
        assert!(nulls.null_fraction_ok(1, 4) && !nulls.null_fraction_ok(2, 4));
    }

    #[test]
    fn rules_must_fit_the_feature_type() {
        let t = |s: &str| ValueType::parse(s).expect("type");
        let min = Expectation {
            min: Some(1.0),
            ..Expectation::default()
        };
        assert!(min.problem(t("float32")).is_none());
        assert!(min.problem(t("string")).is_some());
        let allowed = Expectation {
            allowed: Some(vec![]),
            ..Expectation::default()
        };
        assert!(allowed.problem(t("float64")).is_some());
        let length = Expectation {
            list_length: Some(LengthBounds::default()),
            ..Expectation::default()
        };
        assert!(length.problem(t("list<float32>")).is_none());
        assert!(length.problem(t("int64")).is_some());
        let fraction = Expectation {
            max_null_fraction: Some(2.0),
            ..Expectation::default()
        };
        assert!(fraction.problem(t("int64")).is_some());
    }
}
