//! Quiver's offline store: a feature view's history as Parquet, read for materialization
//! ([`OfflineStore::scan_latest`]), training data ([`OfflineStore::point_in_time_join`],
//! [`write_parquet`]) and entity-less retrieval ([`OfflineStore::read_range`]), plus the push
//! log that makes pushed rows part of that history ([`OfflineStore::append_push_log`]).
//! [`ParquetSchemaCheck`] checks a view against its source files' footers at plan time.
//!
//! This crate is not a server and not an online store: it depends on neither tonic nor
//! rocksdb, and holds no state beyond files under `<data_dir>/offline/`.
//!
//! # Invariants
//!
//! - A view's data is its source Parquet (file, directory or glob) followed by its push log
//!   (`<data_dir>/offline/<view>/*.parquet`). Files are read in a fixed order: source files
//!   sorted by path, then push-log files in append order.
//! - Instants are UTC microseconds; timestamp columns of any unit are accepted and floored to
//!   microseconds. Output timestamps are `Timestamp(Microsecond, "UTC")`.
//! - Row order for a key is `(event_ts, created_ts)` with a missing created time lowest
//!   (`quiver_core::semantics::row_order`). Among rows equal on both, the row that comes last
//!   in (file order, row order) wins, on every path: the join, the materialization scan, and
//!   so the online store. Pushed rows come last, so a pushed row wins a tie, as it does online.
//! - A point-in-time join outputs exactly one row per label row, in label order, label columns
//!   unchanged. Its memory comes from the store's budget (`--offline-memory-limit`): a view's
//!   projected rows in the labels' time range when they fit, else one hash partition at a
//!   time with the rest spilled to `<data_dir>/spill/` (bounded by `--max-spill-bytes`); the
//!   materialization scan's memory is bounded by the number of distinct keys.
//! - No request reads outside the configured directories: view sources only under the
//!   source roots, label tables only under the labels roots, exports are written only under
//!   the export directory ([`Roots`]; symlinks that leave a root are refused, directory walks
//!   do not follow symlinked directories and are bounded).
//! - Reads run on the blocking pool, a bounded number of tasks at a time, and need a Tokio
//!   runtime.

mod arrow_types;
mod compaction;
mod data_file;
mod error;
mod files;
mod footers;
mod join;
mod key_index;
mod labels;
mod latest;
mod local_log;
mod log_join;
mod memory;
mod object;
mod parquet_writer;
mod partition;
mod push_group;
mod push_log;
mod range;
mod registry_objects;
mod remote_log;
mod roots;
mod scan;
mod schema_check;
mod served_log;
mod shared_uploads;
mod spill;
mod spill_rows;
mod spilled_join;
mod upload;
mod values;
mod view_index;

#[cfg(test)]
mod testutil;

#[cfg(test)]
mod compaction_tests;
#[cfg(test)]
mod fixture;
#[cfg(test)]
mod join_tests;
#[cfg(test)]
mod latest_tests;
#[cfg(test)]
mod log_join_tests;
#[cfg(test)]
mod perf_tests;
#[cfg(test)]
mod spill_tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

pub use compaction::{CompactionPolicy, CompactionReport};
pub use error::{Error, ObjectErrorKind, Result};
pub use join::{JoinOutput, JoinRequest, JoinStats};
pub use labels::LabelInput;
pub use latest::{LatestRows, ScanObserver};
pub use log_join::{LogFeature, LogJoinRequest, LogMatch, SERVED_REQUEST_ID};
pub use object::ObjectStores;
pub use parquet_writer::{write_export, write_parquet};
pub use push_log::push_log_batch;
pub use registry_objects::ObjectRegistry;
pub use roots::{OutputFile, Roots};
pub use schema_check::ParquetSchemaCheck;
pub use served_log::{REQUEST_ID, SERVED_AT, SERVICE_VERSION, ServedLogDir, ServedLogFile};
pub use shared_uploads::SharedUploads;

/// Quiver's canonical Arrow types and column builders, for crates that build Quiver-shaped
/// data (the server's served-row log).
pub mod arrow_values {
    pub use crate::arrow_types::{key_type, timestamp_type, value_type};
    pub use crate::values::{key_column, value_at, value_column};
}

