//! How Quiver's key and value types map onto Arrow: the canonical Arrow type of each, which
//! Parquet/Arrow column types are accepted for it, and the conversion of an accepted column
//! into the canonical type (timestamps of any unit to UTC microseconds, string and binary
//! variants to `Utf8`/`Binary`, list variants to `List`).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, GenericListArray, ListArray, OffsetSizeTrait,
    TimestampMicrosecondArray,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{
    DataType, Field, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
use arrow::error::ArrowError;
use quiver_core::types::{KeyType, ScalarType, ValueType};

/// The time zone of every timestamp Quiver outputs.
pub(crate) const UTC: &str = "UTC";

/// `Timestamp(Microsecond, "UTC")`: the type of every instant Quiver outputs.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into()))
}

pub fn key_type(key: KeyType) -> DataType {
    match key {
        KeyType::Int64 => DataType::Int64,
        KeyType::Int32 => DataType::Int32,
        KeyType::String => DataType::Utf8,
        KeyType::Bytes => DataType::Binary,
    }
}

pub(crate) fn scalar_type(scalar: ScalarType) -> DataType {
    match scalar {
        ScalarType::Bool => DataType::Boolean,
        ScalarType::Int32 => DataType::Int32,
        ScalarType::Int64 => DataType::Int64,
        ScalarType::Float32 => DataType::Float32,
        ScalarType::Float64 => DataType::Float64,
        ScalarType::String => DataType::Utf8,
        ScalarType::Bytes => DataType::Binary,
        ScalarType::Timestamp => timestamp_type(),
    }
}

pub fn value_type(value: ValueType) -> DataType {
    let scalar = scalar_type(value.scalar);
    if value.list {
        DataType::List(Arc::new(Field::new_list_field(scalar, true)))
    } else {
        scalar
    }
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

fn is_binary(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
            | DataType::FixedSizeBinary(_)
    )
}

/// Whether a column of `actual` type can hold a join key of type `key`. `widen` also accepts
/// an `Int32` column for an `int64` key (label tables).
pub(crate) fn key_compatible(actual: &DataType, key: KeyType, widen: bool) -> bool {
    match key {
        KeyType::Int64 => *actual == DataType::Int64 || (widen && *actual == DataType::Int32),
        KeyType::Int32 => *actual == DataType::Int32,
        KeyType::String => is_string(actual),
        KeyType::Bytes => is_binary(actual),
    }
}

fn scalar_compatible(actual: &DataType, scalar: ScalarType) -> bool {
    match scalar {
        ScalarType::Bool => *actual == DataType::Boolean,
        ScalarType::Int32 => *actual == DataType::Int32,
        ScalarType::Int64 => *actual == DataType::Int64,
        ScalarType::Float32 => *actual == DataType::Float32,
        ScalarType::Float64 => *actual == DataType::Float64,
        ScalarType::String => is_string(actual),
        ScalarType::Bytes => is_binary(actual),
        ScalarType::Timestamp => matches!(actual, DataType::Timestamp(_, _)),
    }
}

/// Whether a column of `actual` type can hold a feature of type `value`.
pub(crate) fn value_compatible(actual: &DataType, value: ValueType) -> bool {
    if !value.list {
        return scalar_compatible(actual, value.scalar);
    }
    match actual {
        DataType::List(item) | DataType::LargeList(item) | DataType::FixedSizeList(item, _) => {
            scalar_compatible(item.data_type(), value.scalar)
        }
        _ => false,
    }
}

/// What a source column holds, for the one type rule that the plan-time schema check and
/// every scan apply to source and push-log files.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ColumnRole {
    Key(KeyType),
    Time,
    Feature(ValueType),
}

impl ColumnRole {
    pub(crate) fn accepts(self, actual: &DataType) -> bool {
        match self {
            ColumnRole::Key(key) => key_compatible(actual, key, false),
            ColumnRole::Time => matches!(actual, DataType::Timestamp(_, _)),
            ColumnRole::Feature(value) => value_compatible(actual, value),
        }
    }
}

/// Finds column `name` for `role`: `Ok(Some(index))`, `Ok(None)` if the schema has no such
/// column, `Err(actual type)` if it has one of a type the role does not accept.
pub(crate) fn find_column(
    schema: &arrow::datatypes::Schema,
    name: &str,
    role: ColumnRole,
) -> Result<Option<usize>, DataType> {
    match schema.index_of(name) {
        Err(_) => Ok(None),
        Ok(index) => {
            let actual = schema.field(index).data_type();
            if role.accepts(actual) {
                Ok(Some(index))
            } else {
                Err(actual.clone())
            }
        }
    }
}

/// Converts any timestamp array to UTC microseconds. Finer units are floored (the same rule
/// as `chrono`'s `timestamp_micros`, so pre-1970 instants agree with RFC 3339 parsing).
pub(crate) fn to_micros(array: &dyn Array) -> Result<TimestampMicrosecondArray, ArrowError> {
    let micros: TimestampMicrosecondArray = match array.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => array
            .as_primitive::<TimestampSecondType>()
            .unary(|v| v.saturating_mul(1_000_000)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => array
            .as_primitive::<TimestampMillisecondType>()
            .unary(|v| v.saturating_mul(1_000)),
        DataType::Timestamp(TimeUnit::Microsecond, _) => array
            .as_primitive::<TimestampMicrosecondType>()
            .clone()
            .with_timezone_opt(None::<String>),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => array
            .as_primitive::<TimestampNanosecondType>()
            .unary(|v| v.div_euclid(1_000)),
        other => {
            return Err(ArrowError::CastError(format!(
                "expected a timestamp column, found {other}"
            )));
        }
    };
    Ok(micros.with_timezone(UTC))
}

