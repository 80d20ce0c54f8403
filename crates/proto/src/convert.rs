//! Wire columns <-> domain values. Every function validates what it reads and names the field.

use quiver_core::ErrorCode;
use quiver_core::model::Kind;
use quiver_core::types::{KeyType, ScalarType, ValueType};
use quiver_core::value::{KeyValue, Value};

use crate::v1::{self, column::Values};

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("missing field `{0}`")]
    Missing(String),
    #[error("invalid field `{field}`: {message}")]
    Invalid { field: String, message: String },
}

impl ProtocolError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ProtocolError::Missing(_) | ProtocolError::Invalid { .. } => ErrorCode::InvalidArgument,
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        ProtocolError::Invalid {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

type Result<T> = std::result::Result<T, ProtocolError>;

pub fn kind_to_proto(kind: Kind) -> v1::ObjectKind {
    match kind {
        Kind::Entity => v1::ObjectKind::Entity,
        Kind::Source => v1::ObjectKind::Source,
        Kind::FeatureView => v1::ObjectKind::FeatureView,
        Kind::FeatureService => v1::ObjectKind::FeatureService,
    }
}

/// `None` for UNSPECIFIED (meaning "every kind" where the API allows it).
pub fn kind_from_proto(raw: i32, field: &str) -> Result<Option<Kind>> {
    match v1::ObjectKind::try_from(raw) {
        Ok(v1::ObjectKind::Unspecified) => Ok(None),
        Ok(v1::ObjectKind::Entity) => Ok(Some(Kind::Entity)),
        Ok(v1::ObjectKind::Source) => Ok(Some(Kind::Source)),
        Ok(v1::ObjectKind::FeatureView) => Ok(Some(Kind::FeatureView)),
        Ok(v1::ObjectKind::FeatureService) => Ok(Some(Kind::FeatureService)),
        Err(_) => Err(ProtocolError::invalid(
            field,
            format!("unknown object kind {raw}"),
        )),
    }
}

fn type_name(values: &Option<Values>) -> &'static str {
    match values {
        None => "empty",
        Some(Values::BoolValues(_)) => "bool",
        Some(Values::Int32Values(_)) => "int32",
        Some(Values::Int64Values(_)) => "int64",
        Some(Values::FloatValues(_)) => "float32",
        Some(Values::DoubleValues(_)) => "float64",
        Some(Values::StringValues(_)) => "string",
        Some(Values::BytesValues(_)) => "bytes",
        Some(Values::TimestampValues(_)) => "timestamp",
        Some(Values::ListValues(_)) => "list",
    }
}

/// Number of values in a column.
/// Named wire columns by name (`field[i]` names a bad one). A name given twice is refused:
/// otherwise the last column would silently win.
pub fn columns_by_name<'a>(
    columns: &'a [v1::NamedColumn],
    field: &str,
) -> Result<std::collections::BTreeMap<&'a str, &'a v1::Column>> {
    let mut by_name = std::collections::BTreeMap::new();
    for (i, named) in columns.iter().enumerate() {
        if columns[..i].iter().any(|c| c.name == named.name) {
            return Err(ProtocolError::invalid(
                &format!("{field}[{i}]"),
                format!(
                    "column `{}` is given twice; send each column once",
                    named.name
                ),
            ));
        }
        if let Some(column) = &named.column {
            by_name.insert(named.name.as_str(), column);
        }
    }
    Ok(by_name)
}

pub fn column_len(column: &v1::Column) -> usize {
    match &column.values {
        None => 0,
        Some(Values::BoolValues(v)) => v.values.len(),
        Some(Values::Int32Values(v)) => v.values.len(),
        Some(Values::Int64Values(v)) => v.values.len(),
        Some(Values::FloatValues(v)) => v.values.len(),
        Some(Values::DoubleValues(v)) => v.values.len(),
        Some(Values::StringValues(v)) => v.values.len(),
        Some(Values::BytesValues(v)) => v.values.len(),
        Some(Values::TimestampValues(v)) => v.micros.len(),
        Some(Values::ListValues(v)) => v.offsets.len().saturating_sub(1),
    }
}

