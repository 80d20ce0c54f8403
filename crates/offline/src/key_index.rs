//! Dense ids ("slots") for entity keys, assigned batch by batch over Arrow key columns.
//!
//! A single integer key is hashed as a native `i64`; any other key (strings, bytes,
//! composite) is hashed as its Arrow row encoding, a byte string that is equal exactly when
//! the keys are equal. A view with no key has one slot. Rows with a null key get no slot.
//! The maps use the Fx hash (`rustc-hash`): fast, not DoS-resistant, and good enough for keys
//! from the user's own data.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType, Int32Type, Int64Type};
use arrow::row::{RowConverter, SortField};
use rustc_hash::FxBuildHasher;

use crate::error::Result;

/// Marks a row without a slot (null key, or unknown key on lookup).
pub(crate) const NO_SLOT: u32 = u32::MAX;

/// Maps keys to dense slots `0..len()`, in order of first appearance.
#[derive(Debug)]
pub(crate) struct KeyIndex {
    kind: Kind,
    n_slots: u32,
}

#[derive(Debug)]
enum Kind {
    Global,
    Int(HashMap<i64, u32, FxBuildHasher>),
    Encoded {
        converter: RowConverter,
        map: HashMap<Box<[u8]>, u32, FxBuildHasher>,
    },
}

impl KeyIndex {
    /// An index for keys of these canonical Arrow types (in key order).
    pub(crate) fn new(types: &[DataType]) -> Result<Self> {
        let kind = match types {
            [] => Kind::Global,
            [DataType::Int64] | [DataType::Int32] => Kind::Int(HashMap::default()),
            _ => Kind::Encoded {
                converter: RowConverter::new(types.iter().cloned().map(SortField::new).collect())?,
                map: HashMap::default(),
            },
        };
        Ok(KeyIndex { kind, n_slots: 0 })
    }

    pub(crate) fn len(&self) -> usize {
        self.n_slots as usize
    }

    /// Bytes the index holds, about: its hash table (and the encoded keys).
    pub(crate) fn memory_size(&self) -> usize {
        match &self.kind {
            Kind::Global => 0,
            Kind::Int(map) => map.capacity() * (8 + 4 + 1),
            Kind::Encoded { map, .. } => {
                let keys: usize = map.keys().map(|k| k.len()).sum();
                map.capacity() * (16 + 4 + 1) + keys
            }
        }
    }

    /// Writes the slot of each row to `out` (cleared first), creating slots for new keys.
    pub(crate) fn assign(
        &mut self,
        keys: &[ArrayRef],
        n_rows: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        out.reserve(n_rows);
        let nulls = key_nulls(keys);
        let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        let n_slots = &mut self.n_slots;
        match &mut self.kind {
            Kind::Global => {
                let slot = match *n_slots {
                    _ if n_rows == 0 => NO_SLOT,
                    0 => new_slot(n_slots),
                    _ => 0,
                };
                out.resize(n_rows, slot);
            }
            Kind::Int(map) => {
                let values = int_values(&keys[0]);
                for (i, value) in values.iter().enumerate().take(n_rows) {
                    let slot = match map.get(value) {
                        _ if !valid(i) => NO_SLOT,
                        Some(slot) => *slot,
                        None => {
                            let slot = new_slot(n_slots);
                            map.insert(*value, slot);
                            slot
                        }
                    };
                    out.push(slot);
                }
            }
            Kind::Encoded { converter, map } => {
                let rows = converter.convert_columns(keys)?;
                for i in 0..n_rows {
                    let row = rows.row(i);
                    let bytes: &[u8] = row.as_ref();
                    let slot = match map.get(bytes) {
                        _ if !valid(i) => NO_SLOT,
                        Some(slot) => *slot,
                        None => {
                            let slot = new_slot(n_slots);
                            map.insert(bytes.into(), slot);
                            slot
                        }
                    };
                    out.push(slot);
                }
            }
        }
        if self.n_slots == NO_SLOT {
            return Err(crate::error::Error::TooLarge(
                "more than 4 billion distinct keys".into(),
            ));
        }
        Ok(())
    }