/// Converts a key column of a compatible type into the key's canonical Arrow type.
pub(crate) fn normalize_key(array: &ArrayRef, key: KeyType) -> Result<ArrayRef, ArrowError> {
    let target = key_type(key);
    if *array.data_type() == target {
        return Ok(Arc::clone(array));
    }
    arrow::compute::cast(array, &target)
}

/// Converts a feature column of a compatible type into the feature's canonical Arrow type.
pub(crate) fn normalize_value(array: &ArrayRef, value: ValueType) -> Result<ArrayRef, ArrowError> {
    let target = value_type(value);
    if *array.data_type() == target {
        return Ok(Arc::clone(array));
    }
    if !value.list {
        return normalize_scalar(array, value.scalar);
    }
    let item = Arc::new(Field::new_list_field(scalar_type(value.scalar), true));
    match array.data_type() {
        DataType::List(_) => relist(array.as_list::<i32>(), item, value.scalar),
        DataType::LargeList(_) => relist(array.as_list::<i64>(), item, value.scalar),
        DataType::FixedSizeList(_, _) => {
            let fixed: &FixedSizeListArray = array.as_fixed_size_list();
            let size = usize::try_from(fixed.value_length()).unwrap_or(0);
            let offsets = OffsetBuffer::<i32>::from_lengths(std::iter::repeat_n(size, fixed.len()));
            let values = normalize_scalar(fixed.values(), value.scalar)?;
            let list = ListArray::try_new(item, offsets, values, fixed.nulls().cloned())?;
            Ok(Arc::new(list))
        }
        other => Err(ArrowError::CastError(format!(
            "cannot read a {other} column as {value}"
        ))),
    }
}

fn normalize_scalar(array: &ArrayRef, scalar: ScalarType) -> Result<ArrayRef, ArrowError> {
    match scalar {
        ScalarType::Timestamp => Ok(Arc::new(to_micros(array.as_ref())?)),
        other => {
            let target = scalar_type(other);
            if *array.data_type() == target {
                Ok(Arc::clone(array))
            } else {
                arrow::compute::cast(array, &target)
            }
        }
    }
}

fn relist<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    item: Arc<Field>,
    scalar: ScalarType,
) -> Result<ArrayRef, ArrowError> {
    let offsets = list
        .offsets()
        .iter()
        .map(|o| i32::try_from(o.as_usize()))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|_| ArrowError::CastError("list column too large for 32-bit offsets".into()))?;
    let values = normalize_scalar(list.values(), scalar)?;
    let list = ListArray::try_new(
        item,
        OffsetBuffer::new(offsets.into()),
        values,
        list.nulls().cloned(),
    )?;
    Ok(Arc::new(list))
}

/// The column names of `schema`, comma-separated (the "it has: ..." of error messages).
pub(crate) fn column_list(schema: &arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{LargeListArray, StringViewArray, TimestampNanosecondArray};
    use arrow::datatypes::{Float32Type, Float64Type};

    #[test]
    fn timestamps_of_any_unit_become_utc_micros() {
        let ns = TimestampNanosecondArray::from(vec![Some(1_500), Some(-1_500), None]);
        let micros = to_micros(&ns).expect("timestamp");
        assert_eq!(micros.data_type(), &timestamp_type());
        assert_eq!(micros.value(0), 1);
        assert_eq!(micros.value(1), -2);
        assert!(micros.is_null(2));
        let secs = arrow::array::TimestampSecondArray::from(vec![3]).with_timezone("Europe/Paris");
        assert_eq!(to_micros(&secs).expect("timestamp").value(0), 3_000_000);
        assert!(to_micros(&arrow::array::Int64Array::from(vec![1])).is_err());
    }

    #[test]
    fn compatible_columns_normalize_to_canonical_types() {
        let list = ValueType::parse("list<float32>").expect("type");
        let large: ArrayRef = Arc::new(LargeListArray::from_iter_primitive::<Float32Type, _, _>(
            vec![Some(vec![Some(1.0), None]), None],
        ));
        assert!(value_compatible(large.data_type(), list));
        let normalized = normalize_value(&large, list).expect("normalize");
        assert_eq!(normalized.data_type(), &value_type(list));
        assert!(normalized.is_null(1));

        let doubles: ArrayRef =
            Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
                Some(vec![Some(1.0)]),
            ]));
        assert!(!value_compatible(doubles.data_type(), list));

        let view: ArrayRef = Arc::new(StringViewArray::from(vec!["a"]));
        assert!(key_compatible(view.data_type(), KeyType::String, false));
        let key = normalize_key(&view, KeyType::String).expect("normalize");
        assert_eq!(key.data_type(), &DataType::Utf8);
        assert!(key_compatible(&DataType::Int32, KeyType::Int64, true));
        assert!(!key_compatible(&DataType::Int32, KeyType::Int64, false));
        assert!(!key_compatible(&DataType::Utf8, KeyType::Int64, true));
    }
}
