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
//! **Atomic to readers.** The merged file is appended to the log like any file
//! (`OfflineLog::append`: whole or not at all, durable, create-only). From then on, listing
//! hides every file whose range a merged file covers (`files::LogRoot::listing`), so a
//! listing sees either the run's files or
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

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::OfflineStore;
use crate::data_file::{DataFile, FooterError};
use crate::error::{Error, Result};
use crate::files::{Listed, LogRange, LogRoot, log_file_name};
use crate::footers::FooterCache;
use crate::remote_log::MemoryWriter;

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
/// listings): longer than a read that listed them before the merge is expected to last
/// (requests end within `--request-timeout`, 10 minutes by default; exports and
/// materializations of one view take minutes). A read over a shared log that lasts longer
/// may find a file gone and fail; running it again lists the merged file.
pub(crate) const SHARED_DELETE_GRACE: std::time::Duration =
    std::time::Duration::from_secs(6 * 3600);

/// A push-log file considered for a run.
struct Candidate {
    file: DataFile,
    range: LogRange,
    bytes: u64,
    schema: SchemaRef,
}

/// One view directory of a push log.
struct LogDir<'a> {
    log: &'a LogRoot,
    dir: String,
}

impl LogDir<'_> {
    /// Blocking: the directory's files in the log's order, those no merged file covers and
    /// those one does.
    fn listing(&self) -> Result<(Vec<Listed>, Vec<Listed>)> {
        self.log.listing(&self.dir)
    }

    /// Blocking: deletes `files` (covered ones) for good.
    fn delete(&self, files: &[Listed]) -> Result<()> {
        files
            .iter()
            .try_for_each(|listed| self.log.remove(&self.dir, &listed.name))
    }
}

