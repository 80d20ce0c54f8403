//! The online key layout, a persisted format (`FORMAT_V1`):
//!
//! ```text
//! [0x01 format][u16 BE name length][view name bytes]
//! then per join key, in `ResolvedView::join_keys` order:
//!   [tag u8] 1 = int64  -> 8 bytes big-endian, sign bit flipped
//!            2 = int32  -> 4 bytes big-endian, sign bit flipped
//!            3 = string -> u32 BE length + UTF-8 bytes
//!            4 = bytes  -> u32 BE length + bytes
//! ```
//!
//! Keys are canonical (one key, one byte string) and keyed by view *name*, not version, so
//! rows survive compatible version bumps. Flipping the sign bit makes integer keys sort
//! numerically (negative before positive) within a view.

use quiver_core::ResolvedView;
use quiver_core::value::KeyValue;

use crate::error::{Error, Result};
use crate::reader::Reader;

/// The leading byte of every online key written by this version of the layout.
pub const FORMAT_V1: u8 = 1;

const TAG_INT64: u8 = 1;
const TAG_INT32: u8 = 2;
const TAG_STRING: u8 = 3;
const TAG_BYTES: u8 = 4;

/// Encodes the key of `view` (a view name). Callers check the key first with [`check_key`],
/// which refuses the lengths the layout cannot hold (a longer length field would be clamped).
pub fn encode_key(view: &str, key: &[KeyValue]) -> Vec<u8> {
    let parts_len: usize = key.iter().map(|part| 5 + part_len(part)).sum();
    let mut out = Vec::with_capacity(3 + view.len() + parts_len);
    encode_key_into(&mut out, view, key);
    out
}

