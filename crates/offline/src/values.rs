//! Conversions between canonical Arrow columns and `quiver_core` values: reading one row of a
//! column as a [`Value`] / [`KeyValue`], and building a column from pushed values.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryBuilder, BooleanBuilder, Float32Builder, Float64Builder,
    Int32Builder, Int64Builder, ListArray, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::buffer::{NullBuffer, OffsetBuffer};
use arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Int32Type, Int64Type, TimestampMicrosecondType,
};
use quiver_core::types::{KeyType, ScalarType, ValueType};
use quiver_core::value::{KeyValue, Value};

use crate::arrow_types::{UTC, scalar_type};

/// The value at `row` of a column in a canonical type (see `arrow_types`).
pub fn value_at(array: &dyn Array, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int32 => Value::Int32(array.as_primitive::<Int32Type>().value(row)),
        DataType::Int64 => Value::Int64(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float32 => Value::Float32(array.as_primitive::<Float32Type>().value(row)),
        DataType::Float64 => Value::Float64(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_string()),
        DataType::Binary => Value::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        DataType::Timestamp(_, _) => {
            Value::Timestamp(array.as_primitive::<TimestampMicrosecondType>().value(row))
        }
        DataType::List(_) => {
            let items = array.as_list::<i32>().value(row);
            Value::List(
                (0..items.len())
                    .map(|i| value_at(items.as_ref(), i))
                    .collect(),
            )
        }
        // Scans only produce canonical types; anything else is shown as missing.
        _ => Value::Null,
    }
}

/// The key at `row` of a non-null key column in a canonical type.
pub(crate) fn key_at(array: &dyn Array, row: usize) -> KeyValue {
    match array.data_type() {
        DataType::Int32 => KeyValue::Int32(array.as_primitive::<Int32Type>().value(row)),
        DataType::Utf8 => KeyValue::String(array.as_string::<i32>().value(row).to_string()),
        DataType::Binary => KeyValue::Bytes(array.as_binary::<i32>().value(row).to_vec()),
        _ => KeyValue::Int64(array.as_primitive::<Int64Type>().value(row)),
    }
}

