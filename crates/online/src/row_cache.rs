//! A cache of decoded online rows (and of known absences) by encoded key, in front of RocksDB.
//!
//! A hit costs one hash lookup instead of a memtable or block search and a decode. It never
//! serves a row older than one already served, and a write is served once it returns,
//! because writes and fills of a key serialize on the key's stripe lock (the lock that
//! makes `write_rows` atomic per key), and a generation per stripe tells a fill whether a
//! write came between its read and its insert:
//!
//! - writer, holding the stripe lock throughout: write to RocksDB; bump the stripe's
//!   generation; remove the key from the cache; release.
//! - reader on a miss: note the stripe's generation `g`; read RocksDB (no lock); take the
//!   stripe lock; insert only if the generation is still `g`; release.
//!
//! A fill that read an old row either sees the bumped generation (a write finished since
//! its read) and inserts nothing, or inserts before the write began, and the write's removal
//! follows. While a write is between its RocksDB write and its removal, a cached key keeps
//! serving the old row; the write is not acknowledged before the removal. The TTL is applied
//! by the reader on every read, so a cached row goes stale on time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use quiver_core::value::Value;

use quiver_core::online_store::StoredRow;

/// The default capacity of the cache of decoded rows.
pub const DEFAULT_ROW_CACHE_BYTES: usize = 128 << 20;
/// Bytes charged per entry beyond its key and values (the map slot, the `Arc`, the row).
const ENTRY_OVERHEAD: u64 = 96;

/// What the cache holds for a key: the stored row, or `None` when the key has no row.
pub(crate) type Cached = Option<Arc<StoredRow>>;

#[derive(Debug, Clone, Copy)]
struct Weigh;

impl quick_cache::Weighter<Box<[u8]>, Cached> for Weigh {
    fn weight(&self, key: &Box<[u8]>, row: &Cached) -> u64 {
        let values = row
            .as_ref()
            .map_or(0, |row| row.values.iter().map(value_bytes).sum::<usize>());
        ENTRY_OVERHEAD + key.len() as u64 + values as u64
    }
}

fn value_bytes(value: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match value {
            Value::String(s) => s.len(),
            Value::Bytes(b) => b.len(),
            Value::List(items) => items.iter().map(value_bytes).sum(),
            _ => 0,
        }
}

pub(crate) struct RowCache {
    cache: quick_cache::sync::Cache<Box<[u8]>, Cached, Weigh>,
    generations: Box<[AtomicU64]>,
}

impl std::fmt::Debug for RowCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RowCache")
            .field("capacity", &self.cache.capacity())
            .finish_non_exhaustive()
    }
}

/// A reader's ticket for one missed key: fill the cache with what RocksDB returned.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Miss {
    stripe: usize,
    generation: u64,
}

/// Counters of the cache, for the store's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RowCacheStats {
    pub(crate) bytes: u64,
    pub(crate) capacity_bytes: u64,
    pub(crate) hits: u64,
    pub(crate) misses: u64,
}

impl RowCache {
    /// A cache of about `capacity_bytes` for keys locked in `stripes` stripes; `None` for 0
    /// bytes (no cache).
    pub(crate) fn new(capacity_bytes: usize, stripes: usize) -> Option<RowCache> {
        if capacity_bytes == 0 {
            return None;
        }
        // An estimate of the entries, for sizing the shards: a 10-value row is ~500 bytes.
        let items = (capacity_bytes / 512).max(16);
        Some(RowCache {
            cache: quick_cache::sync::Cache::with_weighter(items, capacity_bytes as u64, Weigh),
            generations: (0..stripes).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    /// The cached row of `key`, if any.
    pub(crate) fn get(&self, key: &[u8]) -> Option<Cached> {
        self.cache.get(key)
    }

    /// A ticket for filling a key locked in `stripe`, taken before reading RocksDB.
    pub(crate) fn miss(&self, stripe: usize) -> Miss {
        Miss {
            stripe,
            generation: self.generation(stripe),
        }
    }

    /// Caches what RocksDB returned for `key` after `miss`, unless a write finished since.
    /// The caller holds the key's stripe lock.
    pub(crate) fn fill(&self, key: &[u8], miss: Miss, row: Cached) {
        if self.generation(miss.stripe) == miss.generation {
            self.cache.insert(key.into(), row);
        }
    }

    /// Called after `key` (locked in `stripe`) was written to RocksDB, with the stripe lock
    /// still held.
    pub(crate) fn invalidate(&self, key: &[u8], stripe: usize) {
        if let Some(generation) = self.generations.get(stripe) {
            generation.fetch_add(1, Ordering::SeqCst);
        }
        self.cache.remove(key);
    }

    pub(crate) fn stats(&self) -> RowCacheStats {
        RowCacheStats {
            bytes: self.cache.weight(),
            capacity_bytes: self.cache.capacity(),
            hits: self.cache.hits(),
            misses: self.cache.misses(),
        }
    }

    fn generation(&self, index: usize) -> u64 {
        self.generations
            .get(index)
            .map_or(0, |generation| generation.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event_ts: i64) -> Cached {
        Some(Arc::new(StoredRow {
            event_ts,
            created_ts: None,
            view_version: 1,
            values: vec![Value::String("x".repeat(100))],
        }))
    }

    #[test]
    fn a_fill_is_served_until_a_write_invalidates_it() {
        let cache = RowCache::new(1 << 20, 4).expect("cache");
        assert_eq!(cache.get(b"k"), None);
        cache.fill(b"k", cache.miss(1), row(1));
        assert_eq!(cache.get(b"k"), Some(row(1)));
        cache.invalidate(b"k", 1);
        assert_eq!(cache.get(b"k"), None);
        // Absences are cached too.
        cache.fill(b"absent", cache.miss(2), None);
        assert_eq!(cache.get(b"absent"), Some(None));
    }

    #[test]
    fn a_fill_raced_by_a_write_is_not_kept() {
        let cache = RowCache::new(1 << 20, 4).expect("cache");
        // The reader misses and reads the old row; a write lands and invalidates before the
        // reader fills: the old row must not be cached.
        let miss = cache.miss(3);
        cache.invalidate(b"k", 3);
        cache.fill(b"k", miss, row(1));
        assert_eq!(cache.get(b"k"), None, "a stale fill was kept");
        // A later miss fills normally; a write to another stripe does not stop it.
        let miss = cache.miss(3);
        cache.invalidate(b"other", 0);
        cache.fill(b"k", miss, row(2));
        assert_eq!(cache.get(b"k"), Some(row(2)));
    }

    #[test]
    fn the_cache_stays_within_its_capacity() {
        assert!(RowCache::new(0, 4).is_none());
        let cache = RowCache::new(64 << 10, 4).expect("cache");
        for i in 0..10_000u32 {
            let key = i.to_be_bytes();
            assert_eq!(cache.get(&key), None);
            cache.fill(&key, cache.miss(0), row(i64::from(i)));
        }
        let stats = cache.stats();
        assert!(stats.bytes <= stats.capacity_bytes, "{stats:?}");
        assert!(stats.bytes > stats.capacity_bytes / 2, "{stats:?}");
        assert_eq!(stats.misses, 10_000);
    }
}
