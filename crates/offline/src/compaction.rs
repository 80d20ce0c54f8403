//! Push-log compaction: runs of small push-log files merged into one larger file, so joins,
//! range reads and materializations list, open and decode a few files instead of one per push.
//!
//! **Tie order.** Readers order rows by (file order, row order) (`files.rs`). A run of
//! consecutive files (in name order, all of one schema) is rewritten as one file holding their
//! rows in exactly that order, named `<first>~<last>.parquet` after the first and last append
//! it covers: the name sorts after the run's first file and before the file that followed the
//! run, so the merged rows keep their place among the other files.
//!
//! **Only committed names.** Concurrent appends take names in order but commit in any order,
//! so a run stops below the oldest name still being written (`OfflineStore::push_horizon`,
//! read before listing): no file can appear later inside a merged file's range. Across
//! restarts, names resume past every file on disk (`OfflineStore::resume_push_names`).
//!
//! **Atomic to readers.** The merged file is written under a temporary name, fsynced, renamed
//! into place and its directory fsynced. From then on, listing hides every file whose range a
//! merged file covers (`files::push_log_files`), so a listing sees either the run's files or
//! the merged file, never both and never neither. The covered files are deleted under the push
//! log's write lock, taken only when no reader holds the read lock (readers hold it from
//! listing until they have read the files): a reader never loses a file it listed. When the
//! lock is busy the covered files stay (hidden) until a later pass; a crash at any point leaves
//! either the run (with a temporary file removed at start) or the merged file (with hidden
//! leftovers removed by the next pass).
//!
//! **A shared push log** (`OfflineStore::with_shared_push_log`): each replica merges only
//! its own files (they are consecutive in the order, `files.rs`, and named from its own
//! clock, so its horizon holds), and other replicas' readers hold no lock of this process:
//! a covered file is deleted only once its merged file is [`SHARED_DELETE_GRACE`] old, past
//! any read that listed the files before the merge.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::OfflineStore;
use crate::error::{Error, Result};
use crate::files::{LogRange, covered_push_log_files, log_file_name, log_range, push_log_files};
use crate::footers::FooterCache;
use crate::parquet_writer::DurableWriter;

/// When a run of push-log files is merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// A run is merged once it has this many files.
    pub min_files: usize,
    /// Files at least this large are left alone, and a merged file grows to about this size.
    pub target_bytes: u64,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            min_files: 8,
            target_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactionReport {
    /// Files merged into larger ones.
    pub merged: usize,
    /// Merged files written.
    pub written: usize,
    /// Covered files deleted (this pass's and earlier passes' leftovers).
    pub removed: usize,
    pub rows: u64,
}

/// How long a shared push log keeps the files a merged file covers (hidden from new
/// listings): longer than any read that listed them before the merge (requests end within
/// `--request-timeout`, 10 minutes by default).
pub(crate) const SHARED_DELETE_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A push-log file considered for a run.
struct Candidate {
    path: PathBuf,
    bytes: u64,
    schema: SchemaRef,
}

impl OfflineStore {
    /// Blocking: one compaction pass over every view's push log (see the module docs).
    pub fn compact_push_logs(&self, policy: &CompactionPolicy) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        for dir in self.push_log_dirs()? {
            report.removed += self.remove_covered(&dir)?;
            // Taken before listing: every file named below it is already there.
            let horizon = self.push_horizon();
            let own = &self.log_replica;
            for run in runs(&dir, own, policy, &horizon, &self.footers)? {
                report.rows += merge(&dir, own, &run)?;
                report.merged += run.len();
                report.written += 1;
            }
            report.removed += self.remove_covered(&dir)?;
        }
        if report.written > 0 {
            tracing::info!(?report, "compacted push logs");
        }
        Ok(report)
    }

    /// Deletes the files of `dir` that a merged file covers, if no reader holds the push log
    /// (in a shared log: this replica's, covered for [`SHARED_DELETE_GRACE`]); returns how
    /// many.
    fn remove_covered(&self, dir: &Path) -> Result<usize> {
        let mut covered = covered_push_log_files(dir)?;
        if self.shares_push_log() {
            covered = covered_long_enough(dir, &self.log_replica, covered)?;
        }
        if covered.is_empty() {
            return Ok(0);
        }
        let Ok(_exclusive) = self.push_log_lock.try_write() else {
            return Ok(0); // A reader may still open them: a later pass removes them.
        };
        for path in &covered {
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
        }
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(dir, e))?;
        Ok(covered.len())
    }
}

/// `covered` (files of `dir` a merged file covers) of `replica` whose newest covering merged
/// file was written at least [`SHARED_DELETE_GRACE`] ago.
fn covered_long_enough(dir: &Path, replica: &str, covered: Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let mut merged: Vec<(LogRange, std::time::SystemTime)> = Vec::new();
    for path in push_log_files(dir)? {
        if let Some(range) = log_range(&path).filter(|r| r.replica == replica && r.first != r.last)
        {
            let written = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .map_err(|e| Error::io(&path, e))?;
            merged.push((range, written));
        }
    }
    let old = |written: &std::time::SystemTime| {
        written
            .elapsed()
            .is_ok_and(|age| age >= SHARED_DELETE_GRACE)
    };
    Ok(covered
        .into_iter()
        .filter(|file| {
            let Some(range) = log_range(file).filter(|r| r.replica == replica) else {
                return false;
            };
            merged.iter().any(|(by, written)| {
                by.first <= range.first && range.last <= by.last && old(written)
            })
        })
        .collect())
}