/// Builds a key column; `Err(row)` names the first row whose key has another type.
pub fn key_column<'a>(
    key: KeyType,
    values: impl ExactSizeIterator<Item = &'a KeyValue>,
) -> Result<ArrayRef, usize> {
    let n = values.len();
    Ok(match key {
        KeyType::Int64 => {
            let mut b = Int64Builder::with_capacity(n);
            for (row, v) in values.enumerate() {
                let KeyValue::Int64(v) = v else {
                    return Err(row);
                };
                b.append_value(*v);
            }
            Arc::new(b.finish())
        }
        KeyType::Int32 => {
            let mut b = Int32Builder::with_capacity(n);
            for (row, v) in values.enumerate() {
                let KeyValue::Int32(v) = v else {
                    return Err(row);
                };
                b.append_value(*v);
            }
            Arc::new(b.finish())
        }
        KeyType::String => {
            let mut b = StringBuilder::new();
            for (row, v) in values.enumerate() {
                let KeyValue::String(v) = v else {
                    return Err(row);
                };
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
        KeyType::Bytes => {
            let mut b = BinaryBuilder::new();
            for (row, v) in values.enumerate() {
                let KeyValue::Bytes(v) = v else {
                    return Err(row);
                };
                b.append_value(v);
            }
            Arc::new(b.finish())
        }
    })
}

/// Builds a column of `value_type`; `Err(row)` names the first value that does not fit.
pub fn value_column<'a>(
    value_type: ValueType,
    values: impl ExactSizeIterator<Item = &'a Value>,
) -> Result<ArrayRef, usize> {
    if !value_type.list {
        return scalar_column(value_type.scalar, values);
    }
    let mut offsets = vec![0usize];
    let mut validity = Vec::with_capacity(values.len());
    let mut items: Vec<&Value> = Vec::new();
    for (row, value) in values.enumerate() {
        match value {
            Value::Null => validity.push(false),
            Value::List(list) => {
                validity.push(true);
                items.extend(list.iter());
            }
            _ => return Err(row),
        }
        offsets.push(items.len());
    }
    let flat = scalar_column(value_type.scalar, items.into_iter()).map_err(|item| {
        offsets
            .iter()
            .position(|end| *end > item)
            .map_or(0, |p| p.saturating_sub(1))
    })?;
    let lengths = offsets.windows(2).map(|w| w[1] - w[0]);
    let item = Arc::new(Field::new_list_field(scalar_type(value_type.scalar), true));
    let list = ListArray::try_new(
        item,
        OffsetBuffer::from_lengths(lengths),
        flat,
        Some(NullBuffer::from(validity)),
    )
    .map_err(|_| 0usize)?;
    Ok(Arc::new(list))
}

fn scalar_column<'a>(
    scalar: ScalarType,
    values: impl ExactSizeIterator<Item = &'a Value>,
) -> Result<ArrayRef, usize> {
    let n = values.len();
    macro_rules! build {
        ($builder:expr, $variant:ident, |$x:ident| $convert:expr) => {{
            let mut b = $builder;
            for (row, v) in values.enumerate() {
                match v {
                    Value::Null => b.append_null(),
                    Value::$variant($x) => b.append_value($convert),
                    _ => return Err(row),
                }
            }
            Arc::new(b.finish()) as ArrayRef
        }};
    }
    Ok(match scalar {
        ScalarType::Bool => build!(BooleanBuilder::with_capacity(n), Bool, |x| *x),
        ScalarType::Int32 => build!(Int32Builder::with_capacity(n), Int32, |x| *x),
        ScalarType::Int64 => build!(Int64Builder::with_capacity(n), Int64, |x| *x),
        ScalarType::Float32 => build!(Float32Builder::with_capacity(n), Float32, |x| *x),
        ScalarType::Float64 => build!(Float64Builder::with_capacity(n), Float64, |x| *x),
        ScalarType::String => build!(StringBuilder::new(), String, |x| x.as_str()),
        ScalarType::Bytes => build!(BinaryBuilder::new(), Bytes, |x| x.as_slice()),
        ScalarType::Timestamp => build!(
            TimestampMicrosecondBuilder::with_capacity(n).with_timezone(UTC),
            Timestamp,
            |x| *x
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_columns() {
        let table: Vec<(&str, Vec<Value>)> = vec![
            ("bool", vec![Value::Bool(true), Value::Null]),
            ("int32", vec![Value::Int32(-3), Value::Null]),
            ("int64", vec![Value::Int64(1 << 40)]),
            ("float32", vec![Value::Float32(0.5)]),
            ("float64", vec![Value::Float64(2.5), Value::Null]),
            ("string", vec![Value::String("é".into()), Value::Null]),
            ("bytes", vec![Value::Bytes(vec![0, 255])]),
            ("timestamp", vec![Value::Timestamp(-5), Value::Null]),
            (
                "list<float32>",
                vec![
                    Value::List(vec![Value::Float32(1.0), Value::Null]),
                    Value::Null,
                    Value::List(vec![]),
                ],
            ),
        ];
        for (type_name, values) in table {
            let value_type = ValueType::parse(type_name).expect("type");
            let column = value_column(value_type, values.iter()).expect("column");
            assert_eq!(
                column.data_type(),
                &crate::arrow_types::value_type(value_type)
            );
            let back: Vec<Value> = (0..column.len()).map(|i| value_at(&column, i)).collect();
            assert_eq!(back, values, "{type_name}");
        }
        let bad = [Value::Null, Value::Int64(1)];
        assert_eq!(
            value_column(ValueType::parse("int32").expect("type"), bad.iter()).err(),
            Some(1)
        );
        let keys = [KeyValue::String("a".into()), KeyValue::Int64(1)];
        assert_eq!(key_column(KeyType::String, keys.iter()).err(), Some(1));
        let column = key_column(KeyType::String, keys[..1].iter()).expect("keys");
        assert_eq!(key_at(&column, 0), keys[0]);
    }
}