impl OfflineStore {
    /// Blocking: one compaction pass over every view's push log (see the module docs).
    pub fn compact_push_logs(&self, policy: &CompactionPolicy) -> Result<CompactionReport> {
        let mut report = CompactionReport::default();
        let dirs = self.log_root.dirs()?.into_iter().map(|dir| LogDir {
            log: &self.log_root,
            dir,
        });
        for dir in dirs {
            report.removed += self.remove_covered(&dir)?;
            // Taken before listing: every file named below it is already there.
            let horizon = self.push_horizon();
            let own = &self.log_replica;
            let (visible, _) = dir.listing()?;
            for run in runs(visible, own, policy, &horizon, &self.footers)? {
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
    fn remove_covered(&self, dir: &LogDir<'_>) -> Result<usize> {
        let (visible, mut covered) = dir.listing()?;
        if self.shares_push_log() {
            covered = covered_long_enough(&visible, &self.log_replica, covered);
        }
        if covered.is_empty() {
            return Ok(0);
        }
        let Ok(_exclusive) = self.push_log_lock.try_write() else {
            return Ok(0); // A reader may still open them: a later pass removes them.
        };
        dir.delete(&covered)?;
        Ok(covered.len())
    }
}

/// `covered` files of `replica` whose covering merged file (among `visible`) was written at
/// least [`SHARED_DELETE_GRACE`] ago.
fn covered_long_enough(visible: &[Listed], replica: &str, covered: Vec<Listed>) -> Vec<Listed> {
    let merged: Vec<(&LogRange, i64)> = visible
        .iter()
        .filter_map(|l| Some((l.range.as_ref()?, l.modified)))
        .filter(|(r, _)| r.replica == replica && r.first != r.last)
        .collect();
    let grace = i64::try_from(SHARED_DELETE_GRACE.as_micros()).unwrap_or(i64::MAX);
    let now = chrono::Utc::now().timestamp_micros();
    let old = |written: &i64| now.saturating_sub(*written) >= grace;
    covered
        .into_iter()
        .filter(|file| {
            let Some(range) = file.range.as_ref().filter(|r| r.replica == replica) else {
                return false;
            };
            merged.iter().any(|(by, written)| {
                by.first <= range.first && range.last <= by.last && old(written)
            })
        })
        .collect()
}

/// The runs of `files` (a directory's, in order) to merge: consecutive files of `replica`
/// named below `horizon` (`OfflineStore::push_horizon`), below the target size, with one
/// schema, at most about the target size together, without older files much larger than
/// the rest ([`tiered_start`]), at least `min_files` of them.
fn runs(
    files: Vec<Listed>,
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
    for listed in files {
        // Another replica's files are not ours to merge (and never between ours); a file not
        // named like the log's sorts with the unnamed replica.
        if listed.range.as_ref().map_or("", |r| r.replica.as_str()) != replica {
            continue;
        }
        // A file at or above the horizon may have older neighbours still being written.
        let Some(range) = listed.range.filter(|r| r.last.as_str() < horizon) else {
            break;
        };
        let bytes = listed.bytes;
        if bytes >= policy.target_bytes {
            close(&mut run, &mut runs);
            run_bytes = 0;
            continue;
        }
        let schema = file_schema(&listed.file, footers)?;
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
            file: listed.file,
            range,
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
fn file_schema(file: &DataFile, footers: &FooterCache) -> Result<SchemaRef> {
    let metadata = footers.load_file(file).map_err(|e| match e {
        FooterError::Read(e) => e,
        FooterError::Parquet(e) => Error::parquet(file.error_path(), e),
    })?;
    Ok(std::sync::Arc::new(arrow::datatypes::Schema::new(
        metadata.schema().fields().clone(),
    )))
}

/// Writes the rows of `run`, in order, as one merged file of `dir`; returns its rows.
fn merge(dir: &LogDir<'_>, replica: &str, run: &[Candidate]) -> Result<u64> {
    let (Some(first), Some(last)) = (run.first(), run.last()) else {
        return Ok(0);
    };
    let name = log_file_name(&first.range.first, &last.range.last, replica);
    let bytes: u64 = run.iter().map(|c| c.bytes).sum();
    let schema = std::sync::Arc::clone(&first.schema);
    let metadata = vec![("quiver.compacted_files".into(), run.len().to_string())];
    // Encoded in memory (up to about the target size), then appended create-only.
    let mut writer = MemoryWriter::new(schema, metadata)?;
    for candidate in run {
        read_batches(&candidate.file, &mut |batch| writer.write(batch))?;
    }
    let (file, rows) = writer.finish()?;
    dir.log.append(&dir.dir, &name, file)?;
    tracing::debug!(%name, files = run.len(), bytes, rows, "merged push-log files");
    Ok(rows)
}

/// Blocking: every row of `file`, a batch at a time (an object is fetched whole first).
fn read_batches(file: &DataFile, each: &mut dyn FnMut(&RecordBatch) -> Result<()>) -> Result<()> {
    let path = file.error_path();
    let unreadable = |e| Error::parquet(&path, e);
    let reader = match file {
        DataFile::Local(local) => {
            let handle = File::open(local).map_err(|e| Error::io(local, e))?;
            ParquetRecordBatchReaderBuilder::try_new(handle)
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(unreadable)?
        }
        DataFile::Remote(remote) => {
            let whole = remote.fetch(std::iter::once(0..remote.size))?;
            ParquetRecordBatchReaderBuilder::try_new(whole)
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(unreadable)?
        }
    };
    for batch in reader {
        each(&batch?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sizes: &[u64]) -> Vec<Candidate> {
        let schema = std::sync::Arc::new(arrow::datatypes::Schema::empty());
        sizes
            .iter()
            .map(|bytes| Candidate {
                file: DataFile::Local(std::path::PathBuf::new()),
                range: LogRange {
                    replica: String::new(),
                    first: String::new(),
                    last: String::new(),
                },
                bytes: *bytes,
                schema: std::sync::Arc::clone(&schema),
            })
            .collect()
    }

    fn listed(name: &str, age: std::time::Duration) -> Listed {
        let age = i64::try_from(age.as_micros()).unwrap_or(i64::MAX);
        Listed {
            name: name.to_string(),
            file: DataFile::Local(std::path::PathBuf::from(name)),
            range: crate::files::log_range_of(name),
            bytes: 1,
            modified: chrono::Utc::now().timestamp_micros() - age,
        }
    }

    /// In a shared log, a replica deletes only its own covered files, and only once the
    /// merged file covering them is older than the grace (other replicas' readers may have
    /// listed them before the merge).
    #[test]
    fn shared_logs_keep_covered_files_for_the_grace_and_delete_only_their_own() {
        let stem = |n: i64| crate::files::log_stem((n, 0));
        let name = |a: i64, b: i64, replica: &str| log_file_name(&stem(a), &stem(b), replica);
        let old = SHARED_DELETE_GRACE + std::time::Duration::from_secs(1);
        let new = std::time::Duration::ZERO;
        let covered = || {
            vec![
                listed(&name(1, 1, "a"), old),
                listed(&name(2, 2, "a"), old),
                listed(&name(5, 5, "a"), old),
                listed(&name(2, 2, "b"), old),
            ]
        };
        let names =
            |files: Vec<Listed>| -> Vec<String> { files.iter().map(|f| f.file.name()).collect() };
        let merged_long_ago = [listed(&name(1, 3, "a"), old), listed(&name(4, 6, "a"), new)];
        assert_eq!(
            names(covered_long_enough(&merged_long_ago, "a", covered())),
            [name(1, 1, "a"), name(2, 2, "a")]
        );
        // The same files seen by replica b: its own file is covered by no merged file of b.
        assert!(covered_long_enough(&merged_long_ago, "b", covered()).is_empty());
        let merged_now = [listed(&name(1, 6, "a"), new)];
        assert!(covered_long_enough(&merged_now, "a", covered()).is_empty());
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
