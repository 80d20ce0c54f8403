//! Hash partitioning of rows by their (normalized) key columns: the same key gets the same
//! partition whether it comes from a view row or a label row, because both sides hash the
//! canonical key types (`arrow_types::normalize_key`) with one fixed seed.

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use datafusion::common::hash_utils::{RandomState, create_hashes};

use crate::error::Result;

const SEED: RandomState = RandomState::with_seed(0x5175_6976_6572);

/// The partition (`< n`) of each row of `keys`, written into `out`.
pub(crate) fn partitions(
    keys: &[ArrayRef],
    n_rows: usize,
    n: usize,
    out: &mut Vec<u32>,
) -> Result<()> {
    let mut hashes = vec![0u64; n_rows];
    create_hashes(keys, &SEED, &mut hashes)?;
    out.clear();
    // Multiply-shift: the high bits of the hash pick the partition, for any `n`.
    out.extend(
        hashes
            .iter()
            .map(|h| ((u128::from(*h) * n as u128) >> 64) as u32),
    );
    Ok(())
}

/// `batch` split by `parts` (one partition per row) into `(partition, rows)` pieces, rows in
/// their order within each piece; partitions without rows are left out.
pub(crate) fn split(
    batch: &RecordBatch,
    parts: &[u32],
    n: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    // A stable counting sort of row numbers by partition, then one `take` for the batch.
    let mut starts = vec![0usize; n + 1];
    for p in parts {
        starts[*p as usize + 1] += 1;
    }
    for p in 0..n {
        starts[p + 1] += starts[p];
    }
    let mut next = starts.clone();
    let mut order = vec![0u32; parts.len()];
    for (row, p) in parts.iter().enumerate() {
        order[next[*p as usize]] = row as u32;
        next[*p as usize] += 1;
    }
    let sorted = take_record_batch(batch, &UInt32Array::from(order))?;
    Ok((0..n)
        .filter(|p| starts[p + 1] > starts[*p])
        .map(|p| (p, sorted.slice(starts[p], starts[p + 1] - starts[p])))
        .collect())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn equal_keys_share_a_partition_and_pieces_keep_row_order() {
        let keys: Vec<i64> = (0..1000).map(|i| i % 37).collect();
        let rows: Vec<i64> = (0..1000).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("row", DataType::Int64, false),
        ]));
        let key_column: ArrayRef = Arc::new(Int64Array::from(keys.clone()));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::clone(&key_column), Arc::new(Int64Array::from(rows))],
        )
        .expect("batch");
        let mut parts = Vec::new();
        partitions(&[key_column], 1000, 8, &mut parts).expect("hash");
        assert!(parts.iter().all(|p| *p < 8));
        // Equal keys, equal partitions; and the keys spread over more than one.
        for (a, b) in keys.iter().zip(&parts) {
            let first = keys.iter().position(|k| k == a).expect("present");
            assert_eq!(parts[first], *b);
        }
        assert!(parts.iter().any(|p| *p != parts[0]));
        let pieces = split(&batch, &parts, 8).expect("split");
        assert_eq!(
            pieces.iter().map(|(_, b)| b.num_rows()).sum::<usize>(),
            1000
        );
        for (p, piece) in &pieces {
            let row = piece
                .column(1)
                .as_any()
                .downcast_ref::<Int64Array>()
                .expect("i64");
            assert!(row.values().windows(2).all(|w| w[0] < w[1]), "in order");
            assert!(
                row.values()
                    .iter()
                    .all(|r| parts[*r as usize] as usize == *p)
            );
        }
    }

    #[test]
    fn a_key_hashes_the_same_in_any_batch_and_nulls_have_a_partition() {
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("x"), None, Some("y")]));
        let b: ArrayRef = Arc::new(StringArray::from(vec![Some("y"), Some("x"), None]));
        let (mut pa, mut pb) = (Vec::new(), Vec::new());
        partitions(&[a], 3, 16, &mut pa).expect("hash");
        partitions(&[b], 3, 16, &mut pb).expect("hash");
        assert_eq!((pa[0], pa[2], pa[1]), (pb[1], pb[0], pb[2]));
    }
}
