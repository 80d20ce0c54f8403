//! The online value layout, a persisted format (format byte 1, or 2 for a row with a tie
//! token). All integers little-endian:
//!
//! ```text
//! [0x01 format][view_version u32][event_ts i64][created flag u8: 0 | 1 (+ created_ts i64)]
//! [u16 value count] then per value a tag and its payload:
//!   0 null      (no payload)        5 float64   8 bytes
//!   1 bool      1 byte, 0 or 1      6 string    u32 length + UTF-8 bytes
//!   2 int32     4 bytes             7 bytes     u32 length + bytes
//!   3 int64     8 bytes             8 timestamp i64 microseconds
//!   4 float32   4 bytes             9 list      u32 element count + tagged elements (no lists)
//! ```
//!
//! Format 2 (a pushed row: `quiver_core::semantics::LogPosition::tie_token`) adds
//! `[tie length u8][tie bytes]` between the created time and the value count; the ordering
//! rule compares it when two rows are equal on (event, created). Format 1 rows have an empty
//! token.
//!
//! Values are in the feature order of the view version that wrote them (`view_version`);
//! `quiver_core::online_read::project_values` maps them onto another version by feature name.

use quiver_core::online_store::StoredRow;
use quiver_core::semantics::{RowOrder, row_order};
use quiver_core::value::Value;

use crate::error::{Error, Result};
use crate::reader::Reader;

/// The leading byte of an online value without a tie token.
pub(crate) const VALUE_FORMAT_V1: u8 = 1;
/// The leading byte of an online value with a tie token.
pub(crate) const VALUE_FORMAT_V2: u8 = 2;

const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT32: u8 = 2;
const TAG_INT64: u8 = 3;
const TAG_FLOAT32: u8 = 4;
const TAG_FLOAT64: u8 = 5;
const TAG_STRING: u8 = 6;
const TAG_BYTES: u8 = 7;
const TAG_TIMESTAMP: u8 = 8;
const TAG_LIST: u8 = 9;

const WHAT: &str = "online value";

/// Encodes a row (format 2 when `tie` is not empty); fails only on lengths the layout
/// cannot hold or on a nested list.
pub(crate) fn encode_row(
    view_version: u32,
    event_ts: i64,
    created_ts: Option<i64>,
    tie: &[u8],
    values: &[Value],
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(24 + tie.len() + values.len() * 9);
    out.push(if tie.is_empty() {
        VALUE_FORMAT_V1
    } else {
        VALUE_FORMAT_V2
    });
    out.extend_from_slice(&view_version.to_le_bytes());
    out.extend_from_slice(&event_ts.to_le_bytes());
    match created_ts {
        None => out.push(0),
        Some(created_ts) => {
            out.push(1);
            out.extend_from_slice(&created_ts.to_le_bytes());
        }
    }
    if !tie.is_empty() {
        let len = u8::try_from(tie.len()).map_err(|_| Error::TooLong {
            what: "tie token of a row".to_string(),
            len: tie.len(),
            max: u64::from(u8::MAX),
        })?;
        out.push(len);
        out.extend_from_slice(tie);
    }
    let count = u16::try_from(values.len()).map_err(|_| Error::TooLong {
        what: "feature values of a row".to_string(),
        len: values.len(),
        max: u64::from(u16::MAX),
    })?;
    out.extend_from_slice(&count.to_le_bytes());
    for value in values {
        encode_value(&mut out, value, true)?;
    }
    Ok(out)
}

/// Decodes a whole stored row.
pub fn decode_row(bytes: &[u8]) -> Result<StoredRow> {
    let mut reader = Reader::new(bytes, WHAT);
    let (view_version, event_ts, created_ts, _) = decode_header(&mut reader)?;
    let count = usize::from(u16::from_le_bytes(reader.array()?));
    if count > reader.remaining() {
        return Err(reader.error(format!(
            "{count} values announced, {} bytes left",
            reader.remaining()
        )));
    }
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        values.push(decode_value(&mut reader, true)?);
    }
    reader.finish()?;
    Ok(StoredRow {
        event_ts,
        created_ts,
        view_version,
        values,
    })
}

/// Decodes only the order and tie token of a stored row (the header), as the write path
/// needs.
pub(crate) fn decode_order(bytes: &[u8]) -> Result<(RowOrder, &[u8])> {
    let mut reader = Reader::new(bytes, WHAT);
    let (_, event_ts, created_ts, tie) = decode_header(&mut reader)?;
    Ok((row_order(event_ts, created_ts), tie))
}

/// `(view version, event, created, tie token)`.
type Header<'a> = (u32, i64, Option<i64>, &'a [u8]);

