//! Which Parquet files make up a view's data, and in which order.
//!
//! The order matters: two rows equal on `(event_ts, created_ts)` are ordered by their position
//! in (file order, row order), and the later one wins (see `lib.rs`). Source files come first,
//! sorted by their path as a string; then the push log. Its files are named
//! `<micros>-<seq>[+<replica>].parquet` (zero-padded), the replica only in a push log shared
//! by several replicas, and sorted by replica (none first), then name: each replica's files
//! in its append order (`quiver_core::semantics::LogPosition`).

use std::path::Path;
#[cfg(test)]
use std::path::PathBuf;
use std::sync::Arc;

use quiver_core::ResolvedView;
use quiver_core::offline_log::{LogFile, OfflineLog};

use crate::data_file::DataFile;
use crate::error::{Error, Result};
use crate::roots::Roots;
#[cfg(test)]
use crate::roots::is_data_file;
use crate::{OfflineStore, ViewReader};

/// What this crate needs of a push log beyond core's [`OfflineLog`]: how a join reads a file
/// the log listed.
pub(crate) trait LogBackend: OfflineLog {
    /// The file `file` of `dir`, to read.
    fn data_file(&self, dir: &str, file: &LogFile) -> DataFile;

    /// The directory, when the log is one on this machine's file system (its interrupted
    /// appends are cleaned up at start, and backups link its files).
    fn local_root(&self) -> Option<&Path> {
        None
    }
}

/// Where push logs live, behind [`OfflineLog`]: a directory (`<data_dir>/offline`, or one
/// replicas mount: `local_log.rs`), or a prefix in object storage replicas share
/// (`remote_log.rs`). The methods block the calling thread (a thread of the blocking pool)
/// until the log's future is done. The directory's I/O runs on threads of its own; object
/// storage is network I/O, except name resolution, which the HTTP client runs on the
/// blocking pool (as every object-store read from the blocking pool always has).
#[derive(Debug, Clone)]
pub(crate) struct LogRoot(Arc<dyn LogBackend>);

/// A push-log file as listed: its name, range (None: not named like the log's), size,
/// commit time and how to read it.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) name: String,
    pub(crate) range: Option<LogRange>,
    pub(crate) bytes: u64,
    /// Microseconds since the epoch.
    pub(crate) modified: i64,
    pub(crate) file: DataFile,
}

impl LogRoot {
    pub(crate) fn new(log: impl LogBackend + 'static) -> Self {
        LogRoot(Arc::new(log))
    }

    /// Waits for `future` on this thread. Object storage needs the Tokio runtime's context
    /// (the blocking pool has it); a directory does not.
    fn wait<T>(
        &self,
        future: impl std::future::Future<Output = quiver_core::Result<T>>,
    ) -> Result<T> {
        if self.local_root().is_none() && tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::ObjectStore {
                url: self.location(),
                kind: crate::error::ObjectErrorKind::Other,
                message: "object storage needs a Tokio runtime".into(),
            });
        }
        Ok(futures::executor::block_on(future)?)
    }

    /// Blocking: every directory of the log.
    pub(crate) fn dirs(&self) -> Result<Vec<String>> {
        self.wait(self.0.dirs())
    }

    /// Blocking: the files of `dir` in the log's order, split into those no merged file
    /// covers and those one does.
    pub(crate) fn listing(&self, dir: &str) -> Result<(Vec<Listed>, Vec<Listed>)> {
        let files = self.wait(self.0.list(dir))?;
        let named = files
            .into_iter()
            .map(|file| {
                let listed = Listed {
                    range: log_range_of(&file.name),
                    bytes: file.bytes,
                    modified: file.modified,
                    file: self.0.data_file(dir, &file),
                    name: file.name,
                };
                (listed.name.clone(), listed)
            })
            .collect();
        Ok(order_log(named))
    }

    /// Blocking: the files a reader of `dir` reads, in order.
    pub(crate) fn files(&self, dir: &str) -> Result<Vec<DataFile>> {
        let (visible, _) = self.listing(dir)?;
        Ok(visible.into_iter().map(|listed| listed.file).collect())
    }

    /// Blocking: stores `bytes` as `dir/name`, durably and create-only.
    pub(crate) fn append(&self, dir: &str, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.wait(self.0.append(dir, name, bytes))
    }

    /// Blocking: deletes `dir/name` (a covered file).
    pub(crate) fn remove(&self, dir: &str, name: &str) -> Result<()> {
        self.wait(self.0.remove(dir, name))
    }

    pub(crate) fn local_root(&self) -> Option<&Path> {
        self.0.local_root()
    }

    pub(crate) fn location(&self) -> String {
        self.0.location()
    }
}

