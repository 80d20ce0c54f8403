//! Which Parquet files make up a view's data, and in which order.
//!
//! The order matters: two rows equal on `(event_ts, created_ts)` are ordered by their position
//! in (file order, row order), and the later one wins (see `lib.rs`). Source files come first,
//! sorted by their path as a string; then the push log, sorted by file name, whose names
//! (`<micros>-<seq>.parquet`, zero-padded) sort in append order.

use std::path::{Path, PathBuf};

use quiver_core::ResolvedView;

use crate::error::{Error, Result};

/// The push log directory of a view: `<data_dir>/offline/<view>/`.
pub(crate) fn push_log_dir(data_dir: &Path, view: &str) -> PathBuf {
    data_dir.join("offline").join(view)
}

/// Every file of a view's data: its source Parquet, then its push log.
pub(crate) fn view_files(data_dir: &Path, view: &ResolvedView) -> Result<Vec<PathBuf>> {
    let mut files = match &view.source.parquet {
        None => Vec::new(),
        Some(location) => {
            let files = resolve(location).map_err(|message| Error::SourceMismatch {
                view: view.name.clone(),
                message,
            })?;
            if files.is_empty() {
                return Err(Error::SourceMismatch {
                    view: view.name.clone(),
                    message: format!(
                        "source path `{location}` matches no Parquet file; check the path in source `{}`",
                        view.source_name
                    ),
                });
            }
            files
        }
    };
    files.extend(push_log_files(&push_log_dir(data_dir, &view.name))?);
    Ok(files)
}

/// The Parquet files of a push log directory, in append order; none if it does not exist.
pub(crate) fn push_log_files(dir: &Path) -> Result<Vec<PathBuf>> {
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

/// Resolves a file, a directory (searched recursively) or a glob into Parquet files sorted by
/// path. A path that does not exist resolves to no file; the caller decides whether that is
/// an error. The error is a message for the user.
pub(crate) fn resolve(location: &str) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();
    if location.contains(['*', '?', '[']) {
        let paths = glob::glob(location)
            .map_err(|e| format!("`{location}` is not a valid glob pattern: {e}"))?;
        for path in paths {
            let path = path.map_err(|e| format!("cannot read {e}"))?;
            if path.is_file() {
                files.push(path);
            }
        }
    } else {
        let path = Path::new(location);
        if path.is_dir() {
            walk(path, &mut files).map_err(|e| format!("cannot list {location}: {e}"))?;
        } else if path.is_file() {
            files.push(path.to_path_buf());
        }
    }
    sort_paths(&mut files);
    Ok(files)
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with(['.', '_']));
        if hidden {
            continue;
        }
        if path.is_dir() {
            walk(&path, files)?;
        } else if is_data_file(&path) {
            files.push(path);
        }
    }
    Ok(())
}

/// `*.parquet`, skipping hidden and temporary files (`.name.tmp`, `_SUCCESS`, ...).
fn is_data_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".parquet") && !n.starts_with(['.', '_']))
}

/// Sorts by the path as a string (the order DataFusion also uses for its file groups).
fn sort_paths(files: &mut [PathBuf]) {
    files.sort_by(|a, b| a.to_string_lossy().cmp(&b.to_string_lossy()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_dirs_and_globs_resolve_in_path_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/c")).expect("mkdir");
        for name in [
            "b/c/2.parquet",
            "b/1.parquet",
            "a.parquet",
            "b/.tmp.parquet",
            "b/_SUCCESS",
            "b/notes.txt",
        ] {
            std::fs::write(root.join(name), b"x").expect("write");
        }
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|p| {
                    p.strip_prefix(root)
                        .expect("prefix")
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        let text = |p: PathBuf| p.to_string_lossy().into_owned();
        let found = resolve(&text(root.join("b"))).expect("dir");
        assert_eq!(names(found), ["b/1.parquet", "b/c/2.parquet"]);
        let found = resolve(&text(root.join("*.parquet"))).expect("glob");
        assert_eq!(names(found), ["a.parquet"]);
        let found = resolve(&text(root.join("a.parquet"))).expect("file");
        assert_eq!(names(found), ["a.parquet"]);
        assert!(
            resolve(&text(root.join("missing")))
                .expect("missing")
                .is_empty()
        );
        assert!(resolve("[").is_err());
        assert!(push_log_files(&root.join("nope")).expect("none").is_empty());
        assert_eq!(
            names(push_log_files(&root.join("b")).expect("log")),
            ["b/1.parquet"]
        );
    }
}
