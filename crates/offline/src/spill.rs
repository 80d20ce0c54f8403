//! Spill files: Arrow IPC streams under `<data_dir>/spill/<pid>-<n>/`, one directory per
//! join that did not fit the memory budget. The directory goes when the join ends (its output
//! read, failed or dropped); directories of processes no longer running are removed when a
//! store opens, so a crash leaves nothing behind for long.
//!
//! Why not DataFusion's `DiskManager`: its spill files are anonymous temporary files read
//! back whole by its own operators; the partitioned join needs named per-partition files,
//! written by one task and read by another in order, which `std::fs` and Arrow's IPC stream
//! writer give directly.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Pieces gathered per partition before they are copied into one: each piece is a slice of
/// a batch split across every partition, which it keeps alive until then.
const MAX_PIECES: usize = 16;

/// One join's spill directory, removed with everything in it when dropped.
#[derive(Debug)]
pub(crate) struct SpillDir {
    path: PathBuf,
}

impl SpillDir {
    /// Blocking: creates a fresh directory under `<data_dir>/spill/`.
    pub(crate) fn create(data_dir: &Path) -> Result<SpillDir> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = spill_root(data_dir).join(format!("{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        Ok(SpillDir { path })
    }

    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for SpillDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove a spill directory");
        }
    }
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
    for entry in entries.flatten() {
        let name = entry.file_name();
        let owner = name
            .to_str()
            .and_then(|n| n.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok());
        let running = owner.is_some_and(|pid| {
            pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists()
        });
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
    schema: SchemaRef,
    paths: Vec<PathBuf>,
    writers: Vec<StreamWriter<BufWriter<File>>>,
    pending: Vec<Vec<RecordBatch>>,
    /// Rows gathered per partition before a batch is written.
    batch_rows: usize,
    /// Rows given per partition.
    rows: Vec<usize>,
    /// Bytes written so far (batches' in-memory size).
    pub(crate) bytes: usize,
}

impl PartitionWriter {
    /// Blocking: creates `<dir>/<prefix>-<p>.arrow` for every partition `p < n`.
    pub(crate) fn create(
        dir: &SpillDir,
        prefix: &str,
        schema: SchemaRef,
        n: usize,
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
            schema,
            paths,
            writers,
            pending: vec![Vec::new(); n],
            batch_rows: (SPILL_BATCH_ROWS * 32 / n.max(1)).clamp(512, SPILL_BATCH_ROWS),
            rows: vec![0; n],
            bytes: 0,
        })
    }

    /// Blocking: appends `batch` to partition `p`.
    pub(crate) fn write(&mut self, p: usize, batch: RecordBatch) -> Result<()> {
        self.rows[p] += batch.num_rows();
        let pending = &mut self.pending[p];
        pending.push(batch);
        if pending.iter().map(RecordBatch::num_rows).sum::<usize>() >= self.batch_rows {
            self.flush(p)?;
        } else if pending.len() >= MAX_PIECES {
            let gathered = concat_batches(&self.schema, pending.iter())?;
            *pending = vec![gathered];
        }
        Ok(())
    }

    fn flush(&mut self, p: usize) -> Result<()> {
        let pieces = std::mem::take(&mut self.pending[p]);
        if pieces.is_empty() {
            return Ok(());
        }
        let batch = concat_batches(&self.schema, &pieces)?;
        self.bytes += batch.get_array_memory_size();
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
    use std::sync::Arc;

    use arrow::array::{Array, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn partitions_keep_their_rows_in_order_and_the_directory_goes_when_dropped() {
        let data = tempfile::tempdir().expect("tempdir");
        let dir = SpillDir::create(data.path()).expect("spill dir");
        let root = dir.path.clone();
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let mut writer = PartitionWriter::create(&dir, "t", Arc::clone(&schema), 3).expect("w");
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
        drop(dir);
        assert!(!root.exists());
    }

    #[test]
    fn stale_directories_of_dead_processes_are_removed() {
        let data = tempfile::tempdir().expect("tempdir");
        let live = SpillDir::create(data.path()).expect("spill dir");
        // No process has pid 4294967295 (above pid_max), nor a name without one.
        let dead = spill_root(data.path()).join("4294967295-0");
        let junk = spill_root(data.path()).join("junk");
        for dir in [&dead, &junk] {
            std::fs::create_dir_all(dir).expect("mkdir");
            std::fs::write(dir.join("a.arrow"), b"x").expect("write");
        }
        remove_stale(data.path());
        assert!(!dead.exists() && !junk.exists());
        assert!(live.path.exists(), "this process's directories stay");
    }
}