/// The push log directory of a view version's data generation (`quiver_core::lineage`)
/// under the push-log root (`<data_dir>/offline`, or a directory shared by replicas):
/// `<root>/<view>/` for generation 1, `<root>/<view>@<g>/` for a generation `g` started by
/// a later version (`@` never occurs in a name).
#[cfg(test)]
pub(crate) fn push_log_dir(log_root: &Path, view: &ResolvedView) -> PathBuf {
    log_root.join(log_dir_name(view))
}

/// The name of [`push_log_dir`] under the root (a key segment in object storage).
pub(crate) fn log_dir_name(view: &ResolvedView) -> String {
    match view.data_generation() {
        1 => view.name.clone(),
        g => format!("{}@{g}", view.name),
    }
}

/// Every file of a view's data: its source Parquet (which must lie under the store's source
/// roots), then its push log. Lists directories on the blocking pool. The guard keeps the
/// push-log files from being deleted by compaction: hold it until they are read.
pub(crate) async fn view_files(
    reader: &ViewReader,
    view: &ResolvedView,
) -> Result<(Vec<DataFile>, crate::PushLogGuard)> {
    let guard = Arc::clone(&reader.push_log_lock).read_owned().await;
    let (sources, log_root, view) = (
        reader.sources.clone(),
        reader.log_root.clone(),
        view.clone(),
    );
    let files =
        tokio::task::spawn_blocking(move || list_view_files(&sources, &log_root, &view)).await??;
    Ok((files, guard))
}

impl OfflineStore {
    /// A hold on the push-log files: compaction deletes none while it lives (it never waits
    /// for it either).
    pub async fn hold_push_log(&self) -> crate::PushLogGuard {
        std::sync::Arc::clone(&self.push_log_lock)
            .read_owned()
            .await
    }
}

fn list_view_files(
    sources: &Roots,
    log_root: &LogRoot,
    view: &ResolvedView,
) -> Result<Vec<DataFile>> {
    let mut files = match &view.source.parquet {
        None => Vec::new(),
        Some(location) => {
            let mismatch = |message: String| Error::SourceMismatch {
                view: view.name.clone(),
                message,
            };
            let files = sources.locate("source", location).map_err(|e| match e {
                // The store's own failures keep their kind (unavailable, denied, ...).
                Error::ObjectStore { .. } => e,
                e => mismatch(e.to_string()),
            })?;
            if files.is_empty() {
                return Err(mismatch(format!(
                    "source path `{location}` matches no Parquet file; check the path in source `{}`",
                    view.source_name
                )));
            }
            files
        }
    };
    files.extend(log_root.files(&log_dir_name(view))?);
    Ok(files)
}

/// The Parquet files of a push log directory, in append order, without the files a merged
/// file covers (see `compaction.rs`); none if it does not exist.
#[cfg(test)]
pub(crate) fn push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (visible, _) = order_log(all_push_log_files(dir)?);
    Ok(visible)
}

/// The files of a push log directory that a merged file covers (kept only until no reader
/// may still open them).
#[cfg(test)]
pub(crate) fn covered_push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (_, covered) = order_log(all_push_log_files(dir)?);
    Ok(covered)
}

/// The Parquet files of a directory, with their names, in no order.
#[cfg(test)]
fn all_push_log_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for entry in crate::local_log::entries(dir)? {
        let path = entry.path();
        if is_data_file(&path) && path.is_file() {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            files.push((name.unwrap_or_default(), path));
        }
    }
    Ok(files)
}

/// Push-log files (with their names) in the log's order, by replica (none first) then name,
/// split into those no merged file of the same replica covers and those one does. Names
/// not shaped like the log's sort with the unnamed replica and are never covered.
pub(crate) fn order_log<T>(files: Vec<(String, T)>) -> (Vec<T>, Vec<T>) {
    let mut files: Vec<(Option<LogRange>, String, T)> = files
        .into_iter()
        .map(|(name, file)| (log_range_of(&name), name, file))
        .collect();
    fn replica(range: &Option<LogRange>) -> &str {
        range.as_ref().map_or("", |r| r.replica.as_str())
    }
    files.sort_by(|(a, a_name, _), (b, b_name, _)| (replica(a), a_name).cmp(&(replica(b), b_name)));
    let merged: Vec<LogRange> = files
        .iter()
        .filter_map(|(range, _, _)| range.clone())
        .filter(|range| range.first != range.last)
        .collect();
    let (visible, covered): (Vec<_>, Vec<_>) = files.into_iter().partition(|(range, _, _)| {
        let Some(range) = range else {
            return true;
        };
        !merged.iter().any(|by| {
            by != range
                && by.replica == range.replica
                && by.first <= range.first
                && range.last <= by.last
        })
    });
    let files = |list: Vec<(Option<LogRange>, String, T)>| list.into_iter().map(|f| f.2).collect();
    (files(visible), files(covered))
}

