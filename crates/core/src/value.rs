//! Typed values of keys and features, as they travel between the API and the online store.

use crate::types::{KeyType, Micros, ScalarType, ValueType};

/// One join key value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyValue {
    Int64(i64),
    Int32(i32),
    String(String),
    Bytes(Vec<u8>),
}

impl KeyValue {
    pub fn key_type(&self) -> KeyType {
        match self {
            KeyValue::Int64(_) => KeyType::Int64,
            KeyValue::Int32(_) => KeyType::Int32,
            KeyValue::String(_) => KeyType::String,
            KeyValue::Bytes(_) => KeyType::Bytes,
        }
    }
}

/// For messages and reports: `null`, numbers as Rust prints them (shortest round trip),
/// strings quoted, bytes in hex, timestamps in microseconds, lists in brackets.
impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Int32(v) => write!(f, "{v}"),
            Value::Int64(v) => write!(f, "{v}"),
            Value::Float32(v) => write!(f, "{v}"),
            Value::Float64(v) => write!(f, "{v}"),
            Value::String(v) => write!(f, "{v:?}"),
            Value::Bytes(v) => write!(f, "0x{}", crate::fingerprint::hex(v)),
            Value::Timestamp(v) => write!(f, "{v}us"),
            Value::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
        }
    }
}

impl std::fmt::Display for KeyValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyValue::Int64(v) => write!(f, "{v}"),
            KeyValue::Int32(v) => write!(f, "{v}"),
            KeyValue::String(v) => write!(f, "{v}"),
            KeyValue::Bytes(v) => {
                for b in v {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// One feature value; `Null` is a value of every type.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int32(i32),
    Int64(i64),
    Float32(f32),
    Float64(f64),
    String(String),
    Bytes(Vec<u8>),
    /// Microseconds since the epoch, UTC.
    Timestamp(Micros),
    /// A list of scalars of one type; elements may be null.
    List(Vec<Value>),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Whether this value can be stored in a feature of type `value_type`.
    pub fn fits(&self, value_type: ValueType) -> bool {
        match self {
            Value::Null => true,
            Value::List(items) => {
                value_type.list
                    && items
                        .iter()
                        .all(|v| v.fits(ValueType::scalar(value_type.scalar)))
            }
            scalar => !value_type.list && scalar.scalar_type() == Some(value_type.scalar),
        }
    }

    pub fn scalar_type(&self) -> Option<ScalarType> {
        Some(match self {
            Value::Bool(_) => ScalarType::Bool,
            Value::Int32(_) => ScalarType::Int32,
            Value::Int64(_) => ScalarType::Int64,
            Value::Float32(_) => ScalarType::Float32,
            Value::Float64(_) => ScalarType::Float64,
            Value::String(_) => ScalarType::String,
            Value::Bytes(_) => ScalarType::Bytes,
            Value::Timestamp(_) => ScalarType::Timestamp,
            Value::Null | Value::List(_) => return None,
        })
    }
}

/// One row of a feature view: its key (in the view's canonical key order), times and
/// feature values (in the order of the view version's features).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: Vec<KeyValue>,
    pub event_ts: Micros,
    pub created_ts: Option<Micros>,
    pub values: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_fit_their_types() {
        let list = ValueType {
            scalar: ScalarType::Float32,
            list: true,
        };
        assert!(Value::List(vec![Value::Float32(1.0), Value::Null]).fits(list));
        assert!(!Value::List(vec![Value::Float64(1.0)]).fits(list));
        assert!(!Value::Float32(1.0).fits(list));
        assert!(Value::Null.fits(list));
        assert!(Value::Int64(3).fits(ValueType::scalar(ScalarType::Int64)));
        assert!(!Value::Int32(3).fits(ValueType::scalar(ScalarType::Int64)));
    }
}
