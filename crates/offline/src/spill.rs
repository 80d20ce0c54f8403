//! Spill files: Arrow IPC streams under `<data_dir>/spill/<pid>-<process token>-<n>/`, one
//! directory per spilled view of a join. The directory goes when the join ends (its output
//! read, failed or dropped); directories of other processes that are no longer running, or
//! of an earlier process with this pid (a container's server is always pid 1), are removed
//! when a store opens, so a crash leaves nothing behind for long.
//!
//! Why not DataFusion's `DiskManager`: its spill files are anonymous temporary files read
//! back whole by its own operators; the partitioned join needs named per-partition files,
//! written by one task and read by another in order, which `std::fs` and Arrow's IPC stream
//! writer give directly.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use arrow::datatypes::SchemaRef;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;

use crate::error::{Error, Result};

/// Rows gathered per partition before a batch is written, with 32 partitions or fewer; with
/// more, proportionally fewer (at least 512), so that all partitions together gather at most
/// about 32 such batches.
const SPILL_BATCH_ROWS: usize = crate::scan::BATCH_SIZE;

/// At most this many bytes gathered in all partitions together (less when the caller says).
pub(crate) const MAX_GATHERED_BYTES: usize = 32 << 20;

/// Pieces gathered per partition before they are copied into one: each piece is a slice of
/// a batch split across every partition, which it keeps alive until then.
const MAX_PIECES: usize = 16;

/// The disk all spill files of a store may take at once.
#[derive(Debug)]
pub(crate) struct SpillQuota {
    limit: u64,
    /// The option that raises it (`--max-spill-bytes`).
    setting: &'static str,
    used: AtomicU64,
}

impl Default for SpillQuota {
    fn default() -> Self {
        SpillQuota::new(u64::MAX, "the spill limit")
    }
}

impl SpillQuota {
    pub(crate) fn new(limit: u64, setting: &'static str) -> Self {
        SpillQuota {
            limit,
            setting,
            used: AtomicU64::new(0),
        }
    }

    /// Bytes spilled now, by every join.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// One join's spill directory, removed with everything in it when dropped; what its files
/// take is charged to the store's quota until then.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
    quota: Arc<SpillQuota>,
    charged: AtomicU64,
    /// Names the work in a refusal ("view `trips`").
    what: String,
}

impl SpillDir {
    /// Blocking: creates a fresh directory under `<data_dir>/spill/` for `what`.
    pub(crate) fn create(
        data_dir: &Path,
        quota: Arc<SpillQuota>,
        what: String,
    ) -> Result<SpillDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let root = spill_root(data_dir);
        std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
        let path = root.join(format!("{}-{n}", owner_prefix()));
        std::fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(SpillDir {
            path,
            quota,
            charged: AtomicU64::new(0),
            what,
        })
    }

    /// Charges `bytes` about to be written, or refuses (RESOURCE_EXHAUSTED naming the
    /// setting) without charging when the store's spill files would pass the quota.
    pub(crate) fn charge(&self, bytes: usize) -> Result<()> {
        let bytes = bytes as u64;
        let quota = &self.quota;
        quota
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|total| *total <= quota.limit)
            })
            .map_err(|used| {
                Error::TooLarge(format!(
                    "spilling {} to disk needs {bytes} more bytes, but spill files already take {used} of the {} bytes concurrent exports may spill ({}); narrow the labels' time range, select fewer features, raise the offline memory limit, or raise the spill limit",
                    self.what, quota.limit, quota.setting
                ))
            })?;
        self.charged.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for SpillDir {
    /// Removes the directory, on the blocking pool when there is one (spill files are large).
    fn drop(&mut self) {
        let charged = self.charged.load(Ordering::Relaxed);
        self.quota.used.fetch_sub(charged, Ordering::Relaxed);
        let path = std::mem::take(&mut self.path);
        let remove = move || {
            if let Err(e) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a spill directory");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// `<pid>-<token>`: the token tells this process from an earlier one with the same pid.
fn owner_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let token = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{token:x}", std::process::id())
    })
}