/// The appends a push-log file holds: its replica (empty when none is named) and its
/// `(first, last)` name stems: `<micros>-<seq>` for one append (both), `<first>~<last>` for
/// a merged file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogRange {
    pub(crate) replica: String,
    pub(crate) first: String,
    pub(crate) last: String,
}

/// The [`LogRange`] of a push-log file `<first>[~<last>][+<replica>].parquet`; None for
/// another name.
#[cfg(test)]
pub(crate) fn log_range(path: &Path) -> Option<LogRange> {
    log_range_of(path.file_name()?.to_str()?)
}

/// [`log_range`] of a file name.
pub(crate) fn log_range_of(name: &str) -> Option<LogRange> {
    let stem = name.strip_suffix(".parquet")?;
    let (stem, replica) = match stem.split_once('+') {
        Some((_, "")) => return None,
        Some((stem, replica)) => (stem, replica),
        None => (stem, ""),
    };
    let (first, last) = stem.split_once('~').unwrap_or((stem, stem));
    let valid = |s: &str| {
        s.len() == 41
            && s.bytes().enumerate().all(|(i, b)| {
                if i == 20 {
                    b == b'-'
                } else {
                    b.is_ascii_digit()
                }
            })
    };
    (valid(first) && valid(last) && first <= last).then(|| LogRange {
        replica: replica.to_string(),
        first: first.to_string(),
        last: last.to_string(),
    })
}

/// The name of a push-log file of `replica` (none when empty) holding appends
/// `first..=last` (stems `<micros>-<seq>`).
pub(crate) fn log_file_name(first: &str, last: &str, replica: &str) -> String {
    let range = if first == last {
        first.to_string()
    } else {
        format!("{first}~{last}")
    };
    match replica {
        "" => format!("{range}.parquet"),
        replica => format!("{range}+{replica}.parquet"),
    }
}

/// The stem `<micros>-<seq>` of an append's name, zero-padded so that stems sort as names.
pub(crate) fn log_stem((micros, seq): (i64, u64)) -> String {
    format!("{micros:020}-{seq:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_log_files_are_parquet_files_in_name_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        for name in [
            "2.parquet",
            "1.parquet",
            ".1.parquet.9.tmp",
            "_SUCCESS",
            "notes.txt",
        ] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        assert!(push_log_files(&root.join("nope")).expect("none").is_empty());
        let names: Vec<String> = push_log_files(root)
            .expect("log")
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert_eq!(names, ["1.parquet", "2.parquet"]);
    }

    /// Files sort by replica (none first), then name; a merged file hides only its own
    /// replica's files in its range.
    #[test]
    fn shared_push_logs_order_by_replica_then_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let stem = |micros: i64| log_stem((micros, 0));
        let names = [
            log_file_name(&stem(5), &stem(5), "b"),
            log_file_name(&stem(1), &stem(1), "b"),
            log_file_name(&stem(9), &stem(9), ""),
            log_file_name(&stem(2), &stem(2), "a"),
            log_file_name(&stem(3), &stem(3), "a"),
            log_file_name(&stem(2), &stem(3), "a"),
            log_file_name(&stem(2), &stem(2), "ab"),
            format!("{}+.parquet", stem(4)),
        ];
        for name in &names {
            std::fs::write(dir.path().join(name), b"x").expect("write");
        }
        let listed: Vec<String> = push_log_files(dir.path())
            .expect("log")
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let want = [
            names[7].clone(), // Not a log name: sorted with the unnamed replica.
            names[2].clone(),
            names[5].clone(), // Hides a's files 2 and 3, not ab's 2.
            names[6].clone(),
            names[1].clone(),
            names[0].clone(),
        ];
        // "00..04+.parquet" sorts before "00..09.parquet" by name.
        assert_eq!(listed, want);
        let range = log_range(Path::new(&names[5])).expect("range");
        assert_eq!(
            (range.replica.as_str(), range.first, range.last),
            ("a", stem(2), stem(3))
        );
    }
}
