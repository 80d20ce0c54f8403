//! Online rows: ordered, atomic-per-key writes and batched reads.

use std::collections::BTreeMap;

use quiver_core::ResolvedView;
use quiver_core::semantics::{row_order, write_wins};
use quiver_core::value::{KeyValue, Row, Value};
use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::keys::{check_key, encode_key};
use crate::row_codec::{StoredRow, decode_order, decode_row, encode_row};
use crate::store::{CF_ONLINE, RocksStore, synced};

/// What `write_rows` did: every row given is counted exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows stored (at most one per key per call).
    pub written: u64,
    /// Rows older than the stored row or than another row for the same key in the call.
    pub skipped_older: u64,
}

impl RocksStore {
    /// Writes rows of `view` with the ordering rule: a row replaces the stored one only if
    /// `write_wins((event_ts, created_ts), stored order)`. Atomic per key under concurrent
    /// callers: the keys' lock stripes are held (taken in sorted order) from the read of the
    /// stored orders (one multi-get) to the end of the write (one `WriteBatch`). Within one
    /// call, several rows for the same key keep the greatest by order (ties: the last one).
    /// Every row is validated first; an invalid one is [`Error::InvalidRow`] and nothing of
    /// the batch is written. `durable` syncs the WAL before returning.
    pub fn write_rows(&self, view: &ResolvedView, rows: &[Row], durable: bool) -> Result<WriteStats> {
        for (index, row) in rows.iter().enumerate() {
            validate_row(view, index, row)?;
        }
        // Latest row per encoded key (the map keeps keys sorted for the multi-get).
        let mut latest: BTreeMap<Vec<u8>, &Row> = BTreeMap::new();
        for row in rows {
            let key = encode_key(&view.name, &row.key);
            match latest.get(&key) {
                Some(kept)
                    if !write_wins(
                        row_order(row.event_ts, row.created_ts),
                        Some(row_order(kept.event_ts, kept.created_ts)),
                    ) => {}
                _ => {
                    latest.insert(key, row);
                }
            }
        }
        let mut encoded = Vec::with_capacity(latest.len());
        for (key, row) in &latest {
            let value = encode_row(view.version, row.event_ts, row.created_ts, &row.values)?;
            encoded.push((key.as_slice(), row_order(row.event_ts, row.created_ts), value));
        }

        let cf = self.cf(CF_ONLINE)?;
        let guards = self.lock_keys(latest.keys().map(Vec::as_slice));
        let stored = self
            .db
            .batched_multi_get_cf(cf, latest.keys(), true);
        let mut batch = WriteBatch::default();
        let mut written = 0u64;
        for ((key, order, value), stored) in encoded.iter().zip(stored) {
            let stored_order = match stored.map_err(Error::storage("read stored rows"))? {
                None => None,
                Some(bytes) => Some(decode_order(&bytes)?),
            };
            if write_wins(*order, stored_order) {
                batch.put_cf(cf, key, value);
                written += 1;
            }
        }
        if written > 0 {
            let options = if durable {
                synced()
            } else {
                rocksdb::WriteOptions::default()
            };
            self.db
                .write_opt(batch, &options)
                .map_err(Error::storage("write online rows"))?;
        }
        drop(guards);
        let stats = WriteStats {
            written,
            skipped_older: rows.len() as u64 - written,
        };
        tracing::debug!(
            feature_view = %view.name,
            rows = rows.len(),
            written = stats.written,
            skipped_older = stats.skipped_older,
            durable,
            "wrote online rows"
        );
        Ok(stats)
    }

    /// Reads the stored row for each key (in the view's canonical join key order) with one
    /// multi-get. A key that does not match `view.join_keys` is [`Error::KeyType`] (or
    /// [`Error::KeyArity`]), never a silent miss.
    pub fn read_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Vec<Option<StoredRow>>> {
        for key in keys {
            check_key(view, key)?;
        }
        let encoded: Vec<Vec<u8>> = keys.iter().map(|key| encode_key(&view.name, key)).collect();
        let cf = self.cf(CF_ONLINE)?;
        self.db
            .batched_multi_get_cf(cf, &encoded, false)
            .into_iter()
            .map(|stored| match stored.map_err(Error::storage("read online rows"))? {
                None => Ok(None),
                Some(bytes) => decode_row(&bytes).map(Some),
            })
            .collect()
    }
}

fn validate_row(view: &ResolvedView, index: usize, row: &Row) -> Result<()> {
    check_key(view, &row.key)
        .map_err(|error| Error::invalid_row(format!("rows[{index}].key"), error.to_string()))?;
    if row.values.len() != view.features.len() {
        return Err(Error::invalid_row(
            format!("rows[{index}].values"),
            format!(
                "{} values for the {} features of `{}`",
                row.values.len(),
                view.features.len(),
                view.pinned_name()
            ),
        ));
    }
    for (position, (value, feature)) in row.values.iter().zip(&view.features).enumerate() {
        if !value.fits(feature.value_type) {
            return Err(Error::invalid_row(
                format!("rows[{index}].values[{position}]"),
                format!(
                    "feature `{}` is {}, got {}",
                    feature.name,
                    feature.value_type,
                    describe(value)
                ),
            ));
        }
    }
    Ok(())
}

/// Names a value's type for error messages without printing the value (lists can be long).
fn describe(value: &Value) -> String {
    match value {
        Value::List(items) => {
            let mut names: Vec<&str> = items
                .iter()
                .filter(|item| !item.is_null())
                .map(|item| item.scalar_type().map_or("list", |t| t.name()))
                .collect();
            names.sort_unstable();
            names.dedup();
            format!("a list of {}", names.join(" and "))
        }
        scalar => scalar
            .scalar_type()
            .map_or_else(|| "null".to_string(), |t| format!("a {} value", t.name())),
    }
}