/// The offline store of one Quiver data directory.
pub struct OfflineStore {
    data_dir: PathBuf,
    /// Where push logs live: `<data_dir>/offline`, or a directory or object-storage prefix
    /// replicas share.
    log_root: files::LogRoot,
    /// The replica named in this store's push-log files: empty unless the log is shared.
    log_replica: String,
    /// Where view sources may be read from.
    sources: Roots,
    /// Where label tables named by path may be read from.
    labels: Roots,
    /// Reads label tables. One partition and no file repartitioning, so label rows keep their
    /// order (files sorted by path, rows in file order).
    session: SessionContext,
    /// Scan units (and footers) read at a time.
    parallelism: usize,
    /// The last push-log file name's `(micros, seq)`: names only grow within a process.
    push_clock: Mutex<PushNames>,
    /// Push-log appends waiting to be written together.
    push_queue: push_group::PushQueue,
    /// Held (shared) by readers from listing push-log files until they have read them;
    /// compaction deletes the files it merged only when it gets it exclusively at once.
    push_log_lock: Arc<tokio::sync::RwLock<()>>,
    /// Parsed footers of the files views read.
    footers: Arc<footers::FooterCache>,
    /// The memory joins (and DataFusion's label reads) take, shared.
    memory: memory::Budget,
    /// Join every view in this many partitions, whatever the budget (tests).
    forced_partitions: Option<usize>,
    /// The disk spill files may take, shared by every join.
    spill_quota: Arc<spill::SpillQuota>,
}

/// Push-log names given out: the last one, and those whose files are still being written
/// (committed out of order by concurrent appends; compaction merges only below the oldest).
#[derive(Debug, Default)]
pub(crate) struct PushNames {
    pub(crate) last: (i64, u64),
    pub(crate) in_flight: std::collections::BTreeSet<(i64, u64)>,
}

/// What reading a view's files needs, cheap to clone into a stream that reads later.
#[derive(Debug, Clone)]
pub(crate) struct ViewReader {
    pub(crate) data_dir: PathBuf,
    pub(crate) log_root: files::LogRoot,
    pub(crate) sources: Roots,
    pub(crate) parallelism: usize,
    pub(crate) push_log_lock: Arc<tokio::sync::RwLock<()>>,
    pub(crate) footers: Arc<footers::FooterCache>,
    pub(crate) memory: memory::Budget,
    pub(crate) forced_partitions: Option<usize>,
    pub(crate) spill_quota: Arc<spill::SpillQuota>,
}

/// A reader's hold on the push-log files it listed: none is deleted while it lives.
pub type PushLogGuard = tokio::sync::OwnedRwLockReadGuard<()>;

impl std::fmt::Debug for OfflineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OfflineStore")
            .field("data_dir", &self.data_dir)
            .field("sources", &self.sources)
            .field("labels", &self.labels)
            .field("parallelism", &self.parallelism)
            .finish_non_exhaustive()
    }
}

impl OfflineStore {
    /// The store of `data_dir`, reading view sources only under `sources` and label tables
    /// only under `labels`.
    pub fn new(data_dir: &Path, sources: Roots, labels: Roots) -> Self {
        let memory = memory::Budget::default();
        spill::remove_stale(data_dir);
        let parallelism = std::thread::available_parallelism().map_or(2, |n| n.get());
        OfflineStore {
            data_dir: data_dir.to_path_buf(),
            log_root: files::LogRoot::new(local_log::LocalLog::new(data_dir.join("offline"))),
            log_replica: String::new(),
            sources,
            labels,
            session: label_session(&memory),
            parallelism,
            push_clock: Mutex::new(PushNames::default()),
            push_queue: push_group::PushQueue::default(),
            push_log_lock: Arc::new(tokio::sync::RwLock::new(())),
            footers: Arc::default(),
            memory,
            forced_partitions: None,
            spill_quota: Arc::default(),
        }
    }