fn check_nulls(column: &v1::Column, field: &str) -> Result<()> {
    if !column.nulls.is_empty() && column.nulls.len() != column_len(column) {
        return Err(ProtocolError::invalid(
            field,
            format!(
                "`nulls` has {} entries for {} values; give one per value or none",
                column.nulls.len(),
                column_len(column)
            ),
        ));
    }
    Ok(())
}

/// Rows `range` of `column` as a column of their own (list offsets re-based), so a large
/// request can be converted a chunk at a time. Checks what the chunk needs: a `nulls` vector
/// of the column's length (or none) and, for lists, offsets within the items, not decreasing.
pub fn slice_column(
    column: &v1::Column,
    range: std::ops::Range<usize>,
    field: &str,
) -> Result<v1::Column> {
    check_nulls(column, field)?;
    let out_of_range = || {
        ProtocolError::invalid(
            field,
            format!(
                "rows {range:?} are beyond the column's {} values",
                column_len(column)
            ),
        )
    };
    fn part<T: Clone>(values: &[T], range: &std::ops::Range<usize>) -> Option<Vec<T>> {
        values.get(range.clone()).map(<[T]>::to_vec)
    }
    let values = match &column.values {
        None if range.is_empty() => None,
        None => return Err(out_of_range()),
        Some(Values::BoolValues(v)) => Some(Values::BoolValues(v1::BoolValues {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::Int32Values(v)) => Some(Values::Int32Values(v1::Int32Values {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::Int64Values(v)) => Some(Values::Int64Values(v1::Int64Values {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::FloatValues(v)) => Some(Values::FloatValues(v1::FloatValues {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::DoubleValues(v)) => Some(Values::DoubleValues(v1::DoubleValues {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::StringValues(v)) => Some(Values::StringValues(v1::StringValues {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::BytesValues(v)) => Some(Values::BytesValues(v1::BytesValues {
            values: part(&v.values, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::TimestampValues(v)) => Some(Values::TimestampValues(v1::TimestampValues {
            micros: part(&v.micros, &range).ok_or_else(out_of_range)?,
        })),
        Some(Values::ListValues(list)) => Some(Values::ListValues(Box::new(slice_list(
            list, &range, field,
        )?))),
    };
    let nulls = if column.nulls.is_empty() {
        Vec::new()
    } else {
        part(&column.nulls, &range).ok_or_else(out_of_range)?
    };
    Ok(v1::Column { values, nulls })
}

fn slice_list(
    list: &v1::ListValues,
    range: &std::ops::Range<usize>,
    field: &str,
) -> Result<v1::ListValues> {
    let inner = list
        .values
        .as_ref()
        .ok_or_else(|| ProtocolError::Missing(format!("{field}.list_values.values")))?;
    let offsets = list.offsets.get(range.start..=range.end).ok_or_else(|| {
        ProtocolError::invalid(field, format!("list offsets do not cover rows {range:?}"))
    })?;
    let (first, last) = (offsets[0] as usize, offsets[offsets.len() - 1] as usize);
    let decreasing = offsets.windows(2).any(|pair| pair[1] < pair[0]);
    if decreasing || last > column_len(inner) {
        return Err(ProtocolError::invalid(
            field,
            format!("list offsets {first}..{last} are out of range or decreasing"),
        ));
    }
    Ok(v1::ListValues {
        offsets: offsets.iter().map(|o| o - offsets[0]).collect(),
        values: Some(Box::new(slice_column(
            inner,
            first..last,
            &format!("{field}.list_values.values"),
        )?)),
    })
}

/// Reads a join key column; its type must be exactly the key's type and it may hold no nulls.
pub fn column_to_keys(
    column: &v1::Column,
    key_type: KeyType,
    field: &str,
) -> Result<Vec<KeyValue>> {
    check_nulls(column, field)?;
    if column.nulls.iter().any(|n| *n) {
        return Err(ProtocolError::invalid(field, "join keys cannot be null"));
    }
    let keys = match (key_type, &column.values) {
        (KeyType::Int64, Some(Values::Int64Values(v))) => {
            v.values.iter().map(|x| KeyValue::Int64(*x)).collect()
        }
        (KeyType::Int32, Some(Values::Int32Values(v))) => {
            v.values.iter().map(|x| KeyValue::Int32(*x)).collect()
        }
        (KeyType::String, Some(Values::StringValues(v))) => v
            .values
            .iter()
            .map(|x| KeyValue::String(x.clone()))
            .collect(),
        (KeyType::Bytes, Some(Values::BytesValues(v))) => v
            .values
            .iter()
            .map(|x| KeyValue::Bytes(x.clone()))
            .collect(),
        (expected, other) => {
            return Err(ProtocolError::invalid(
                field,
                format!(
                    "join key is {expected}, the request sends {} values; send `{}_values`",
                    type_name(other),
                    wire_name(expected)
                ),
            ));
        }
    };
    Ok(keys)
}

fn wire_name(key_type: KeyType) -> &'static str {
    match key_type {
        KeyType::Int64 => "int64",
        KeyType::Int32 => "int32",
        KeyType::String => "string",
        KeyType::Bytes => "bytes",
    }
}

/// Builds a key column (clients, tests).
pub fn keys_to_column(keys: &[KeyValue]) -> std::result::Result<v1::Column, String> {
    let values = match keys.first() {
        None | Some(KeyValue::Int64(_)) => Values::Int64Values(v1::Int64Values {
            values: keys
                .iter()
                .map(|k| {
                    if let KeyValue::Int64(x) = k {
                        Ok(*x)
                    } else {
                        Err(())
                    }
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| "mixed key types")?,
        }),
        Some(KeyValue::Int32(_)) => Values::Int32Values(v1::Int32Values {
            values: keys
                .iter()
                .map(|k| {
                    if let KeyValue::Int32(x) = k {
                        Ok(*x)
                    } else {
                        Err(())
                    }
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| "mixed key types")?,
        }),
        Some(KeyValue::String(_)) => Values::StringValues(v1::StringValues {
            values: keys
                .iter()
                .map(|k| {
                    if let KeyValue::String(x) = k {
                        Ok(x.clone())
                    } else {
                        Err(())
                    }
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| "mixed key types")?,
        }),
        Some(KeyValue::Bytes(_)) => Values::BytesValues(v1::BytesValues {
            values: keys
                .iter()
                .map(|k| {
                    if let KeyValue::Bytes(x) = k {
                        Ok(x.clone())
                    } else {
                        Err(())
                    }
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| "mixed key types")?,
        }),
    };
    Ok(v1::Column {
        values: Some(values),
        nulls: Vec::new(),
    })
}

/// Reads a feature column of `value_type`.
pub fn column_to_values(
    column: &v1::Column,
    value_type: ValueType,
    field: &str,
) -> Result<Vec<Value>> {
    check_nulls(column, field)?;
    let mismatch = || {
        ProtocolError::invalid(
            field,
            format!(
                "the feature is {value_type}, the request sends {} values",
                type_name(&column.values)
            ),
        )
    };
    let mut values: Vec<Value> = if value_type.list {
        let Some(Values::ListValues(list)) = &column.values else {
            return Err(mismatch());
        };
        let inner = list
            .values
            .as_ref()
            .ok_or_else(|| ProtocolError::Missing(format!("{field}.list_values.values")))?;
        let items = column_to_values(
            inner,
            ValueType::scalar(value_type.scalar),
            &format!("{field}.list_values.values"),
        )?;
        let mut out = Vec::with_capacity(list.offsets.len().saturating_sub(1));
        for pair in list.offsets.windows(2) {
            let (start, end) = (pair[0] as usize, pair[1] as usize);
            let slice = items.get(start..end).ok_or_else(|| {
                ProtocolError::invalid(
                    field,
                    format!("list offsets {start}..{end} are out of range or decreasing"),
                )
            })?;
            out.push(Value::List(slice.to_vec()));
        }
        out
    } else {
        match (value_type.scalar, &column.values) {
            (ScalarType::Bool, Some(Values::BoolValues(v))) => {
                v.values.iter().map(|x| Value::Bool(*x)).collect()
            }
            (ScalarType::Int32, Some(Values::Int32Values(v))) => {
                v.values.iter().map(|x| Value::Int32(*x)).collect()
            }
            (ScalarType::Int64, Some(Values::Int64Values(v))) => {
                v.values.iter().map(|x| Value::Int64(*x)).collect()
            }
            (ScalarType::Float32, Some(Values::FloatValues(v))) => {
                v.values.iter().map(|x| Value::Float32(*x)).collect()
            }
            (ScalarType::Float64, Some(Values::DoubleValues(v))) => {
                v.values.iter().map(|x| Value::Float64(*x)).collect()
            }
            (ScalarType::String, Some(Values::StringValues(v))) => {
                v.values.iter().map(|x| Value::String(x.clone())).collect()
            }
            (ScalarType::Bytes, Some(Values::BytesValues(v))) => {
                v.values.iter().map(|x| Value::Bytes(x.clone())).collect()
            }
            (ScalarType::Timestamp, Some(Values::TimestampValues(v))) => {
                v.micros.iter().map(|x| Value::Timestamp(*x)).collect()
            }
            _ => return Err(mismatch()),
        }
    };
    for (value, null) in values.iter_mut().zip(&column.nulls) {
        if *null {
            *value = Value::Null;
        }
    }
    Ok(values)
}

/// Reads a timestamp column (micros) without nulls.
pub fn column_to_micros(column: &v1::Column, field: &str) -> Result<Vec<i64>> {
    check_nulls(column, field)?;
    if column.nulls.iter().any(|n| *n) {
        return Err(ProtocolError::invalid(field, "timestamps cannot be null"));
    }
    match &column.values {
        Some(Values::TimestampValues(v)) => Ok(v.micros.clone()),
        Some(Values::Int64Values(v)) => Ok(v.values.clone()),
        other => Err(ProtocolError::invalid(
            field,
            format!(
                "expected timestamp_values (micros), got {} values",
                type_name(other)
            ),
        )),
    }
}

/// Builds a column of `value_type` from values (nulls where `Value::Null` or a mismatching type).
pub fn values_to_column(values: &[Value], value_type: ValueType) -> v1::Column {
    optional_values_to_column(values.iter().map(Some), value_type)
}

/// Like [`values_to_column`], from borrowed values (`None` is null), written straight into
/// the column's typed vectors: only strings and bytes are copied.
pub fn optional_values_to_column<'a, I>(values: I, value_type: ValueType) -> v1::Column
where
    I: ExactSizeIterator<Item = Option<&'a Value>> + Clone,
{
    let usable = move |v: Option<&'a Value>| v.filter(|v| !v.is_null() && v.fits(value_type));
    let nulls: Vec<bool> = values.clone().map(|v| usable(v).is_none()).collect();
    let any_null = nulls.iter().any(|n| *n);
    let column_values = if value_type.list {
        let mut offsets = Vec::with_capacity(values.len() + 1);
        let mut items: Vec<&Value> = Vec::new();
        offsets.push(0u32);
        for value in values {
            if let Some(Value::List(list)) = usable(value) {
                items.extend(list.iter());
            }
            offsets.push(items.len() as u32);
        }
        Values::ListValues(Box::new(v1::ListValues {
            offsets,
            values: Some(Box::new(items_to_column(
                &items,
                ValueType::scalar(value_type.scalar),
            ))),
        }))
    } else {
        macro_rules! scalars {
            ($variant:ident, $wire:ident, $field:ident, $default:expr, $pat:pat => $out:expr) => {
                Values::$wire(v1::$wire {
                    $field: values
                        .map(|v| match usable(v) {
                            Some($pat) => $out,
                            _ => $default,
                        })
                        .collect(),
                })
            };
        }
        match value_type.scalar {
            ScalarType::Bool => scalars!(Bool, BoolValues, values, false, Value::Bool(x) => *x),
            ScalarType::Int32 => scalars!(Int32, Int32Values, values, 0, Value::Int32(x) => *x),
            ScalarType::Int64 => scalars!(Int64, Int64Values, values, 0, Value::Int64(x) => *x),
            ScalarType::Float32 => {
                scalars!(Float32, FloatValues, values, 0.0, Value::Float32(x) => *x)
            }
            ScalarType::Float64 => {
                scalars!(Float64, DoubleValues, values, 0.0, Value::Float64(x) => *x)
            }
            ScalarType::String => {
                scalars!(String, StringValues, values, String::new(), Value::String(x) => x.clone())
            }
            ScalarType::Bytes => {
                scalars!(Bytes, BytesValues, values, Vec::new(), Value::Bytes(x) => x.clone())
            }
            ScalarType::Timestamp => {
                scalars!(Timestamp, TimestampValues, micros, 0, Value::Timestamp(x) => *x)
            }
        }
    };
    v1::Column {
        values: Some(column_values),
        nulls: if any_null { nulls } else { Vec::new() },
    }
}

/// The items of list values as one column (one instantiation, whatever the caller's iterator).
fn items_to_column(items: &[&Value], value_type: ValueType) -> v1::Column {
    optional_values_to_column(items.iter().map(|v| Some(*v)), value_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_columns() {
        let table: Vec<(ValueType, Vec<Value>)> = vec![
            (
                ValueType::scalar(ScalarType::Int64),
                vec![Value::Int64(1), Value::Null, Value::Int64(-3)],
            ),
            (
                ValueType::scalar(ScalarType::String),
                vec![Value::String("a".into()), Value::Null],
            ),
            (
                ValueType::scalar(ScalarType::Timestamp),
                vec![Value::Timestamp(5)],
            ),
            (
                ValueType {
                    scalar: ScalarType::Float32,
                    list: true,
                },
                vec![
                    Value::List(vec![Value::Float32(1.5), Value::Null]),
                    Value::Null,
                    Value::List(vec![]),
                ],
            ),
        ];
        for (value_type, values) in table {
            let column = values_to_column(&values, value_type);
            assert_eq!(column_len(&column), values.len());
            let back = column_to_values(&column, value_type, "f").expect("round trip");
            assert_eq!(back, values, "{value_type}");
        }
    }

    #[test]
    fn a_column_given_twice_is_refused_with_its_position() {
        let named = |name: &str| v1::NamedColumn {
            name: name.into(),
            column: Some(v1::Column::default()),
        };
        let columns = [named("a"), named("b"), named("a")];
        match columns_by_name(&columns, "entities") {
            Err(ProtocolError::Invalid { field, message }) => {
                assert_eq!(field, "entities[2]");
                assert!(message.contains("`a` is given twice"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let by_name = columns_by_name(&columns[..2], "entities").expect("distinct names");
        assert_eq!(by_name.keys().copied().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn wrong_types_name_the_field() {
        let column = keys_to_column(&[KeyValue::String("x".into())]).expect("column");
        let err =
            column_to_keys(&column, KeyType::Int64, "entities.driver_id").expect_err("mismatch");
        assert!(err.to_string().contains("entities.driver_id"), "{err}");
        assert!(err.to_string().contains("string"), "{err}");
        let column = values_to_column(&[Value::Int32(1)], ValueType::scalar(ScalarType::Int32));
        let err = column_to_values(
            &column,
            ValueType::scalar(ScalarType::Int64),
            "columns.trips",
        )
        .expect_err("mismatch");
        assert!(err.to_string().contains("columns.trips"), "{err}");
    }

    #[test]
    fn bad_list_offsets_are_rejected() {
        let column = v1::Column {
            values: Some(Values::ListValues(Box::new(v1::ListValues {
                offsets: vec![0, 5],
                values: Some(Box::new(values_to_column(
                    &[Value::Float32(1.0)],
                    ValueType::scalar(ScalarType::Float32),
                ))),
            }))),
            nulls: vec![],
        };
        let list = ValueType {
            scalar: ScalarType::Float32,
            list: true,
        };
        assert!(column_to_values(&column, list, "f").is_err());
    }
}

/// Any message a client can send converts to values or an error naming the field, never a
/// panic: columns arrive from the network.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use prost::Message;
    use quiver_core::types::{KeyType, ScalarType, ValueType};

    use super::*;

    proptest! {
        #[test]
        fn arbitrary_columns_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let Ok(request) = v1::PushRequest::decode(bytes.as_slice()) else {
                return Ok(());
            };
            let _ = columns_by_name(&request.columns, "columns");
            for named in &request.columns {
                let Some(column) = &named.column else { continue };
                let len = column_len(column);
                let _ = slice_column(column, 0..len, "c");
                let _ = slice_column(column, len / 2..len, "c");
                let _ = column_to_micros(column, "c");
                for key in [KeyType::Int64, KeyType::Int32, KeyType::String, KeyType::Bytes] {
                    let _ = column_to_keys(column, key, "c");
                }
                for scalar in ScalarType::ALL {
                    for list in [false, true] {
                        let _ = column_to_values(column, ValueType { scalar, list }, "c");
                    }
                }
            }
        }
    }
}
