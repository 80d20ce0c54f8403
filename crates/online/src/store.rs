//! [`RocksStore`]: opening the database, the durable registry state and the watermarks.
//! Online rows are in `online.rs`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use quiver_core::semantics::watermark_advances;
use quiver_core::{RegistryState, ResolvedView};
use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType,
    DataBlockIndexType, Options, WriteBatch, WriteOptions, statistics::StatsLevel,
};

use crate::error::{Error, Result};

/// Column family of online rows: encoded key (`keys`) -> encoded row (`row_codec`).
pub(crate) const CF_ONLINE: &str = "online";
/// Column family of registry states: `state/<version, 20 digits>` -> JSON, `head` -> version.
pub(crate) const CF_REGISTRY: &str = "registry";
/// Column family of small metadata: `watermark/<view>/<fingerprint>` and `newest/<view>` ->
/// i64 micros, 8 bytes big-endian (`newest/` merged by maximum).
pub(crate) const CF_META: &str = "meta";

const REGISTRY_HEAD: &[u8] = b"head";
/// The default block cache of the online column family.
pub const DEFAULT_BLOCK_CACHE_BYTES: usize = 256 << 20;
const N_STRIPES: usize = 1024;
/// Memtable size of the small `meta` column family.
const META_WRITE_BUFFER_BYTES: usize = 4 << 20;

/// RocksDB storage of one data directory: online rows, registry states and watermarks.
/// A handle: clones share one database (closed when the last one drops), which is how the
/// async [`quiver_core::online_store::OnlineStore`] methods take it to the blocking pool.
#[derive(Clone, Debug)]
pub struct RocksStore {
    shared: std::sync::Arc<Shared>,
}

impl std::ops::Deref for RocksStore {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What every handle of one [`RocksStore`] shares.
pub struct Shared {
    pub(crate) db: DB,
    /// The options the database was opened with: they hold its statistics (see `stats`).
    pub(crate) options: Options,
    /// Striped per-key locks that make the read-compare-write of `write_rows` atomic per key.
    stripes: Box<[Mutex<()>]>,
    /// Concurrent [`RocksStore::sync`] calls share fsyncs.
    syncs: crate::sync_group::SyncGroup,
    /// Decoded rows by encoded key (`row_cache`); `None` when configured off.
    pub(crate) row_cache: Option<crate::row_cache::RowCache>,
    /// Makes a watermark's read-compare-write atomic.
    watermarks: Mutex<()>,
    pub(crate) leases: crate::leases::LocalLeases,
    path: PathBuf,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RocksStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The memory the online store may use for caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// RocksDB's block cache of the online column family (encoded blocks).
    pub block_cache_bytes: usize,
    /// The cache of decoded rows in front of RocksDB; 0 turns it off.
    pub row_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            block_cache_bytes: DEFAULT_BLOCK_CACHE_BYTES,
            row_cache_bytes: crate::row_cache::DEFAULT_ROW_CACHE_BYTES,
        }
    }
}

impl RocksStore {
    /// Opens or creates `<dir>` (creates column families `registry`, `online`, `meta`) with
    /// the default caches.
    pub fn open(dir: &Path) -> Result<RocksStore> {
        Self::open_with(dir, StoreOptions::default())
    }

    /// Like [`RocksStore::open`], with the given cache sizes.
    pub fn open_with(dir: &Path, store_options: StoreOptions) -> Result<RocksStore> {
        let cache_bytes = store_options.block_cache_bytes;
        let mut db_options = Options::default();
        db_options.create_if_missing(true);
        db_options.create_missing_column_families(true);
        db_options.increase_parallelism(2);
        db_options.set_compression_type(DBCompressionType::Lz4);
        // Counters only (no timers or histograms): the block cache hit ratio for metrics.
        db_options.enable_statistics();
        db_options.set_statistics_level(StatsLevel::ExceptHistogramOrTimers);

        let descriptors = vec![
            ColumnFamilyDescriptor::new(CF_ONLINE, online_options(cache_bytes)),
            ColumnFamilyDescriptor::new(CF_REGISTRY, small_cf_options()),
            ColumnFamilyDescriptor::new(CF_META, meta_options()),
        ];
        let db = DB::open_cf_descriptors(&db_options, dir, descriptors)
            .map_err(Error::storage("open the database"))?;
        let stripes = (0..N_STRIPES).map(|_| Mutex::new(())).collect();
        let store = Shared {
            db,
            options: db_options,
            stripes,
            syncs: Default::default(),
            row_cache: crate::row_cache::RowCache::new(store_options.row_cache_bytes, N_STRIPES),
            path: dir.to_path_buf(),
            watermarks: Mutex::new(()),
            leases: Default::default(),
        };
        let store = RocksStore {
            shared: std::sync::Arc::new(store),
        };
        for name in [CF_ONLINE, CF_REGISTRY, CF_META] {
            store.cf(name)?;
        }
        tracing::info!(path = %dir.display(), "opened rocksdb store");
        Ok(store)
    }

