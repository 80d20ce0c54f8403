//! Expectation violations over Arrow columns, counted as a push counts them: each value once,
//! for the first rule it breaks, in the order of `Expectation::check` (`not_null`, then
//! `list_length` or `allowed`, then `min`/`max`; a list's elements after its length).
//! `max_null_fraction` is a rule over the whole set of rows: it counts 1 when the profiled
//! rows have more nulls than it allows.
//!
//! Columnar: numbers are cast to Float64 once per batch and strings read in place; only
//! integers under `allowed` are formatted. The unit tests check it against the row-wise
//! `Expectation::check`.

use std::collections::BTreeMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use quiver_core::expectations::{Expectation, Rule};
use quiver_core::types::{ScalarType, ValueType};

/// The violations of one feature's expectations.
#[derive(Debug)]
pub(crate) struct RuleCounts {
    rules: Expectation,
    counts: BTreeMap<Rule, u64>,
}

impl RuleCounts {
    pub(crate) fn new(rules: Expectation) -> Self {
        let counts = rules.rules().into_iter().map(|rule| (rule, 0)).collect();
        RuleCounts { rules, counts }
    }

    /// Counts the row rules over every value of `array`.
    pub(crate) fn add(
        &mut self,
        array: &ArrayRef,
        value_type: ValueType,
    ) -> std::result::Result<(), String> {
        if self.rules.not_null {
            self.bump(Rule::NotNull, array.logical_null_count() as u64);
        }
        let numeric = crate::builder::is_numeric(value_type.scalar);
        let bounded = self.rules.min.is_some() || self.rules.max.is_some();
        if value_type.list {
            return self.add_lists(array, numeric && bounded);
        }
        let allowed = self.rules.allowed.is_some();
        match value_type.scalar {
            ScalarType::Int32 | ScalarType::Int64 if allowed => {
                let values = cast(array, &DataType::Int64).map_err(|e| e.to_string())?;
                for v in values.as_primitive::<Int64Type>().iter().flatten() {
                    let rule = self
                        .rules
                        .text_rule(&v.to_string())
                        .or_else(|| self.rules.number_rule(v as f64));
                    self.count(rule);
                }
            }
            ScalarType::String if allowed => {
                let values = cast(array, &DataType::Utf8).map_err(|e| e.to_string())?;
                for v in values.as_string::<i32>().iter().flatten() {
                    self.count(self.rules.text_rule(v));
                }
            }
            ScalarType::Bytes if allowed => {
                let values = cast(array, &DataType::Binary).map_err(|e| e.to_string())?;
                for v in values.as_binary::<i32>().iter().flatten() {
                    let text = quiver_core::fingerprint::hex(v);
                    self.count(self.rules.text_rule(&text));
                }
            }
            _ if numeric && bounded => {
                let values = crate::builder::as_f64(array)?;
                for v in values.as_primitive::<Float64Type>().iter().flatten() {
                    self.count(self.rules.number_rule(v));
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn add_lists(&mut self, array: &ArrayRef, elements: bool) -> std::result::Result<(), String> {
        if self.rules.list_length.is_none() && !elements {
            return Ok(());
        }
        let list = crate::builder::as_list(array, elements)?;
        let list = list.as_list::<i32>();
        for i in 0..list.len() {
            if list.is_null(i) {
                continue;
            }
            let values = list.value(i);
            let mut rule = self.rules.length_rule(values.len() as u64);
            if rule.is_none() && elements {
                let values = crate::builder::as_f64(&values)?;
                rule = values
                    .as_primitive::<Float64Type>()
                    .iter()
                    .flatten()
                    .find_map(|v| self.rules.number_rule(v));
            }
            self.count(rule);
        }
        Ok(())
    }

    /// Adds `other`'s counts (of the same expectations).
    pub(crate) fn merge(&mut self, other: &RuleCounts) {
        for (rule, n) in &other.counts {
            self.bump(*rule, *n);
        }
    }

    fn count(&mut self, rule: Option<Rule>) {
        if let Some(rule) = rule {
            self.bump(rule, 1);
        }
    }

    fn bump(&mut self, rule: Rule, n: u64) {
        *self.counts.entry(rule).or_default() += n;
    }

    /// The counts per rule name, with `max_null_fraction` judged over all `count` rows.
    pub(crate) fn finish(mut self, nulls: u64, count: u64) -> BTreeMap<String, u64> {
        if !self.rules.null_fraction_ok(nulls as usize, count as usize) {
            self.bump(Rule::MaxNullFraction, 1);
        }
        self.counts
            .into_iter()
            .map(|(rule, n)| (rule.name().to_string(), n))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        BinaryArray, Float32Array, Int64Array, ListArray, StringArray, TimestampMicrosecondArray,
    };
    use arrow::datatypes::Float32Type;
    use quiver_core::expectations::LengthBounds;
    use quiver_core::value::Value;

    use super::*;

    /// The row-wise reference: `Expectation::check` on each value.
    fn reference(rules: &Expectation, values: &[Value]) -> BTreeMap<String, u64> {
        let mut counts = RuleCounts::new(rules.clone());
        for value in values {
            counts.count(rules.check(value));
        }
        let nulls = values.iter().filter(|v| v.is_null()).count() as u64;
        counts.finish(nulls, values.len() as u64)
    }

    fn columnar(
        rules: &Expectation,
        array: ArrayRef,
        value_type: &str,
    ) -> std::result::Result<BTreeMap<String, u64>, String> {
        let value_type = ValueType::parse(value_type).ok_or("a value type")?;
        let mut counts = RuleCounts::new(rules.clone());
        // In two batches, as scans deliver them.
        let half = array.len() / 2;
        counts.add(&array.slice(0, half), value_type)?;
        counts.add(&array.slice(half, array.len() - half), value_type)?;
        let nulls = array.logical_null_count() as u64;
        Ok(counts.finish(nulls, array.len() as u64))
    }

    fn bounds(min: f64, max: f64) -> Expectation {
        Expectation {
            not_null: true,
            min: Some(min),
            max: Some(max),
            max_null_fraction: Some(0.1),
            ..Expectation::default()
        }
    }

    #[test]
    fn numbers_count_as_the_row_check_does() -> std::result::Result<(), String> {
        let floats = [
            Some(0.5f32),
            None,
            Some(-1.0),
            Some(f32::NAN),
            Some(2.0),
            None,
        ];
        let rules = bounds(0.0, 1.0);
        let values: Vec<Value> = floats
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Float32))
            .collect();
        let array: ArrayRef = Arc::new(Float32Array::from(floats.to_vec()));
        let got = columnar(&rules, array, "float32")?;
        assert_eq!(got, reference(&rules, &values));
        assert_eq!(got["min"], 2, "-1 and NaN: {got:?}");
        assert_eq!(got["max"], 1);
        assert_eq!(got["not_null"], 2);
        assert_eq!(got["max_null_fraction"], 1);

        let micros = [Some(5i64), Some(50), None, Some(-3)];
        let rules = Expectation {
            min: Some(0.0),
            max: Some(10.0),
            ..Expectation::default()
        };
        let values: Vec<Value> = micros
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Timestamp))
            .collect();
        let array: ArrayRef =
            Arc::new(TimestampMicrosecondArray::from(micros.to_vec()).with_timezone("UTC"));
        assert_eq!(
            columnar(&rules, array, "timestamp")?,
            reference(&rules, &values)
        );
        Ok(())
    }

