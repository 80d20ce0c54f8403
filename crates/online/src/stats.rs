//! What an operator watches in the store: RocksDB's own figures ([`StoreStats`]), the newest
//! event written online per view, and consistent checkpoints for backups.

use std::path::Path;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::merge_operator::MergeOperands;
use rocksdb::statistics::Ticker;
use rocksdb::{WriteBatch, properties};

use crate::error::{Error, Result};
use crate::store::{CF_META, CF_ONLINE, CF_REGISTRY, RocksStore};

/// RocksDB's figures for the online rows, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStats {
    /// Estimated bytes of live data in the online column family.
    pub live_data_bytes: u64,
    /// Bytes in the memtables (active and immutable) of every column family.
    pub memtable_bytes: u64,
    /// Bytes compaction still has to rewrite to reach its target shape.
    pub pending_compaction_bytes: u64,
    /// Bytes held by the online block cache (up to its capacity; part of the RSS).
    pub block_cache_bytes: u64,
    /// The online block cache's capacity (`--online-block-cache-bytes`).
    pub block_cache_capacity_bytes: u64,
    /// Block cache hits and misses since the store was opened (every column family).
    pub block_cache_hits: u64,
    pub block_cache_misses: u64,
    /// Bytes held by the cache of decoded rows, and its capacity
    /// (`--online-row-cache-bytes`; both 0 when it is off).
    pub row_cache_bytes: u64,
    pub row_cache_capacity_bytes: u64,
    /// Row cache hits and misses since the store was opened.
    pub row_cache_hits: u64,
    pub row_cache_misses: u64,
}

impl StoreStats {
    /// Hits over lookups since the store opened; `None` before the first lookup.
    pub fn block_cache_hit_ratio(&self) -> Option<f64> {
        let lookups = self.block_cache_hits + self.block_cache_misses;
        (lookups > 0).then(|| self.block_cache_hits as f64 / lookups as f64)
    }
}

impl RocksStore {
    /// RocksDB's figures now (properties and statistics tickers: memory reads, no I/O).
    pub fn stats(&self) -> Result<StoreStats> {
        let property = |cf: &'static str, name: &properties::PropName| {
            self.db
                .property_int_value_cf(self.cf(cf)?, name)
                .map(Option::unwrap_or_default)
                .map_err(Error::storage("read a store property"))
        };
        let mut memtable_bytes = 0;
        for cf in [CF_ONLINE, CF_REGISTRY, CF_META] {
            memtable_bytes += property(cf, properties::CUR_SIZE_ALL_MEM_TABLES)?;
        }
        let property = |name| property(CF_ONLINE, name);
        let rows = self
            .row_cache
            .as_ref()
            .map(crate::row_cache::RowCache::stats)
            .unwrap_or_default();
        Ok(StoreStats {
            row_cache_bytes: rows.bytes,
            row_cache_capacity_bytes: rows.capacity_bytes,
            row_cache_hits: rows.hits,
            row_cache_misses: rows.misses,
            live_data_bytes: property(properties::ESTIMATE_LIVE_DATA_SIZE)?,
            memtable_bytes,
            pending_compaction_bytes: property(properties::ESTIMATE_PENDING_COMPACTION_BYTES)?,
            block_cache_bytes: property(properties::BLOCK_CACHE_USAGE)?,
            block_cache_capacity_bytes: property(properties::BLOCK_CACHE_CAPACITY)?,
            block_cache_hits: self.options.get_ticker_count(Ticker::BlockCacheHit),
            block_cache_misses: self.options.get_ticker_count(Ticker::BlockCacheMiss),
        })
    }

    /// The newest event time (micros) ever written online for the view named `view` (by
    /// push or materialization, kept across restarts); `None` before its first write.
    pub fn newest_event(&self, view: &str) -> Result<Option<i64>> {
        let stored = self
            .db
            .get_cf(self.cf(CF_META)?, newest_event_key(view))
            .map_err(Error::storage("read a view's newest event"))?;
        stored
            .map(|bytes| {
                decode_i64(&bytes).ok_or_else(|| Error::Corrupt {
                    what: format!("newest event of view `{view}`"),
                    message: format!("expected 8 bytes, found {}", bytes.len()),
                })
            })
            .transpose()
    }

    /// Writes a consistent checkpoint of the whole database (online rows, registry states,
    /// watermarks) into `dir`, which must not exist; files are hard links where possible.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        Checkpoint::new(&self.db)
            .and_then(|checkpoint| checkpoint.create_checkpoint(dir))
            .map_err(Error::storage("create a checkpoint"))
    }
}

/// Adds to `batch` the merge that raises the newest event of `view` to `event_ts`.
pub(crate) fn raise_newest_event(
    store: &RocksStore,
    batch: &mut WriteBatch,
    view: &str,
    event_ts: i64,
) -> Result<()> {
    batch.merge_cf(
        store.cf(CF_META)?,
        newest_event_key(view),
        event_ts.to_be_bytes(),
    );
    Ok(())
}

/// `newest/<view name>` in `meta`.
fn newest_event_key(view: &str) -> Vec<u8> {
    format!("newest/{view}").into_bytes()
}