/// Like [`encode_key`], appending to `out` (a buffer reused across keys).
pub fn encode_key_into(out: &mut Vec<u8>, view: &str, key: &[KeyValue]) {
    out.push(FORMAT_V1);
    out.extend_from_slice(&clamp_u16(view.len()).to_be_bytes());
    out.extend_from_slice(view.as_bytes());
    for part in key {
        match part {
            KeyValue::Int64(v) => {
                out.push(TAG_INT64);
                out.extend_from_slice(&((*v as u64) ^ (1 << 63)).to_be_bytes());
            }
            KeyValue::Int32(v) => {
                out.push(TAG_INT32);
                out.extend_from_slice(&((*v as u32) ^ (1 << 31)).to_be_bytes());
            }
            KeyValue::String(v) => {
                out.push(TAG_STRING);
                out.extend_from_slice(&clamp_u32(v.len()).to_be_bytes());
                out.extend_from_slice(v.as_bytes());
            }
            KeyValue::Bytes(v) => {
                out.push(TAG_BYTES);
                out.extend_from_slice(&clamp_u32(v.len()).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
}

/// Decodes a key written by [`encode_key`] into the view name and the key parts.
pub fn decode_key(bytes: &[u8]) -> Result<(String, Vec<KeyValue>)> {
    let mut reader = Reader::new(bytes, "online key");
    let format = reader.u8()?;
    if format != FORMAT_V1 {
        return Err(reader.error(format!("unknown key format {format}")));
    }
    let name_len = u16::from_be_bytes(reader.array()?);
    let name_bytes = reader.take(usize::from(name_len))?;
    let name = utf8(&reader, name_bytes)?;
    let mut key = Vec::new();
    while reader.remaining() > 0 {
        let part = match reader.u8()? {
            TAG_INT64 => KeyValue::Int64((u64::from_be_bytes(reader.array()?) ^ (1 << 63)) as i64),
            TAG_INT32 => KeyValue::Int32((u32::from_be_bytes(reader.array()?) ^ (1 << 31)) as i32),
            TAG_STRING => {
                let len = u32::from_be_bytes(reader.array()?) as usize;
                let bytes = reader.take(len)?;
                KeyValue::String(utf8(&reader, bytes)?)
            }
            TAG_BYTES => {
                let len = u32::from_be_bytes(reader.array()?) as usize;
                KeyValue::Bytes(reader.take(len)?.to_vec())
            }
            tag => return Err(reader.error(format!("unknown key part tag {tag}"))),
        };
        key.push(part);
    }
    Ok((name, key))
}

/// Checks a key against `view`'s join keys: arity, each part's type, and the layout's
/// length limits. Reads report these errors as they are; writes wrap them as invalid rows.
pub fn check_key(view: &ResolvedView, key: &[KeyValue]) -> Result<()> {
    check_view_name(&view.name)?;
    if key.len() != view.join_keys.len() {
        return Err(Error::KeyArity {
            view: view.name.clone(),
            expected: view.join_keys.len(),
            actual: key.len(),
            names: view
                .join_keys
                .iter()
                .map(|k| k.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for (position, (part, join_key)) in key.iter().zip(&view.join_keys).enumerate() {
        if part.key_type() != join_key.key_type {
            return Err(Error::KeyType {
                view: view.name.clone(),
                join_key: join_key.name.clone(),
                position,
                expected: join_key.key_type,
                actual: part.key_type(),
            });
        }
        if u32::try_from(part_len(part)).is_err() {
            return Err(Error::TooLong {
                what: format!("join key `{}`", join_key.name),
                len: part_len(part),
                max: u64::from(u32::MAX),
            });
        }
    }
    Ok(())
}

pub(crate) fn check_view_name(name: &str) -> Result<()> {
    match u16::try_from(name.len()) {
        Ok(_) => Ok(()),
        Err(_) => Err(Error::TooLong {
            what: "view name".to_string(),
            len: name.len(),
            max: u64::from(u16::MAX),
        }),
    }
}

fn part_len(part: &KeyValue) -> usize {
    match part {
        KeyValue::Int64(_) => 8,
        KeyValue::Int32(_) => 4,
        KeyValue::String(v) => v.len(),
        KeyValue::Bytes(v) => v.len(),
    }
}

fn utf8(reader: &Reader<'_>, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| reader.error(format!("invalid UTF-8: {e}")))
}

fn clamp_u16(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(u16::MAX)
}

fn clamp_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::view;
    use quiver_core::types::KeyType;

    #[test]
    fn keys_round_trip_and_carry_the_format_byte() {
        let table: Vec<Vec<KeyValue>> = vec![
            vec![],
            vec![KeyValue::Int64(i64::MIN)],
            vec![KeyValue::Int64(-1), KeyValue::Int32(i32::MAX)],
            vec![
                KeyValue::String("héllo".into()),
                KeyValue::Bytes(vec![0, 255]),
            ],
            vec![KeyValue::String(String::new()), KeyValue::Int32(i32::MIN)],
        ];
        for key in table {
            let bytes = encode_key("driver_stats", &key);
            assert_eq!(bytes[0], FORMAT_V1);
            assert_eq!(&bytes[1..3], &12u16.to_be_bytes());
            assert_eq!(&bytes[3..15], b"driver_stats");
            assert_eq!(
                decode_key(&bytes).expect("decodes"),
                ("driver_stats".into(), key)
            );
        }
    }

    #[test]
    fn integer_keys_sort_numerically() {
        let values = [i64::MIN, -1_000, -1, 0, 1, 7, i64::MAX];
        let encoded: Vec<_> = values
            .iter()
            .map(|v| encode_key("v", &[KeyValue::Int64(*v)]))
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
        let encoded: Vec<_> = [i32::MIN, -5, 0, 5, i32::MAX]
            .iter()
            .map(|v| encode_key("v", &[KeyValue::Int32(*v)]))
            .collect();
        assert!(encoded.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn keys_are_canonical_and_separate_views_and_types() {
        let key = [KeyValue::Int64(42), KeyValue::String("a".into())];
        assert_eq!(encode_key("v", &key), encode_key("v", &key.clone()));
        assert_ne!(encode_key("v", &key), encode_key("w", &key));
        assert_ne!(
            encode_key("v", &[KeyValue::Int64(1)]),
            encode_key("v", &[KeyValue::Int32(1)])
        );
        // A length prefix keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            encode_key(
                "v",
                &[KeyValue::String("ab".into()), KeyValue::String("c".into())]
            ),
            encode_key(
                "v",
                &[KeyValue::String("a".into()), KeyValue::String("bc".into())]
            )
        );
    }

    #[test]
    fn corrupt_keys_are_errors() {
        let good = encode_key("v", &[KeyValue::String("abc".into())]);
        for cut in 0..good.len() - 1 {
            let result = decode_key(&good[..cut]);
            // Cutting right after the name yields a valid key with no parts.
            if cut != 4 {
                assert!(result.is_err(), "cut at {cut}");
            }
        }
        assert!(decode_key(&[2, 0, 0]).is_err());
        assert!(decode_key(&[1, 0, 1, b'v', 9]).is_err());
        assert!(decode_key(&[1, 0, 1, 0xff]).is_err());
    }

    #[test]
    fn keys_are_checked_against_the_view() {
        let view = view("v", &[("a", KeyType::Int64), ("b", KeyType::String)], &[]);
        let good = [KeyValue::Int64(1), KeyValue::String("x".into())];
        assert!(check_key(&view, &good).is_ok());
        let swapped = [KeyValue::String("x".into()), KeyValue::Int64(1)];
        assert!(matches!(
            check_key(&view, &swapped),
            Err(Error::KeyType { position: 0, .. })
        ));
        assert!(matches!(
            check_key(&view, &good[..1]),
            Err(Error::KeyArity {
                expected: 2,
                actual: 1,
                ..
            })
        ));
    }
}