fn spill_root(data_dir: &Path) -> PathBuf {
    data_dir.join("spill")
}

/// Blocking: removes the spill directories of processes that are no longer running (a crash
/// or kill in the middle of a spilled join). Failures are logged, never fatal.
pub(crate) fn remove_stale(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(spill_root(data_dir)) else {
        return; // None yet.
    };
    let ours = format!("{}-", owner_prefix());
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let pid = name
            .split('-')
            .next()
            .and_then(|pid| pid.parse::<u32>().ok());
        let running = match pid {
            Some(pid) if pid == std::process::id() => name.starts_with(&ours),
            Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
            None => false,
        };
        if !running {
            let path = entry.path();
            match std::fs::remove_dir_all(&path) {
                Ok(()) => tracing::info!(path = %path.display(), "removed a stale spill directory"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove a stale spill directory")
                }
            }
        }
    }
}

/// Writes rows to `n` partition files of one schema, each kept in the order its rows are
/// given; small pieces are gathered into batches of [`SPILL_BATCH_ROWS`].
pub(crate) struct PartitionWriter {
    dir: Arc<SpillDir>,
    schema: SchemaRef,
    paths: Vec<PathBuf>,
    writers: Vec<StreamWriter<BufWriter<File>>>,
    pending: Vec<Vec<RecordBatch>>,
    /// Bytes gathered per partition (the pieces' own rows, not the batches they slice).
    pending_bytes: Vec<usize>,
    /// Rows, and bytes, gathered per partition before a batch is written.
    batch_rows: usize,
    batch_bytes: usize,
    /// Rows given per partition.
    rows: Vec<usize>,
}

impl PartitionWriter {
    /// Blocking: creates `<dir>/<prefix>-<p>.arrow` for every partition `p < n`; the
    /// partitions together gather at most about `gather_bytes` before writing.
    pub(crate) fn create(
        dir: &Arc<SpillDir>,
        prefix: &str,
        schema: SchemaRef,
        (n, gather_bytes): (usize, usize),
    ) -> Result<Self> {
        let mut paths = Vec::with_capacity(n);
        let mut writers = Vec::with_capacity(n);
        for p in 0..n {
            let path = dir.file(&format!("{prefix}-{p}.arrow"));
            let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
            writers.push(StreamWriter::try_new(BufWriter::new(file), &schema)?);
            paths.push(path);
        }
        Ok(PartitionWriter {
            dir: Arc::clone(dir),
            schema,
            paths,
            writers,
            pending: vec![Vec::new(); n],
            pending_bytes: vec![0; n],
            batch_rows: (SPILL_BATCH_ROWS * 32 / n.max(1)).clamp(512, SPILL_BATCH_ROWS),
            batch_bytes: (gather_bytes.min(MAX_GATHERED_BYTES) / n.max(1)).max(1 << 10),
            rows: vec![0; n],
        })
    }

    /// Blocking: appends `batch` to partition `p`.
    pub(crate) fn write(&mut self, p: usize, batch: RecordBatch) -> Result<()> {
        self.rows[p] += batch.num_rows();
        self.pending_bytes[p] += slice_bytes(&batch);
        let pending = &mut self.pending[p];
        pending.push(batch);
        let rows: usize = pending.iter().map(RecordBatch::num_rows).sum();
        if rows >= self.batch_rows || self.pending_bytes[p] >= self.batch_bytes {
            self.flush(p)?;
        } else if pending.len() >= MAX_PIECES {
            let gathered = concat_batches(&self.schema, pending.iter())?;
            *pending = vec![gathered];
        }
        Ok(())
    }

    /// Bytes of the rows gathered and not written yet, in all partitions.
    pub(crate) fn gathered_bytes(&self) -> usize {
        self.pending_bytes.iter().sum()
    }