    /// The store with its push logs at `location`, shared by several replicas: a directory
    /// (a network file system every replica mounts) or object storage (`s3://BUCKET/PREFIX`,
    /// `gs://...`, `az://...`, with `stores`' options; `remote_log.rs`). This store's files
    /// carry `replica` in their names, it merges and deletes only those, and every replica's
    /// join reads them all (see `files.rs` for the order). `replica` is 1 to 200 of
    /// `A-Z a-z 0-9 . _ -`.
    pub fn with_shared_push_log(
        mut self,
        location: &str,
        replica: &str,
        stores: &ObjectStores,
    ) -> Result<Self> {
        if !valid_replica(replica) {
            return Err(Error::invalid(
                "replica",
                format!(
                    "`{replica}` names no replica of a shared push log: use 1 to 200 of A-Z a-z 0-9 . _ -"
                ),
            ));
        }
        self.log_root = if object::is_url(location) {
            files::LogRoot::new(remote_log::RemoteLog::open(location, stores)?)
        } else {
            files::LogRoot::new(local_log::LocalLog::new(PathBuf::from(location)))
        };
        self.log_replica = replica.to_string();
        Ok(self)
    }

    /// The store with joins bounded to `bytes` of memory in all; `setting` names the option
    /// that raises it in refusals (`--offline-memory-limit`).
    pub fn with_memory_limit(mut self, bytes: usize, setting: &'static str) -> Self {
        self.memory = memory::Budget::limited(bytes, setting);
        self.session = label_session(&self.memory);
        self
    }

    /// The store with spill files of all joins together bounded to `bytes` on disk;
    /// `setting` names the option that raises it in refusals (`--max-spill-bytes`).
    pub fn with_spill_limit(mut self, bytes: u64, setting: &'static str) -> Self {
        self.spill_quota = Arc::new(spill::SpillQuota::new(bytes, setting));
        self
    }

    /// Bytes of spill files on disk now (joins too large for the memory limit).
    pub fn spilled_bytes(&self) -> u64 {
        self.spill_quota.used()
    }

    /// The store with every view of a join joined in `n` partitions spilled to disk.
    #[cfg(test)]
    pub(crate) fn with_partitions(mut self, n: usize) -> Self {
        self.forced_partitions = Some(n);
        self
    }

    /// Bytes of the memory budget held now (by joins whose output is still being read).
    pub fn memory_reserved(&self) -> usize {
        self.memory.pool.reserved()
    }

    pub(crate) fn view_reader(&self) -> ViewReader {
        ViewReader {
            data_dir: self.data_dir.clone(),
            log_root: self.log_root.clone(),
            sources: self.sources.clone(),
            parallelism: self.parallelism,
            push_log_lock: Arc::clone(&self.push_log_lock),
            footers: Arc::clone(&self.footers),
            memory: self.memory.clone(),
            forced_partitions: self.forced_partitions,
            spill_quota: Arc::clone(&self.spill_quota),
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Whether the push log is shared by replicas ([`OfflineStore::with_shared_push_log`]).
    pub fn shares_push_log(&self) -> bool {
        !self.log_replica.is_empty()
    }
}

/// Whether `replica` may name a replica in push-log file names: 1 to 200 of
/// `A-Z a-z 0-9 . _ -` (no `+`, `~`, `/` or NUL, which the names and tie tokens use).
pub fn valid_replica(replica: &str) -> bool {
    (1..=200).contains(&replica.len())
        && replica
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// The DataFusion session that reads label tables: one partition and no file repartitioning
/// (label rows keep their order), on the store's memory pool.
fn label_session(memory: &memory::Budget) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_target_partitions(1)
        .with_repartition_file_scans(false)
        .with_batch_size(scan::BATCH_SIZE);
    // Keep label columns as written (Utf8, not Utf8View).
    config
        .options_mut()
        .execution
        .parquet
        .schema_force_view_types = false;
    let runtime = RuntimeEnvBuilder::new()
        .with_memory_pool(Arc::clone(&memory.pool))
        .build_arc();
    match runtime {
        Ok(runtime) => SessionContext::new_with_config_rt(config, runtime),
        // Building a runtime with only a pool set does not fail; if it ever did, labels
        // would be read outside the budget rather than not at all.
        Err(_) => SessionContext::new_with_config(config),
    }
}
