//! Arrow columns -> accumulators -> a [`Profile`]. One pass, memory bounded by the sketches
//! (a few tens of KiB per feature) whatever the number of rows.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float64Type, TimeUnit};
use quiver_core::expectations::Expectation;
use quiver_core::types::{Micros, ScalarType, ValueType};

use crate::categorical::CategoricalAcc;
use crate::error::{Error, Result};
use crate::numeric::NumericAcc;
use crate::profile::{FeatureProfile, Origin, PROFILE_FORMAT, Profile, Subject, Summary};
use crate::rules::RuleCounts;

/// One column to profile: where it is in the batches and what it is.
#[derive(Debug, Clone)]
pub struct ColumnSpec {
    /// The column name in the record batches.
    pub column: String,
    /// The feature's name in the profile (`prefix__feature`, whatever the column is called).
    pub name: String,
    /// The view version it comes from (`name@N`).
    pub view: String,
    pub value_type: ValueType,
    /// The feature's expectations, when its view declares any: the profile counts their
    /// violations.
    pub expectation: Option<Expectation>,
}

/// Profiles record batches column by column.
#[derive(Debug)]
pub struct ProfileBuilder {
    rows: u64,
    columns: Vec<(ColumnSpec, Column)>,
}

#[derive(Debug)]
struct Column {
    count: u64,
    nulls: u64,
    acc: Acc,
    rules: Option<RuleCounts>,
}

#[derive(Debug)]
enum Acc {
    Numeric(NumericAcc),
    Categorical(CategoricalAcc),
    Boolean {
        trues: u64,
        falses: u64,
    },
    List {
        lengths: NumericAcc,
        elements: Option<NumericAcc>,
    },
}

/// Integers, floats and timestamps: what `min`/`max` and the numeric summary apply to.
pub(crate) fn is_numeric(scalar: ScalarType) -> bool {
    !matches!(
        scalar,
        ScalarType::Bool | ScalarType::String | ScalarType::Bytes
    )
}