    /// The data directory's RocksDB directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last saved state, None on a fresh store.
    pub fn load_registry(&self) -> Result<Option<RegistryState>> {
        let cf = self.cf(CF_REGISTRY)?;
        let Some(head) = self
            .db
            .get_pinned_cf(cf, REGISTRY_HEAD)
            .map_err(Error::storage("read the registry head"))?
        else {
            return Ok(None);
        };
        let version = std::str::from_utf8(&head)
            .ok()
            .and_then(|text| text.parse::<u64>().ok())
            .ok_or_else(|| {
                Error::corrupt(
                    "registry head",
                    format!("not a version: {:?}", String::from_utf8_lossy(&head)),
                )
            })?;
        self.registry_state(version)?
            .ok_or_else(|| {
                Error::corrupt(
                    "registry",
                    format!("head is {version} but no state is stored"),
                )
            })
            .map(Some)
    }

    /// The registry state saved as `version`, None if there is none.
    pub fn registry_state(&self, version: u64) -> Result<Option<RegistryState>> {
        let cf = self.cf(CF_REGISTRY)?;
        let key = state_key(version);
        let Some(json) = self
            .db
            .get_pinned_cf(cf, &key)
            .map_err(Error::storage("read the registry state"))?
        else {
            return Ok(None);
        };
        let state: RegistryState = serde_json::from_slice(&json).map_err(|e| {
            Error::corrupt(format!("registry state version {version}"), e.to_string())
        })?;
        if state.version != version {
            return Err(Error::corrupt(
                format!("registry state version {version}"),
                format!("it says it is version {}", state.version),
            ));
        }
        Ok(Some(state))
    }

    /// Saves the state atomically and durably (one WriteBatch, WAL synced): key
    /// `state/<version as 20-digit decimal>` -> JSON, plus `head` -> version (same decimal
    /// text). Keeps older states.
    pub fn save_registry(&self, state: &RegistryState) -> Result<()> {
        self.save_registry_tagged(state, None)
    }

    /// Like [`RocksStore::save_registry`], naming the version `tag` in the same batch.
    pub fn save_registry_tagged(&self, state: &RegistryState, tag: Option<&str>) -> Result<()> {
        let cf = self.cf(CF_REGISTRY)?;
        let json = serde_json::to_vec(state).map_err(|source| Error::SerializeRegistry {
            version: state.version,
            source,
        })?;
        let key = state_key(state.version);
        let mut batch = WriteBatch::default();
        batch.put_cf(cf, &key, &json);
        batch.put_cf(cf, REGISTRY_HEAD, format!("{:020}", state.version));
        if let Some(tag) = tag {
            batch.put_cf(
                cf,
                crate::tags::tag_key(tag),
                format!("{:020}", state.version),
            );
        }
        self.db
            .write_opt(batch, &synced())
            .map_err(Error::storage("write the registry state"))?;
        tracing::info!(
            registry_version = state.version,
            bytes = json.len(),
            "saved registry state"
        );
        Ok(())
    }