fn decode_header<'a>(reader: &mut Reader<'a>) -> Result<Header<'a>> {
    let format = reader.u8()?;
    if format != VALUE_FORMAT_V1 && format != VALUE_FORMAT_V2 {
        return Err(reader.error(format!("unknown value format {format}")));
    }
    let view_version = u32::from_le_bytes(reader.array()?);
    let event_ts = i64::from_le_bytes(reader.array()?);
    let created_ts = match reader.u8()? {
        0 => None,
        1 => Some(i64::from_le_bytes(reader.array()?)),
        flag => return Err(reader.error(format!("created flag is {flag}, not 0 or 1"))),
    };
    let tie: &[u8] = if format == VALUE_FORMAT_V2 {
        let len = usize::from(reader.u8()?);
        if len == 0 {
            return Err(reader.error("format 2 with an empty tie token"));
        }
        reader.take(len)?
    } else {
        &[]
    };
    Ok((view_version, event_ts, created_ts, tie))
}

fn encode_value(out: &mut Vec<u8>, value: &Value, top_level: bool) -> Result<()> {
    match value {
        Value::Null => out.push(TAG_NULL),
        Value::Bool(v) => out.extend_from_slice(&[TAG_BOOL, u8::from(*v)]),
        Value::Int32(v) => tagged(out, TAG_INT32, &v.to_le_bytes()),
        Value::Int64(v) => tagged(out, TAG_INT64, &v.to_le_bytes()),
        Value::Float32(v) => tagged(out, TAG_FLOAT32, &v.to_le_bytes()),
        Value::Float64(v) => tagged(out, TAG_FLOAT64, &v.to_le_bytes()),
        Value::Timestamp(v) => tagged(out, TAG_TIMESTAMP, &v.to_le_bytes()),
        Value::String(v) => {
            out.push(TAG_STRING);
            out.extend_from_slice(&len_u32(v.len(), "a string value")?.to_le_bytes());
            out.extend_from_slice(v.as_bytes());
        }
        Value::Bytes(v) => {
            out.push(TAG_BYTES);
            out.extend_from_slice(&len_u32(v.len(), "a bytes value")?.to_le_bytes());
            out.extend_from_slice(v);
        }
        Value::List(items) => {
            if !top_level {
                return Err(Error::invalid_row(
                    "values",
                    "lists of lists cannot be stored",
                ));
            }
            out.push(TAG_LIST);
            out.extend_from_slice(&len_u32(items.len(), "a list value")?.to_le_bytes());
            for item in items {
                encode_value(out, item, false)?;
            }
        }
    }
    Ok(())
}

fn decode_value(reader: &mut Reader<'_>, top_level: bool) -> Result<Value> {
    Ok(match reader.u8()? {
        TAG_NULL => Value::Null,
        TAG_BOOL => match reader.u8()? {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            other => return Err(reader.error(format!("bool byte is {other}"))),
        },
        TAG_INT32 => Value::Int32(i32::from_le_bytes(reader.array()?)),
        TAG_INT64 => Value::Int64(i64::from_le_bytes(reader.array()?)),
        TAG_FLOAT32 => Value::Float32(f32::from_le_bytes(reader.array()?)),
        TAG_FLOAT64 => Value::Float64(f64::from_le_bytes(reader.array()?)),
        TAG_TIMESTAMP => Value::Timestamp(i64::from_le_bytes(reader.array()?)),
        TAG_STRING => {
            let len = u32::from_le_bytes(reader.array()?) as usize;
            let bytes = reader.take(len)?;
            match std::str::from_utf8(bytes) {
                Ok(text) => Value::String(text.to_string()),
                Err(e) => return Err(reader.error(format!("invalid UTF-8 in a string: {e}"))),
            }
        }
        TAG_BYTES => {
            let len = u32::from_le_bytes(reader.array()?) as usize;
            Value::Bytes(reader.take(len)?.to_vec())
        }
        TAG_LIST if top_level => {
            let count = u32::from_le_bytes(reader.array()?) as usize;
            if count > reader.remaining() {
                return Err(reader.error(format!(
                    "list of {count} elements announced, {} bytes left",
                    reader.remaining()
                )));
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                items.push(decode_value(reader, false)?);
            }
            Value::List(items)
        }
        TAG_LIST => return Err(reader.error("list inside a list")),
        tag => return Err(reader.error(format!("unknown value tag {tag}"))),
    })
}

fn tagged(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    out.push(tag);
    out.extend_from_slice(payload);
}