/// The runs of `dir` to merge: consecutive files of `replica` named below `horizon`
/// (`OfflineStore::push_horizon`), below the target size, with one schema, at most about the
/// target size together, without older files much larger than the rest ([`tiered_start`]),
/// at least `min_files` of them.
fn runs(
    dir: &Path,
    replica: &str,
    policy: &CompactionPolicy,
    horizon: &str,
    footers: &FooterCache,
) -> Result<Vec<Vec<Candidate>>> {
    let mut runs = Vec::new();
    let mut run: Vec<Candidate> = Vec::new();
    let mut run_bytes = 0u64;
    let close = |run: &mut Vec<Candidate>, runs: &mut Vec<Vec<Candidate>>| {
        let mut done = std::mem::take(run);
        done.drain(..tiered_start(&done));
        if done.len() >= policy.min_files.max(2) {
            runs.push(done);
        }
    };
    for path in push_log_files(dir)? {
        let range = log_range(&path);
        // Another replica's files are not ours to merge (and never between ours).
        if range.as_ref().is_some_and(|r| r.replica != replica) {
            continue;
        }
        // A file at or above the horizon may have older neighbours still being written.
        if range.is_none_or(|r| r.last.as_str() >= horizon) {
            break;
        }
        let bytes = std::fs::metadata(&path)
            .map_err(|e| Error::io(&path, e))?
            .len();
        if bytes >= policy.target_bytes {
            close(&mut run, &mut runs);
            run_bytes = 0;
            continue;
        }
        let schema = file_schema(&path, footers)?;
        let fits = run_bytes + bytes <= policy.target_bytes;
        // Fields only: the key-value metadata (`quiver.rows`) differs from file to file.
        if !run
            .last()
            .is_none_or(|last| last.schema.fields() == schema.fields() && fits)
        {
            close(&mut run, &mut runs);
            run_bytes = 0;
        }
        run_bytes += bytes;
        run.push(Candidate {
            path,
            bytes,
            schema,
        });
    }
    close(&mut run, &mut runs);
    Ok(runs)
}

/// Where a run starts once its older, much larger files are left out: a file more than
/// `TIER_RATIO` times the size of the newer files after it is not rewritten for their sake,
/// so a byte is rewritten about log(total / push) times, not once per pass.
fn tiered_start(run: &[Candidate]) -> usize {
    let mut rest: u64 = run.iter().map(|c| c.bytes).sum();
    let mut start = 0;
    while start + 1 < run.len() {
        rest -= run[start].bytes;
        if run[start].bytes <= TIER_RATIO * rest {
            break;
        }
        start += 1;
    }
    start
}

/// See [`tiered_start`].
const TIER_RATIO: u64 = 4;

/// The file's columns (its footer through the store's cache: a file below the target size
/// is looked at on every pass until it is merged).
fn file_schema(path: &Path, footers: &FooterCache) -> Result<SchemaRef> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let metadata = footers
        .load(path, &file)
        .map_err(|e| Error::parquet(path, e))?;
    Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(
        metadata.schema().fields().clone(),
    )))
}

/// Writes the rows of `run`, in order, as one merged file; returns its rows.
fn merge(dir: &Path, replica: &str, run: &[Candidate]) -> Result<u64> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Ok(0);
    };
    let range = |c: &Candidate| {
        log_range(&c.path).ok_or_else(|| {
            Error::invalid(
                "push log",
                format!("{} is not named like a push-log file", c.path.display()),
            )
        })
    };
    let (start, end) = (range(first)?.first, range(last)?.last);
    let path = dir.join(log_file_name(&start, &end, replica));
    let bytes: u64 = run.iter().map(|c| c.bytes).sum();
    let mut writer = DurableWriter::create_with(
        &path,
        std::sync::Arc::clone(&first.schema),
        vec![("quiver.compacted_files".into(), run.len().to_string())],
        |p| {
            p.set_compression(parquet::basic::Compression::ZSTD(
                parquet::basic::ZstdLevel::default(),
            ))
        },
    )?;
    writer.replace = false;
    for candidate in run {
        let file = File::open(&candidate.path).map_err(|e| Error::io(&candidate.path, e))?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| Error::parquet(&candidate.path, e))?;
        for batch in reader {
            writer.write(&batch?)?;
        }
    }
    let rows = writer.commit()?;
    tracing::debug!(path = %path.display(), files = run.len(), bytes, rows, "merged push-log files");
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sizes: &[u64]) -> Vec<Candidate> {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::empty());
        sizes
            .iter()
            .map(|bytes| Candidate {
                path: PathBuf::new(),
                bytes: *bytes,
                schema: std::sync::Arc::clone(&schema),
            })
            .collect()
    }

    #[test]
    fn a_large_older_file_is_not_rewritten_for_a_few_small_ones() {
        // 200 > 4 x (30 + 5 + 5): left out; 30 <= 4 x (5 + 5): kept.
        assert_eq!(tiered_start(&run(&[200, 30, 5, 5])), 1);
        assert_eq!(tiered_start(&run(&[500, 90, 5, 5])), 2);
        assert_eq!(tiered_start(&run(&[80, 10, 5, 5])), 0);
        assert_eq!(tiered_start(&run(&[1, 1])), 0);
        assert_eq!(tiered_start(&run(&[1000, 1])), 1, "at least one file stays");
        assert_eq!(tiered_start(&run(&[])), 0);
    }
}