    /// Writes the slot of each row to `out` (cleared first); unknown keys get [`NO_SLOT`].
    pub(crate) fn lookup(
        &self,
        keys: &[ArrayRef],
        n_rows: usize,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        out.reserve(n_rows);
        let nulls = key_nulls(keys);
        let valid = |i: usize| nulls.as_ref().is_none_or(|n| n.is_valid(i));
        match &self.kind {
            Kind::Global => {
                let slot = if self.n_slots > 0 { 0 } else { NO_SLOT };
                out.resize(n_rows, slot);
            }
            Kind::Int(map) => {
                let values = int_values(&keys[0]);
                out.extend(
                    values
                        .iter()
                        .take(n_rows)
                        .enumerate()
                        .map(|(i, v)| match map.get(v) {
                            Some(slot) if valid(i) => *slot,
                            _ => NO_SLOT,
                        }),
                );
            }
            Kind::Encoded { converter, map } => {
                let rows = converter.convert_columns(keys)?;
                out.extend((0..n_rows).map(|i| {
                    let row = rows.row(i);
                    let bytes: &[u8] = row.as_ref();
                    match map.get(bytes) {
                        Some(slot) if valid(i) => *slot,
                        _ => NO_SLOT,
                    }
                }));
            }
        }
        Ok(())
    }
}

/// Rows where any key column is null.
fn key_nulls(keys: &[ArrayRef]) -> Option<NullBuffer> {
    let nulls: Vec<Option<NullBuffer>> = keys.iter().map(|k| k.logical_nulls()).collect();
    NullBuffer::union_many(nulls.iter().map(|n| n.as_ref()))
}

/// The next slot id; [`NO_SLOT`] once the id space is used up (reported by the caller).
fn new_slot(n_slots: &mut u32) -> u32 {
    if *n_slots == NO_SLOT {
        return NO_SLOT;
    }
    *n_slots += 1;
    *n_slots - 1
}

/// An int32 or int64 key column as i64 values (int32 widened; int64 borrowed).
fn int_values(key: &ArrayRef) -> std::borrow::Cow<'_, [i64]> {
    match key.data_type() {
        DataType::Int32 => std::borrow::Cow::Owned(
            key.as_primitive::<Int32Type>()
                .values()
                .iter()
                .map(|v| i64::from(*v))
                .collect(),
        ),
        _ => std::borrow::Cow::Borrowed(key.as_primitive::<Int64Type>().values()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn slots_are_dense_and_nulls_get_none() {
        let mut index = KeyIndex::new(&[DataType::Int64]).expect("index");
        let keys: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![
            Some(7),
            None,
            Some(3),
            Some(7),
        ]))];
        let mut out = Vec::new();
        index.assign(&keys, 4, &mut out).expect("assign");
        assert_eq!(out, [0, NO_SLOT, 1, 0]);
        let probe: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![3, 9]))];
        index.lookup(&probe, 2, &mut out).expect("lookup");
        assert_eq!(out, [1, NO_SLOT]);
        assert_eq!(index.len(), 2);

        let mut index = KeyIndex::new(&[DataType::Utf8, DataType::Int32]).expect("index");
        let keys: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["a", "a", "b"])),
            Arc::new(Int32Array::from(vec![1, 2, 1])),
        ];
        index.assign(&keys, 3, &mut out).expect("assign");
        assert_eq!(out, [0, 1, 2]);
        index.lookup(&keys, 3, &mut out).expect("lookup");
        assert_eq!(out, [0, 1, 2]);

        let mut index = KeyIndex::new(&[]).expect("index");
        index.lookup(&[], 2, &mut out).expect("lookup");
        assert_eq!(out, [NO_SLOT, NO_SLOT]);
        index.assign(&[], 2, &mut out).expect("assign");
        assert_eq!(out, [0, 0]);
    }
}
