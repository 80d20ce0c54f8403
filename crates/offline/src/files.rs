//! Which Parquet files make up a view's data, and in which order.
//!
//! The order matters: two rows equal on `(event_ts, created_ts)` are ordered by their position
//! in (file order, row order), and the later one wins (see `lib.rs`). Source files come first,
//! sorted by their path as a string; then the push log, sorted by file name, whose names
//! (`<micros>-<seq>.parquet`, zero-padded) sort in append order.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use quiver_core::ResolvedView;

use crate::data_file::DataFile;
use crate::error::{Error, Result};
use crate::roots::{Roots, is_data_file, sort_paths};
use crate::{OfflineStore, ViewReader};

/// The push log directory of a view version's data generation (`quiver_core::lineage`):
/// `<data_dir>/offline/<view>/` for generation 1, `<data_dir>/offline/<view>@<g>/` for a
/// generation `g` started by a later version (`@` never occurs in a name).
pub(crate) fn push_log_dir(data_dir: &Path, view: &ResolvedView) -> PathBuf {
    let offline = data_dir.join("offline");
    match view.data_generation() {
        1 => offline.join(&view.name),
        g => offline.join(format!("{}@{g}", view.name)),
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
    let (sources, data_dir, view) = (
        reader.sources.clone(),
        reader.data_dir.clone(),
        view.clone(),
    );
    let files =
        tokio::task::spawn_blocking(move || list_view_files(&sources, &data_dir, &view)).await??;
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

fn list_view_files(sources: &Roots, data_dir: &Path, view: &ResolvedView) -> Result<Vec<DataFile>> {
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
    files.extend(
        push_log_files(&push_log_dir(data_dir, view))?
            .into_iter()
            .map(DataFile::Local),
    );
    Ok(files)
}

/// The Parquet files of a push log directory, in append order, without the files a merged
/// file covers (see `compaction.rs`); none if it does not exist.
pub(crate) fn push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (visible, _) = split_covered(all_push_log_files(dir)?);
    Ok(visible)
}

/// The files of a push log directory that a merged file covers (kept only until no reader
/// may still open them).
pub(crate) fn covered_push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let (_, covered) = split_covered(all_push_log_files(dir)?);
    Ok(covered)
}

fn all_push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if is_data_file(&path) && path.is_file() {
            files.push(path);
        }
    }
    sort_paths(&mut files);
    Ok(files)
}

/// The appends a push-log file holds, as `(first, last)` name stems: `<micros>-<seq>` for one
/// append (both), `<first>~<last>` for a merged file. None for another name.
pub(crate) fn log_range(path: &Path) -> Option<(String, String)> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".parquet")?;
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
    (valid(first) && valid(last) && first <= last).then(|| (first.to_string(), last.to_string()))
}

/// `files` split into those no merged file covers (in order) and those one does.
fn split_covered(files: Vec<PathBuf>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let merged: Vec<(PathBuf, (String, String))> = files
        .iter()
        .filter_map(|f| Some((f.clone(), log_range(f)?)))
        .filter(|(_, (first, last))| first != last)
        .collect();
    files.into_iter().partition(|file| {
        let Some((first, last)) = log_range(file) else {
            return true;
        };
        !merged
            .iter()
            .any(|(m, (a, b))| m != file && *a <= first && last <= *b)
    })
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
}
