//! Value and key types, durations and timestamps.

use serde::{Deserialize, Serialize};

/// Scalar feature types (SEMANTICS.md "Feature values").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum ScalarType {
    Bool,
    Int32,
    Int64,
    Float32,
    Float64,
    String,
    Bytes,
    Timestamp,
}

/// A feature's type: a scalar or a list of scalars (`list<float32>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ValueType {
    pub scalar: ScalarType,
    pub list: bool,
}

/// Join key types (SEMANTICS.md "Entities and keys").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum KeyType {
    Int64,
    Int32,
    String,
    Bytes,
}

impl ScalarType {
    pub const ALL: [ScalarType; 8] = [
        ScalarType::Bool,
        ScalarType::Int32,
        ScalarType::Int64,
        ScalarType::Float32,
        ScalarType::Float64,
        ScalarType::String,
        ScalarType::Bytes,
        ScalarType::Timestamp,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ScalarType::Bool => "bool",
            ScalarType::Int32 => "int32",
            ScalarType::Int64 => "int64",
            ScalarType::Float32 => "float32",
            ScalarType::Float64 => "float64",
            ScalarType::String => "string",
            ScalarType::Bytes => "bytes",
            ScalarType::Timestamp => "timestamp",
        }
    }

    pub fn parse(text: &str) -> Option<ScalarType> {
        ScalarType::ALL.into_iter().find(|t| t.name() == text)
    }
}

impl ValueType {
    pub const fn scalar(scalar: ScalarType) -> Self {
        ValueType {
            scalar,
            list: false,
        }
    }

    /// Parses `int64`, `list<float32>`, ...
    pub fn parse(text: &str) -> Option<ValueType> {
        let text = text.trim();
        if let Some(inner) = text
            .strip_prefix("list<")
            .and_then(|rest| rest.strip_suffix('>'))
        {
            return ScalarType::parse(inner.trim()).map(|scalar| ValueType { scalar, list: true });
        }
        ScalarType::parse(text).map(ValueType::scalar)
    }
}

impl std::fmt::Display for ValueType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.list {
            write!(f, "list<{}>", self.scalar.name())
        } else {
            f.write_str(self.scalar.name())
        }
    }
}

impl Serialize for ValueType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ValueType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ValueType::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown type `{text}`; use one of bool, int32, int64, float32, float64, string, bytes, timestamp or list<...> of these"
            ))
        })
    }
}

impl KeyType {
    pub fn name(self) -> &'static str {
        match self {
            KeyType::Int64 => "int64",
            KeyType::Int32 => "int32",
            KeyType::String => "string",
            KeyType::Bytes => "bytes",
        }
    }

    pub fn parse(text: &str) -> Option<KeyType> {
        [
            KeyType::Int64,
            KeyType::Int32,
            KeyType::String,
            KeyType::Bytes,
        ]
        .into_iter()
        .find(|t| t.name() == text)
    }
}

impl std::fmt::Display for KeyType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Microseconds since the Unix epoch, UTC (SEMANTICS.md "Time").
pub type Micros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;

/// Parses a duration such as `2h`, `90m`, `1d12h`, `45s`, `500ms` or `0` into microseconds.
pub fn parse_duration(text: &str) -> Option<Micros> {
    let text = text.trim();
    if text == "0" {
        return Some(0);
    }
    let mut total: i64 = 0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return None;
        }
        let number: i64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "w" => 7 * 86_400 * MICROS_PER_SECOND,
            "d" => 86_400 * MICROS_PER_SECOND,
            "h" => 3_600 * MICROS_PER_SECOND,
            "m" => 60 * MICROS_PER_SECOND,
            "s" => MICROS_PER_SECOND,
            "ms" => 1_000,
            "us" => 1,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total = total.checked_add(number.checked_mul(unit)?)?;
    }
    Some(total)
}

/// Formats microseconds as the shortest duration text `parse_duration` reads back.
pub fn format_duration(micros: Micros) -> String {
    if micros == 0 {
        return "0".to_string();
    }
    let units = [
        ("d", 86_400 * MICROS_PER_SECOND),
        ("h", 3_600 * MICROS_PER_SECOND),
        ("m", 60 * MICROS_PER_SECOND),
        ("s", MICROS_PER_SECOND),
        ("ms", 1_000),
        ("us", 1),
    ];
    let mut rest = micros;
    let mut out = String::new();
    for (name, size) in units {
        if rest >= size {
            out.push_str(&format!("{}{}", rest / size, name));
            rest %= size;
        }
    }
    out
}

/// Parses an RFC 3339 timestamp into microseconds (nanoseconds are truncated).
pub fn parse_rfc3339(text: &str) -> Option<Micros> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.timestamp_micros())
}

/// Formats microseconds as RFC 3339 in UTC.
pub fn format_rfc3339(micros: Micros) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => format!("{micros}us"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        let table = [
            ("2h", Some(7_200 * MICROS_PER_SECOND)),
            ("90m", Some(5_400 * MICROS_PER_SECOND)),
            ("1d12h", Some(129_600 * MICROS_PER_SECOND)),
            ("0", Some(0)),
            ("500ms", Some(500_000)),
            ("1w", Some(604_800 * MICROS_PER_SECOND)),
            ("", None),
            ("h", None),
            ("2 hours", None),
            ("-1h", None),
            ("99999999999999999d", None),
        ];
        for (text, want) in table {
            assert_eq!(parse_duration(text), want, "{text}");
            if let Some(micros) = want {
                assert_eq!(parse_duration(&format_duration(micros)), Some(micros));
            }
        }
    }

    #[test]
    fn value_types_parse() {
        assert_eq!(
            ValueType::parse("list<float32>"),
            Some(ValueType {
                scalar: ScalarType::Float32,
                list: true
            })
        );
        assert_eq!(
            ValueType::parse("int64"),
            Some(ValueType::scalar(ScalarType::Int64))
        );
        assert_eq!(ValueType::parse("list<list<int64>>"), None);
        assert_eq!(ValueType::parse("float"), None);
        for scalar in ScalarType::ALL {
            let t = ValueType { scalar, list: true };
            assert_eq!(ValueType::parse(&t.to_string()), Some(t));
        }
    }

    #[test]
    fn timestamps_round_trip() {
        let micros = parse_rfc3339("2026-01-02T03:04:05.123456789Z");
        assert_eq!(micros, Some(1_767_323_045_123_456));
        assert_eq!(
            format_rfc3339(1_767_323_045_123_456),
            "2026-01-02T03:04:05.123456Z"
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
