//! Which Parquet files make up a view's data, and in which order.
//!
//! The order matters: two rows equal on `(event_ts, created_ts)` are ordered by their position
//! in (file order, row order), and the later one wins (see `lib.rs`). Source files come first,
//! sorted by their path as a string; then the push log. Its files are named
//! `<micros>-<seq>[+<replica>].parquet` (zero-padded), the replica only in a push log shared
//! by several replicas, and sorted by replica (none first), then name: each replica's files
//! in its append order (`quiver_core::semantics::LogPosition`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver_core::ResolvedView;

use crate::data_file::DataFile;
use crate::error::{Error, Result};
use crate::roots::{Roots, is_data_file};
use crate::{OfflineStore, ViewReader};

/// Where push logs live: a directory (`<data_dir>/offline`, or one replicas mount), or a
/// prefix in object storage replicas share (`remote_log.rs`).
#[derive(Debug, Clone)]
pub(crate) enum LogRoot {
    Local(PathBuf),
    Remote(crate::remote_log::RemoteLog),
}

/// The push log directory of a view version's data generation (`quiver_core::lineage`)
/// under the push-log root (`<data_dir>/offline`, or a directory shared by replicas):
/// `<root>/<view>/` for generation 1, `<root>/<view>@<g>/` for a generation `g` started by
/// a later version (`@` never occurs in a name).
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
    match log_root {
        LogRoot::Local(root) => files.extend(
            push_log_files(&push_log_dir(root, view))?
                .into_iter()
                .map(DataFile::Local),
        ),
        LogRoot::Remote(log) => files.extend(log.files(&log_dir_name(view))?),
    }
    Ok(files)
}

/// The Parquet files of a push log directory, in append order, without the files a merged
/// file covers (see `compaction.rs`); none if it does not exist.
pub(crate) fn push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (visible, _) = order_log(all_push_log_files(dir)?);
    Ok(visible)
}

/// The files of a push log directory that a merged file covers (kept only until no reader
/// may still open them).
pub(crate) fn covered_push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (_, covered) = order_log(all_push_log_files(dir)?);
    Ok(covered)
}

/// The Parquet files of a directory, with their names, in no order.
fn all_push_log_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
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