    #[test]
    fn allowed_values_come_before_bounds() -> std::result::Result<(), String> {
        let rules = Expectation {
            allowed: Some(vec!["1".into(), "2".into(), "300".into()]),
            max: Some(100.0),
            ..Expectation::default()
        };
        let ints = [Some(1i64), Some(3), Some(300), None, Some(2)];
        let values: Vec<Value> = ints
            .iter()
            .map(|v| v.map_or(Value::Null, Value::Int64))
            .collect();
        let got = columnar(&rules, Arc::new(Int64Array::from(ints.to_vec())), "int64")?;
        assert_eq!(got, reference(&rules, &values));
        assert_eq!((got["allowed"], got["max"]), (1, 1));

        let rules = Expectation {
            allowed: Some(vec!["sedan".into(), "suv".into(), "0aff".into()]),
            ..Expectation::default()
        };
        let strings = [Some("sedan"), Some("van"), None, Some("suv"), Some("bike")];
        let values: Vec<Value> = strings
            .iter()
            .map(|v| v.map_or(Value::Null, |s| Value::String(s.into())))
            .collect();
        let array: ArrayRef = Arc::new(StringArray::from(strings.to_vec()));
        let got = columnar(&rules, array, "string")?;
        assert_eq!(got, reference(&rules, &values));
        assert_eq!(got["allowed"], 2);

        let bytes: [Option<&[u8]>; 3] = [Some(&[0x0a, 0xff]), Some(&[1]), None];
        let values: Vec<Value> = bytes
            .iter()
            .map(|v| v.map_or(Value::Null, |b| Value::Bytes(b.to_vec())))
            .collect();
        let array: ArrayRef = Arc::new(BinaryArray::from(bytes.to_vec()));
        assert_eq!(
            columnar(&rules, array, "bytes")?,
            reference(&rules, &values)
        );
        Ok(())
    }

    #[test]
    fn lists_check_their_length_then_their_elements() -> std::result::Result<(), String> {
        let rules = Expectation {
            list_length: Some(LengthBounds {
                min: Some(2),
                max: Some(3),
            }),
            min: Some(0.0),
            max: Some(1.0),
            ..Expectation::default()
        };
        let lists = vec![
            Some(vec![Some(0.5f32), Some(0.25)]),
            Some(vec![Some(0.5)]),
            Some(vec![Some(0.5), None, Some(7.0)]),
            None,
            Some(vec![Some(-1.0), Some(9.0)]),
            Some(vec![]),
        ];
        let values: Vec<Value> = lists
            .iter()
            .map(|list| match list {
                None => Value::Null,
                Some(items) => Value::List(
                    items
                        .iter()
                        .map(|v| v.map_or(Value::Null, Value::Float32))
                        .collect(),
                ),
            })
            .collect();
        let array: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(lists));
        let got = columnar(&rules, array, "list<float32>")?;
        assert_eq!(got, reference(&rules, &values));
        assert_eq!((got["list_length"], got["min"], got["max"]), (2, 1, 1));
        Ok(())
    }
}