fn len_u32(len: usize, what: &str) -> Result<u32> {
    u32::try_from(len).map_err(|_| Error::TooLong {
        what: what.to_string(),
        len,
        max: u64::from(u32::MAX),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_type() -> Vec<Value> {
        vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Int32(i32::MIN),
            Value::Int64(-7),
            Value::Float32(1.5),
            Value::Float64(f64::MAX),
            Value::String("héllo".into()),
            Value::String(String::new()),
            Value::Bytes(vec![0, 1, 255]),
            Value::Timestamp(1_767_323_045_123_456),
            Value::List(vec![
                Value::Float32(0.25),
                Value::Null,
                Value::Float32(-3.0),
            ]),
            Value::List(vec![]),
            Value::List(vec![Value::String("a".into()), Value::Null]),
        ]
    }

    #[test]
    fn rows_round_trip_with_every_type() {
        for created_ts in [None, Some(-5), Some(i64::MAX)] {
            let values = every_type();
            let bytes = encode_row(7, -123, created_ts, &[], &values).expect("encodes");
            assert_eq!(bytes[0], VALUE_FORMAT_V1);
            let row = decode_row(&bytes).expect("decodes");
            let want = StoredRow {
                event_ts: -123,
                created_ts,
                view_version: 7,
                values: values.clone(),
            };
            assert_eq!(row, want);
            let none: &[u8] = &[];
            assert_eq!(
                decode_order(&bytes).expect("order"),
                ((-123, created_ts), none)
            );
            // With a tie token: format 2, the same row, and the token back.
            let tie = [b'r', 0, 1, 2, 3];
            let bytes = encode_row(7, -123, created_ts, &tie, &values).expect("encodes");
            assert_eq!(bytes[0], VALUE_FORMAT_V2);
            assert_eq!(decode_row(&bytes).expect("decodes"), want);
            let order = decode_order(&bytes).expect("order");
            assert_eq!(order, ((-123, created_ts), &tie[..]));
        }
        let empty = encode_row(1, 0, None, &[], &[]).expect("encodes");
        assert_eq!(decode_row(&empty).expect("decodes").values, vec![]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_row(2, 10, Some(11), &[], &every_type()).expect("encodes");
        for cut in 0..bytes.len() {
            assert!(
                matches!(decode_row(&bytes[..cut]), Err(Error::Corrupt { .. })),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode_row(&longer), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn corrupt_values_are_errors() {
        let header = |count: u16| {
            let mut out = vec![VALUE_FORMAT_V1];
            out.extend_from_slice(&1u32.to_le_bytes());
            out.extend_from_slice(&0i64.to_le_bytes());
            out.push(0);
            out.extend_from_slice(&count.to_le_bytes());
            out
        };
        let mut cases: Vec<Vec<u8>> = vec![
            vec![],
            vec![2],
            [header(1), vec![42]].concat(),
            [header(1), vec![TAG_BOOL, 2]].concat(),
            [header(1), vec![TAG_STRING, 2, 0, 0, 0, 0xff, 0xfe]].concat(),
            [header(1), vec![TAG_STRING, 0xff, 0xff, 0xff, 0xff]].concat(),
            [header(1), vec![TAG_LIST, 0xff, 0xff, 0xff, 0xff, 0]].concat(),
            [header(1), vec![TAG_LIST, 1, 0, 0, 0, TAG_LIST, 0, 0, 0, 0]].concat(),
            header(u16::MAX),
        ];
        let mut bad_flag = header(0);
        bad_flag[13] = 7;
        cases.push(bad_flag);
        // Format 2 without its token, with an empty one, and with one cut short.
        let tied = encode_row(1, 0, None, &[9; 30], &[]).expect("encodes");
        for cut in [14, 15, 30] {
            cases.push(tied[..cut].to_vec());
        }
        let mut empty_tie = tied.clone();
        empty_tie[14] = 0;
        cases.push(empty_tie);
        for case in cases {
            assert!(
                matches!(decode_row(&case), Err(Error::Corrupt { .. })),
                "{case:?}"
            );
        }
        assert!(decode_order(&[1, 0]).is_err());
    }

    #[test]
    fn nested_lists_are_refused_on_encode() {
        let nested = [Value::List(vec![Value::List(vec![])])];
        assert!(matches!(
            encode_row(1, 0, None, &[], &nested),
            Err(Error::InvalidRow { .. })
        ));
    }
}

/// Arbitrary bytes (and valid rows with bytes flipped) decode to a value or an error, never a
/// panic: a stored row is read on every online request.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::keys::decode_key;

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_row(&bytes);
            let _ = decode_order(&bytes);
            let _ = decode_key(&bytes);
        }

        #[test]
        fn flipped_bytes_of_a_valid_row_never_panic(at in any::<prop::sample::Index>(), byte in any::<u8>()) {
            let values = [
                Value::Int64(7),
                Value::String("seven".into()),
                Value::List(vec![Value::Float32(1.5), Value::Null]),
                Value::Null,
            ];
            let mut bytes = encode_row(3, 10, Some(11), &[], &values).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let index = at.index(bytes.len());
            bytes[index] = byte;
            let _ = decode_row(&bytes);
        }
    }
}