    /// The materialization watermark of `view`'s definition (microseconds), None if never
    /// set. Watermarks belong to a fingerprint (`quiver_core::lineage`): a new definition
    /// starts without one.
    pub fn watermark(&self, view: &ResolvedView) -> Result<Option<i64>> {
        let cf = self.cf(CF_META)?;
        let Some(bytes) = self
            .db
            .get_pinned_cf(cf, watermark_key(view))
            .map_err(Error::storage("read a watermark"))?
        else {
            return Ok(None);
        };
        let array: [u8; 8] = bytes.as_ref().try_into().map_err(|_| {
            Error::corrupt(
                format!("watermark of view `{}`", view.pinned_name()),
                format!("{} bytes, not 8", bytes.len()),
            )
        })?;
        Ok(Some(i64::from_be_bytes(array)))
    }

    /// Sets the materialization watermark of `view`'s definition, durably (WAL synced).
    /// Private: a watermark moves only by [`RocksStore::advance_watermark`], the fence.
    fn set_watermark(&self, view: &ResolvedView, micros: i64) -> Result<()> {
        let cf = self.cf(CF_META)?;
        self.db
            .put_cf_opt(cf, watermark_key(view), micros.to_be_bytes(), &synced())
            .map_err(Error::storage("write a watermark"))
    }

    /// Moves the watermark of `view`'s definition to `end` if a run over `[start, end)`
    /// covers it ([`quiver_core::semantics::watermark_advances`]), atomically; true if moved.
    pub fn advance_watermark(&self, view: &ResolvedView, start: i64, end: i64) -> Result<bool> {
        let _guard = self.watermarks.lock().unwrap_or_else(|p| p.into_inner());
        let moves = watermark_advances(self.watermark(view)?, start, end);
        if moves {
            self.set_watermark(view, end)?;
        }
        Ok(moves)
    }

    /// Makes every write done before this call durable: fsyncs the WAL, or waits for an
    /// fsync that started after the call (concurrent callers share one; used after
    /// non-durable writes: pushes, materialization batches before a watermark moves).
    pub fn sync(&self) -> Result<()> {
        self.syncs.sync(|| {
            self.db
                .flush_wal(true)
                .map_err(Error::storage("sync the write-ahead log"))
        })
    }

    pub(crate) fn cf(&self, name: &'static str) -> Result<&ColumnFamily> {
        self.db
            .cf_handle(name)
            .ok_or(Error::MissingColumnFamily(name))
    }

    /// Locks the stripe of one key (see [`RocksStore::lock_keys`]).
    pub(crate) fn lock_stripe(&self, stripe: usize) -> Option<MutexGuard<'_, ()>> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.stripes.get(stripe).map(|stripe| {
            stripe
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        })
    }

    /// Locks the stripe of one key unless it is held already (`None` then).
    pub(crate) fn try_lock_stripe(&self, stripe: usize) -> Option<MutexGuard<'_, ()>> {
        match self.stripes.get(stripe)?.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Locks the stripes of `keys` in ascending stripe order (so that callers never
    /// deadlock) and returns the guards; the locks are held until they are dropped.
    pub(crate) fn lock_keys<'a>(
        &self,
        keys: impl Iterator<Item = &'a [u8]>,
    ) -> Vec<MutexGuard<'_, ()>> {
        let mut indexes: Vec<usize> = keys.map(stripe_of).collect();
        indexes.sort_unstable();
        indexes.dedup();
        indexes
            .into_iter()
            .filter_map(|index| self.lock_stripe(index))
            .collect()
    }
}

pub(crate) fn synced() -> WriteOptions {
    let mut options = WriteOptions::default();
    options.set_sync(true);
    options
}

pub(crate) fn stripe_of(key: &[u8]) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % N_STRIPES as u64) as usize
}

fn state_key(version: u64) -> Vec<u8> {
    format!("state/{version:020}").into_bytes()
}

/// `watermark/<view name>/<fingerprint>`. (Keys `watermark/<view name>` of data directories
/// from before watermarks followed the definition are no longer read: the first incremental
/// run after the upgrade starts from the beginning, which rewrites rows idempotently.)
fn watermark_key(view: &ResolvedView) -> Vec<u8> {
    format!("watermark/{}/{}", view.name, view.fingerprint).into_bytes()
}