    fn flush(&mut self, p: usize) -> Result<()> {
        self.pending_bytes[p] = 0;
        let pieces = std::mem::take(&mut self.pending[p]);
        if pieces.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.schema, &pieces)?;
        self.dir.charge(batch.get_array_memory_size())?;
        self.writers[p].write(&batch)?;
        Ok(())
    }

    /// Blocking: writes what is gathered, closes the files and returns their paths and
    /// how many rows each holds.
    pub(crate) fn finish(mut self) -> Result<(Vec<PathBuf>, Vec<usize>)> {
        for p in 0..self.writers.len() {
            self.flush(p)?;
            self.writers[p].finish()?;
        }
        Ok((self.paths, self.rows))
    }
}

/// The bytes of a batch's own rows (a slice counts its share, not the buffers it shares).
fn slice_bytes(batch: &RecordBatch) -> usize {
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// Blocking: the batches of a spill file, in the order they were written.
pub(crate) fn read_spilled(
    path: &Path,
) -> Result<impl Iterator<Item = Result<RecordBatch>> + Send + use<>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = StreamReader::try_new(BufReader::new(file), None)?;
    Ok(reader.map(|batch| batch.map_err(Error::from)))
}

/// Blocking: removes a spill file that has been read (its directory goes anyway).
pub(crate) fn remove(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        tracing::debug!(path = %path.display(), error = %e, "spill file not removed early");
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn partitions_keep_their_rows_in_order_and_the_directory_goes_when_dropped() {
        let data = tempfile::tempdir().expect("tempdir");
        let quota = Arc::new(SpillQuota::new(1 << 20, "--max-spill-bytes"));
        let dir = Arc::new(
            SpillDir::create(data.path(), Arc::clone(&quota), "view `t`".into()).expect("dir"),
        );
        let root = dir.path.clone();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut writer =
            PartitionWriter::create(&dir, "t", Arc::clone(&schema), (3, MAX_GATHERED_BYTES))
                .expect("w");
        for i in 0..20_000i64 {
            let batch = RecordBatch::try_new(
                Arc::clone(&schema),
                vec![Arc::new(Int64Array::from(vec![i]))],
            )
            .expect("batch");
            writer.write((i % 2) as usize, batch).expect("write");
        }
        let (paths, rows) = writer.finish().expect("finish");
        assert_eq!(rows, [10_000, 10_000, 0]);
        let read = |p: usize| -> Vec<i64> {
            read_spilled(&paths[p])
                .expect("open")
                .flat_map(|b| {
                    let b = b.expect("batch");
                    let c = b.column(0).as_any().downcast_ref::<Int64Array>().cloned();
                    c.expect("i64").values().to_vec()
                })
                .collect()
        };
        assert_eq!(read(0), (0..20_000).step_by(2).collect::<Vec<_>>());
        assert_eq!(read(1), (1..20_000).step_by(2).collect::<Vec<_>>());
        assert!(read(2).is_empty());
        assert!(quota.used() > 0, "the files are charged");
        let refused = dir.charge(2 << 20).expect_err("over the quota");
        assert_eq!(refused.code(), quiver_core::ErrorCode::ResourceExhausted);
        assert!(
            refused.to_string().contains("--max-spill-bytes"),
            "{refused}"
        );
        drop(dir);
        assert!(!root.exists());
        assert_eq!(quota.used(), 0, "given back with the directory");
    }

    #[test]
    fn stale_directories_of_dead_processes_are_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let live = SpillDir::create(data.path(), Arc::default(), "view `t`".into()).expect("dir");
        // No process has pid 4294967295 (above pid_max), nor a name without one; and a
        // directory with this pid but another token is an earlier process's.
        let dead = spill_root(data.path()).join("4294967295-0-0");
        let junk = spill_root(data.path()).join("junk");
        let earlier = spill_root(data.path()).join(format!("{}-0-0", std::process::id()));
        for dir in [&dead, &junk, &earlier] {
            std::fs::create_dir_all(dir).expect("mkdir");
            std::fs::write(dir.join("a.arrow"), b"x").expect("write");
        }
        remove_stale(data.path());
        assert!(!dead.exists() && !junk.exists() && !earlier.exists());
        assert!(live.path.exists(), "this process's directories stay");
    }
}