fn decode_i64(bytes: &[u8]) -> Option<i64> {
    Some(i64::from_be_bytes(bytes.try_into().ok()?))
}

/// The `meta` column family's merge operator: the greatest of the stored value and the
/// operands, each an i64 (8 bytes big-endian). Bytes of another length are skipped (they
/// cannot come from this crate), so a merge never fails.
pub(crate) fn merge_max(
    _key: &[u8],
    existing: Option<&[u8]>,
    operands: &MergeOperands,
) -> Option<Vec<u8>> {
    existing
        .into_iter()
        .chain(operands)
        .filter_map(decode_i64)
        .max()
        .map(|max| max.to_be_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::value::{KeyValue, Row, Value};

    fn trips() -> quiver_core::ResolvedView {
        crate::test_support::view(
            "trips",
            &[("id", quiver_core::types::KeyType::Int64)],
            &[("n", "int64")],
        )
    }

    fn row(id: i64, event_ts: i64) -> Row {
        Row {
            key: vec![KeyValue::Int64(id)],
            event_ts,
            created_ts: None,
            values: vec![Value::Int64(1)],
        }
    }

    #[test]
    fn the_newest_event_is_the_maximum_written_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = trips();
        {
            let store = RocksStore::open(dir.path()).expect("open");
            assert_eq!(store.newest_event("trips").expect("read"), None);
            store
                .write_rows(&view, &[row(1, 50), row(2, -7)], false)
                .expect("write");
            store.write_rows(&view, &[row(3, 20)], true).expect("write");
            // A row that loses to the stored one moves nothing.
            store.write_rows(&view, &[row(1, 10)], true).expect("write");
            assert_eq!(store.newest_event("trips").expect("read"), Some(50));
            assert_eq!(store.newest_event("other").expect("read"), None);
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(store.newest_event("trips").expect("read"), Some(50));
        store.write_rows(&view, &[row(4, 90)], true).expect("write");
        assert_eq!(store.newest_event("trips").expect("read"), Some(90));
    }

    #[test]
    fn the_block_cache_has_the_size_asked_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let stats = store.stats().expect("stats");
        assert_eq!(
            stats.block_cache_capacity_bytes,
            crate::DEFAULT_BLOCK_CACHE_BYTES as u64
        );
        drop(store);
        let options = crate::StoreOptions {
            block_cache_bytes: 8 << 20,
            row_cache_bytes: 1 << 20,
        };
        let store = RocksStore::open_with(dir.path(), options).expect("reopen");
        let stats = store.stats().expect("stats");
        assert_eq!(stats.block_cache_capacity_bytes, 8 << 20);
        assert_eq!(stats.row_cache_capacity_bytes, 1 << 20);
        drop(store);
        let off = crate::StoreOptions {
            row_cache_bytes: 0,
            ..options
        };
        let store = RocksStore::open_with(dir.path(), off).expect("reopen");
        let stats = store.stats().expect("stats");
        assert_eq!(
            (stats.row_cache_capacity_bytes, stats.row_cache_hits),
            (0, 0)
        );
    }

    #[test]
    fn stats_count_block_cache_lookups_and_live_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Without the row cache, whose hits would spare the block cache its second lookups.
        let options = crate::StoreOptions {
            row_cache_bytes: 0,
            ..Default::default()
        };
        let store = RocksStore::open_with(dir.path(), options).expect("open");
        let before = store.stats().expect("stats");
        assert_eq!(before.block_cache_hit_ratio(), None);
        let view = trips();
        let rows: Vec<Row> = (0..1_000).map(|i| row(i, i)).collect();
        store.write_rows(&view, &rows, true).expect("write");
        assert!(store.stats().expect("stats").memtable_bytes > before.memtable_bytes);
        store
            .db
            .flush_cf(store.cf(CF_ONLINE).expect("cf"))
            .expect("flush");
        let keys: Vec<Vec<KeyValue>> = (0..1_000).map(|i| vec![KeyValue::Int64(i)]).collect();
        store.read_rows(&view, &keys).expect("read");
        store.read_rows(&view, &keys).expect("read again");
        let after = store.stats().expect("stats");
        assert!(after.live_data_bytes > 0, "{after:?}");
        assert!(after.block_cache_hits > 0, "{after:?}");
        assert!(after.block_cache_misses > 0, "{after:?}");
        let ratio = after.block_cache_hit_ratio().expect("lookups happened");
        assert!(ratio > 0.0 && ratio < 1.0, "{ratio}");
    }

    #[test]
    fn a_damaged_newest_event_is_corrupt_and_the_next_write_repairs_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let cf = store.cf(CF_META).expect("cf");
        store
            .db
            .put_cf(cf, newest_event_key("trips"), [1, 2])
            .expect("put");
        assert!(matches!(
            store.newest_event("trips"),
            Err(Error::Corrupt { .. })
        ));
        let view = trips();
        store.write_rows(&view, &[row(1, 30)], true).expect("write");
        assert_eq!(store.newest_event("trips").expect("read"), Some(30));
    }
}