impl ProfileBuilder {
    pub fn new(columns: Vec<ColumnSpec>) -> Self {
        let columns = columns
            .into_iter()
            .map(|spec| {
                let t = spec.value_type;
                let acc = match (t.list, t.scalar) {
                    (true, scalar) => Acc::List {
                        lengths: NumericAcc::default(),
                        elements: is_numeric(scalar).then(NumericAcc::default),
                    },
                    (false, ScalarType::Bool) => Acc::Boolean {
                        trues: 0,
                        falses: 0,
                    },
                    (false, ScalarType::String | ScalarType::Bytes) => {
                        Acc::Categorical(CategoricalAcc::default())
                    }
                    (false, _) => Acc::Numeric(NumericAcc::default()),
                };
                let column = Column {
                    count: 0,
                    nulls: 0,
                    acc,
                    rules: spec.expectation.clone().map(RuleCounts::new),
                };
                (spec, column)
            })
            .collect();
        ProfileBuilder { rows: 0, columns }
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Adds every row of `batch`; each profiled column must be in it.
    pub fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        for (spec, column) in &mut self.columns {
            let array = batch
                .column_by_name(&spec.column)
                .ok_or_else(|| Error::Column {
                    column: spec.column.clone(),
                    message: "not in the rows being profiled".into(),
                })?;
            column.add(spec, array)?;
        }
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Adds everything `other` (a builder of the same columns, fed other rows) saw, as if its
    /// batches had been added here.
    pub fn merge(&mut self, other: &ProfileBuilder) -> Result<()> {
        if self.columns.len() != other.columns.len() {
            return Err(Error::Column {
                column: String::new(),
                message: "merging profiles of different columns".into(),
            });
        }
        self.rows += other.rows;
        for ((spec, mine), (_, theirs)) in self.columns.iter_mut().zip(&other.columns) {
            mine.count += theirs.count;
            mine.nulls += theirs.nulls;
            if let (Some(rules), Some(other_rules)) = (&mut mine.rules, &theirs.rules) {
                rules.merge(other_rules);
            }
            match (&mut mine.acc, &theirs.acc) {
                (Acc::Numeric(a), Acc::Numeric(b)) => a.merge(b),
                (Acc::Categorical(a), Acc::Categorical(b)) => a.merge(b),
                (
                    Acc::Boolean { trues, falses },
                    Acc::Boolean {
                        trues: t,
                        falses: f,
                    },
                ) => {
                    *trues += t;
                    *falses += f;
                }
                (
                    Acc::List { lengths, elements },
                    Acc::List {
                        lengths: l,
                        elements: e,
                    },
                ) => {
                    lengths.merge(l);
                    if let (Some(mine), Some(theirs)) = (elements.as_mut(), e) {
                        mine.merge(theirs);
                    }
                }
                _ => {
                    return Err(Error::Column {
                        column: spec.column.clone(),
                        message: "merging accumulators of different types".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every column's figures, in the order the columns were given.
    pub fn into_features(self) -> Vec<FeatureProfile> {
        self.columns
            .into_iter()
            .map(|(spec, column)| FeatureProfile {
                feature: spec.name,
                view: spec.view,
                value_type: spec.value_type.to_string(),
                count: column.count,
                nulls: column.nulls,
                summary: column.acc.finish(),
                violations: column
                    .rules
                    .map(|rules| rules.finish(column.nulls, column.count))
                    .unwrap_or_default(),
            })
            .collect()
    }

    pub fn finish(
        self,
        subject: Subject,
        origin: Origin,
        window: Option<(Micros, Micros)>,
        created_at: Micros,
    ) -> Profile {
        let rows = self.rows;
        Profile {
            format: PROFILE_FORMAT,
            id: 0,
            subject,
            created_at,
            window,
            origin,
            rows,
            features: self.into_features(),
        }
    }
}

impl Acc {
    fn finish(self) -> Summary {
        match self {
            Acc::Numeric(acc) => Summary::Numeric(acc.finish()),
            Acc::Categorical(acc) => Summary::Categorical(acc.finish()),
            Acc::Boolean { trues, falses } => Summary::Boolean {
                true_count: trues,
                false_count: falses,
            },
            Acc::List { lengths, elements } => Summary::List {
                lengths: lengths.finish(),
                elements: elements.map(NumericAcc::finish),
            },
        }
    }
}

impl Column {
    fn add(&mut self, spec: &ColumnSpec, array: &ArrayRef) -> Result<()> {
        self.count += array.len() as u64;
        self.nulls += array.logical_null_count() as u64;
        let bad = |message: String| Error::Column {
            column: spec.column.clone(),
            message,
        };
        if let Some(rules) = &mut self.rules {
            rules.add(array, spec.value_type).map_err(bad)?;
        }
        match &mut self.acc {
            Acc::Numeric(acc) => {
                let values = as_f64(array).map_err(bad)?;
                values
                    .as_primitive::<Float64Type>()
                    .iter()
                    .flatten()
                    .for_each(|v| acc.add(v));
            }
            Acc::Boolean { trues, falses } => {
                let values = cast(array, &DataType::Boolean).map_err(|e| bad(e.to_string()))?;
                for v in values.as_boolean().iter().flatten() {
                    *if v { &mut *trues } else { &mut *falses } += 1;
                }
            }
            Acc::Categorical(acc) => {
                if spec.value_type.scalar == ScalarType::Bytes {
                    let values = cast(array, &DataType::Binary).map_err(|e| bad(e.to_string()))?;
                    values
                        .as_binary::<i32>()
                        .iter()
                        .flatten()
                        .for_each(|v| acc.add(&quiver_core::fingerprint::hex(v)));
                } else {
                    let values = cast(array, &DataType::Utf8).map_err(|e| bad(e.to_string()))?;
                    values
                        .as_string::<i32>()
                        .iter()
                        .flatten()
                        .for_each(|v| acc.add(v));
                }
            }
            Acc::List { lengths, elements } => {
                add_lists(array, lengths, elements.as_mut()).map_err(bad)?
            }
        }
        Ok(())
    }
}

/// Any list column as a `List` (of Float64 when `numbers`; timestamps as micros).
pub(crate) fn as_list(array: &ArrayRef, numbers: bool) -> std::result::Result<ArrayRef, String> {
    let item = match array.data_type() {
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => item,
        other => return Err(format!("expected a list, found {other}")),
    };
    let target = match numbers {
        true => DataType::Float64,
        false => item.data_type().clone(),
    };
    let as_list = DataType::List(Arc::new(Field::new_list_field(
        if matches!(item.data_type(), DataType::Timestamp(_, _)) {
            DataType::Int64
        } else {
            target
        },
        true,
    )));
    cast(array, &as_list).map_err(|e| e.to_string())
}

fn add_lists(
    array: &ArrayRef,
    lengths: &mut NumericAcc,
    elements: Option<&mut NumericAcc>,
) -> std::result::Result<(), String> {
    let list = as_list(array, elements.is_some())?;
    let list = list.as_list::<i32>();
    let mut elements = elements;
    for i in 0..list.len() {
        if list.is_null(i) {
            continue;
        }
        let values = list.value(i);
        lengths.add(values.len() as f64);
        if let Some(acc) = elements.as_deref_mut() {
            let values = as_f64(&values)?;
            values
                .as_primitive::<Float64Type>()
                .iter()
                .flatten()
                .for_each(|v| acc.add(v));
        }
    }
    Ok(())
}

/// Any integer, float or timestamp (as micros) column as Float64.
pub(crate) fn as_f64(array: &ArrayRef) -> std::result::Result<ArrayRef, String> {
    let array = match array.data_type() {
        DataType::Timestamp(_, _) => {
            let micros = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))
                .map_err(|e| e.to_string())?;
            cast(&micros, &DataType::Int64).map_err(|e| e.to_string())?
        }
        _ => Arc::clone(array),
    };
    cast(&array, &DataType::Float64).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float32Array, ListArray, StringArray};
    use arrow::datatypes::Float32Type;

    fn spec(column: &str, value_type: &str) -> ColumnSpec {
        ColumnSpec {
            column: column.into(),
            name: column.into(),
            view: "v@1".into(),
            value_type: ValueType::parse(value_type).expect("type"),
            expectation: None,
        }
    }

    /// The exact figures of each feature (moments to 9 decimals, counts, top values, HLL
    /// estimate, violations); quantiles are left out (a merged KLL sketch may differ within
    /// its rank error).
    fn exact_figures(p: &Profile) -> Vec<String> {
        p.features
            .iter()
            .map(|f| {
                let summary = match &f.summary {
                    Summary::Numeric(n) => format!(
                        "{} {:?} {:?} {:.9} {:.9}",
                        n.count,
                        n.min,
                        n.max,
                        n.mean.unwrap_or(0.0),
                        n.stddev.unwrap_or(0.0),
                    ),
                    Summary::Categorical(c) => format!("{} {} {:?}", c.count, c.distinct, c.top),
                    Summary::Boolean {
                        true_count,
                        false_count,
                    } => format!("{true_count} {false_count}"),
                    Summary::List { lengths, .. } => format!("{} {:?}", lengths.count, lengths.max),
                };
                format!(
                    "{} {} {} {summary} {:?}",
                    f.feature, f.count, f.nulls, f.violations
                )
            })
            .collect()
    }

    #[test]
    fn merged_builders_equal_one_builder_over_all_rows() {
        let n = 5_000usize;
        let floats: Vec<Option<f32>> = (0..n)
            .map(|i| (i % 11 != 0).then_some((i % 97) as f32 * 0.5))
            .collect();
        let strings: Vec<Option<String>> = (0..n)
            .map(|i| (i % 13 != 0).then(|| format!("c{}", i % 40)))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("f", Arc::new(Float32Array::from(floats)) as ArrayRef),
            ("s", Arc::new(StringArray::from(strings)) as ArrayRef),
        ])
        .expect("batch");
        let mut checked = spec("f", "float32");
        checked.expectation = Some(Expectation {
            not_null: true,
            max: Some(40.0),
            ..Expectation::default()
        });
        let columns = vec![checked, spec("s", "string")];
        let mut one = ProfileBuilder::new(columns.clone());
        one.add_batch(&batch).expect("add");
        let (mut left, mut right) = (
            ProfileBuilder::new(columns.clone()),
            ProfileBuilder::new(columns),
        );
        left.add_batch(&batch.slice(0, 1_234)).expect("add");
        right
            .add_batch(&batch.slice(1_234, n - 1_234))
            .expect("add");
        left.merge(&right).expect("merge");
        let subject = Subject {
            kind: "view".into(),
            name: "v".into(),
            version: 1,
            fingerprint: "x".into(),
            views: vec![],
        };
        let one = one.finish(subject.clone(), Origin::OnDemand, None, 0);
        let merged = left.finish(subject, Origin::OnDemand, None, 0);
        assert_eq!(merged.rows, n as u64);
        assert_eq!(exact_figures(&merged), exact_figures(&one));
        let violations = merged.feature("f").map(|f| f.violations.clone());
        assert!(violations.is_some_and(|v| v["not_null"] > 0 && v["max"] > 0));
    }

    #[test]
    fn every_type_is_summarised_and_nulls_counted() {
        let batch = RecordBatch::try_from_iter([
            (
                "f",
                Arc::new(Float32Array::from(vec![Some(1.5), None, Some(3.5)])) as ArrayRef,
            ),
            (
                "s",
                Arc::new(StringArray::from(vec![Some("a"), Some("a"), None])),
            ),
            (
                "b",
                Arc::new(BooleanArray::from(vec![
                    Some(true),
                    Some(false),
                    Some(true),
                ])),
            ),
            (
                "l",
                Arc::new(ListArray::from_iter_primitive::<Float32Type, _, _>(vec![
                    Some(vec![Some(1.0), Some(2.0)]),
                    None,
                    Some(vec![Some(4.0)]),
                ])),
            ),
        ])
        .expect("batch");
        let mut builder = ProfileBuilder::new(vec![
            spec("f", "float32"),
            spec("s", "string"),
            spec("b", "bool"),
            spec("l", "list<float32>"),
        ]);
        builder.add_batch(&batch).expect("add");
        builder.add_batch(&batch).expect("add twice");
        let subject = Subject {
            kind: "view".into(),
            name: "v".into(),
            version: 1,
            fingerprint: "x".into(),
            views: vec!["v@1".into()],
        };
        let profile = builder.finish(subject, Origin::OnDemand, None, 0);
        assert_eq!(profile.rows, 6);
        let f = profile.feature("f").expect("f");
        assert_eq!((f.count, f.nulls), (6, 2));
        let Summary::Numeric(n) = &f.summary else {
            panic!("numeric")
        };
        assert_eq!((n.min, n.max, n.mean), (Some(1.5), Some(3.5), Some(2.5)));
        let Summary::Categorical(c) = &profile.feature("s").expect("s").summary else {
            panic!("categorical")
        };
        assert_eq!(
            (c.count, c.top[0].value.as_str(), c.top[0].count),
            (4, "a", 4)
        );
        let b = profile.feature("b").expect("b");
        assert!(matches!(
            b.summary,
            Summary::Boolean {
                true_count: 4,
                false_count: 2
            }
        ));
        let l = profile.feature("l").expect("l");
        let Summary::List {
            lengths,
            elements: Some(e),
        } = &l.summary
        else {
            panic!("list")
        };
        assert_eq!(
            (l.nulls, lengths.mean, e.count, e.max),
            (2, Some(1.5), 6, Some(4.0))
        );
        let json = serde_json::to_string(&profile).expect("json");
        let back: Profile = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, profile);
    }
}