/// Point lookups by full key: a bloom filter, hash-indexed data blocks and a shared cache.
fn online_options(cache_bytes: usize) -> Options {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&Cache::new_lru_cache(cache_bytes));
    table.set_bloom_filter(10.0, false);
    table.set_data_block_index_type(DataBlockIndexType::BinaryAndHash);
    table.set_cache_index_and_filter_blocks(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    let mut options = Options::default();
    options.set_block_based_table_factory(&table);
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_memtable_whole_key_filtering(true);
    options.set_memtable_prefix_bloom_ratio(0.1);
    options
}

fn small_cf_options() -> Options {
    let mut options = Options::default();
    options.set_compression_type(DBCompressionType::Lz4);
    options
}

/// `meta` merges by maximum (the newest event per view, see `stats`): one merge operand per
/// online write. A small write buffer flushes often, and a flush folds a key's operands into
/// one entry, so operands neither pile up in memory nor make a read (a scrape) long.
/// (Folding at write time with `max_successive_merges` was measured and not kept: pushes
/// slowed from ~700 to ~160 per second over a 10-minute soak, benches/README.md.)
fn meta_options() -> Options {
    let mut options = small_cf_options();
    options.set_merge_operator_associative("quiver.max_i64", crate::stats::merge_max);
    options.set_write_buffer_size(META_WRITE_BUFFER_BYTES);
    options
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::ErrorCode;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn store_is_send_and_sync() {
        assert_send_sync::<RocksStore>();
    }

    #[test]
    fn registry_round_trips_and_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut state = crate::test_support::registry_state();
        state.version = 2;
        {
            let store = RocksStore::open(dir.path()).expect("open");
            assert_eq!(store.load_registry().expect("load"), None);
            let first = RegistryState {
                version: 1,
                ..RegistryState::default()
            };
            store.save_registry(&first).expect("save 1");
            assert_eq!(store.load_registry().expect("load"), Some(first));
            store.save_registry(&state).expect("save 2");
            assert_eq!(store.load_registry().expect("load"), Some(state.clone()));
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(store.load_registry().expect("load"), Some(state.clone()));
        // Older states are kept.
        let cf = store.cf(CF_REGISTRY).expect("cf");
        let old = store.db.get_cf(cf, state_key(1)).expect("get");
        assert!(old.is_some());
    }

    #[test]
    fn corrupt_registry_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let cf = store.cf(CF_REGISTRY).expect("cf");
        store.db.put_cf(cf, REGISTRY_HEAD, "x").expect("put");
        let error = store.load_registry().expect_err("corrupt head");
        assert_eq!(error.code(), ErrorCode::Internal);
        store.db.put_cf(cf, REGISTRY_HEAD, "3").expect("put");
        assert!(matches!(store.load_registry(), Err(Error::Corrupt { .. })));
        store.db.put_cf(cf, state_key(3), "{").expect("put");
        assert!(matches!(store.load_registry(), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn watermarks_persist_across_reopen_per_definition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = |name: &str, fingerprint: &str| ResolvedView {
            fingerprint: fingerprint.into(),
            ..crate::test_support::view(name, &[], &[])
        };
        let (driver, other) = (view("driver_stats", "f1"), view("other", "f1"));
        let driver_v2 = view("driver_stats", "f2");
        {
            let store = RocksStore::open(dir.path()).expect("open");
            assert_eq!(store.watermark(&driver).expect("get"), None);
            store.set_watermark(&driver, -5).expect("set");
            store.set_watermark(&driver, 1_000).expect("set");
            store.set_watermark(&other, 7).expect("set");
            store.sync().expect("sync");
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(store.watermark(&driver).expect("get"), Some(1_000));
        assert_eq!(store.watermark(&other).expect("get"), Some(7));
        assert_eq!(
            store.watermark(&driver_v2).expect("get"),
            None,
            "new definition"
        );
        assert_eq!(store.watermark(&view("missing", "f1")).expect("get"), None);
        let bad = view("bad", "f1");
        let cf = store.cf(CF_META).expect("cf");
        store.db.put_cf(cf, watermark_key(&bad), [1]).expect("put");
        assert!(matches!(store.watermark(&bad), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn a_second_open_of_the_same_dir_is_a_storage_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let _store = RocksStore::open(dir.path()).expect("open");
        let error = RocksStore::open(dir.path()).expect_err("locked");
        assert!(matches!(error, Error::Storage { .. }));
    }
}
