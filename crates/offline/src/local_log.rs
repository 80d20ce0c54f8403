//! A push log in a directory ([`LocalLog`], core's [`OfflineLog`]): `<data_dir>/offline` (the
//! embedded default) or a directory every replica mounts (`--push-log-dir DIR`). Files are
//! `<root>/<dir>/<name>`; an append writes `.<name>.<pid>.<nanos>.tmp`, fsyncs it, links it
//! into place (a hard link never replaces, so appends are create-only), removes the
//! temporary name and fsyncs the directory. Readers skip hidden files, so a crash leaves no
//! file or a whole one (and a temporary file, removed at start: `push_log.rs`).
//!
//! The file I/O runs on threads of the log's own ([`io_runtime`]), never on the caller's: the
//! push group's leader waits for an append on a thread of the server's blocking pool, and
//! must not need another thread of that pool to go on (with the pool full of waiting
//! pushes, none would come).

use std::fs::File;
use std::path::{Path, PathBuf};

use quiver_core::ErrorCode;
use quiver_core::offline_log::{LogFile, OfflineLog};

use crate::data_file::DataFile;
use crate::error::{Error, Result};
use crate::files::LogBackend;
use crate::roots::is_data_file;

/// A push log under a directory.
#[derive(Debug, Clone)]
pub(crate) struct LocalLog {
    root: PathBuf,
}

impl LocalLog {
    pub(crate) fn new(root: PathBuf) -> Self {
        LocalLog { root }
    }

    /// Runs `f` with the root on the log's I/O threads.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T> + Send + 'static,
    ) -> quiver_core::Result<T> {
        let root = self.root.clone();
        let runtime = io_runtime().map_err(|e| quiver_core::Error::backend(e.code(), e))?;
        match runtime.spawn_blocking(move || f(&root)).await {
            Ok(result) => result.map_err(quiver_core::Error::from),
            Err(error) => Err(quiver_core::Error::backend(ErrorCode::Internal, error)),
        }
    }
}

/// The runtime whose blocking threads do every local log's file I/O (at most 8 at once),
/// built on first use and kept for the process.
fn io_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        std::sync::OnceLock::new();
    let built = RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(8)
            .thread_name("quiver-log-io")
            .build()
            .map_err(|e| e.to_string())
    });
    built.as_ref().map_err(|message| Error::Io {
        path: PathBuf::from("push log"),
        source: std::io::Error::other(format!("no threads for push-log I/O: {message}")),
    })
}

#[async_trait::async_trait]
impl OfflineLog for LocalLog {
    async fn dirs(&self) -> quiver_core::Result<Vec<String>> {
        self.run(|root| {
            let mut dirs = Vec::new();
            for entry in real_entries(root)? {
                if entry.file_type().map_err(|e| Error::io(root, e))?.is_dir() {
                    dirs.push(entry.file_name().to_string_lossy().into_owned());
                }
            }
            dirs.sort();
            Ok(dirs)
        })
        .await
    }

    async fn list(&self, dir: &str) -> quiver_core::Result<Vec<LogFile>> {
        let dir = dir.to_string();
        self.run(move |root| list_files(&root.join(dir))).await
    }

    async fn append(&self, dir: &str, name: &str, file: Vec<u8>) -> quiver_core::Result<()> {
        let (dir, name) = (dir.to_string(), name.to_string());
        self.run(move |root| append_file(&root.join(dir), &name, &file))
            .await
    }

    async fn remove(&self, dir: &str, name: &str) -> quiver_core::Result<()> {
        let (dir, name) = (dir.to_string(), name.to_string());
        self.run(move |root| {
            let dir = root.join(dir);
            let path = dir.join(name);
            match std::fs::remove_file(&path) {
                Ok(()) => sync_dir(&dir),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(Error::io(&path, e)),
            }
        })
        .await
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

impl LogBackend for LocalLog {
    fn data_file(&self, dir: &str, file: &LogFile) -> DataFile {
        DataFile::Local(self.root.join(dir).join(&file.name))
    }

    fn local_root(&self) -> Option<&Path> {
        Some(&self.root)
    }
}

/// The committed files of `dir` (none if it does not exist); a file gone since the
/// directory was read (another replica removed a covered file) is left out.
fn list_files(dir: &Path) -> Result<Vec<LogFile>> {
    let mut files = Vec::new();
    for entry in entries(dir)? {
        let path = entry.path();
        if !is_data_file(&path) {
            continue;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let modified = meta.modified().map_err(|e| Error::io(&path, e))?;
        let modified = chrono::DateTime::<chrono::Utc>::from(modified).timestamp_micros();
        files.push(LogFile {
            name: path
                .file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            bytes: meta.len(),
            modified,
            version: modified.to_string(),
        });
    }
    Ok(files)
}

/// Writes `bytes` as `dir/name` durably and create-only (see the module docs). Once the
/// link and the directory's sync succeeded the file is committed: a temporary name that
/// cannot be removed then is only logged (the next start removes it).
fn append_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let temp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
    let path = dir.join(name);
    let committed = write_synced(&temp, bytes)
        .and_then(|()| link_new(&temp, &path))
        .and_then(|()| sync_dir(dir));
    match (std::fs::remove_file(&temp), &committed) {
        (Err(error), Ok(())) if error.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(path = %temp.display(), %error, "a committed push-log file left its temporary name");
        }
        _ => {} // Removed, renamed into place, or reported with the failure.
    }
    committed
}

/// Puts `temp` at `path` unless something is there: a hard link, which never replaces. On a
/// file system without hard links, a rename after a check (names are unique to their
/// writer, so the check only guards against a bug).
fn link_new(temp: &Path, path: &Path) -> Result<()> {
    let exists = || Error::AlreadyExists {
        field: "push log".into(),
        message: format!(
            "{} exists; push-log files are never replaced",
            path.display()
        ),
    };
    match std::fs::hard_link(temp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::Unsupported | std::io::ErrorKind::PermissionDenied
            ) =>
        {
            if path.exists() {
                return Err(exists());
            }
            std::fs::rename(temp, path).map_err(|e| Error::io(path, e))
        }
        Err(e) => Err(Error::io(path, e)),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut file = File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(path, e))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

/// The entries of `dir` (none if it does not exist).
pub(crate) fn entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.map(|e| e.map_err(|e| Error::io(dir, e))).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(dir, e)),
    }
}

/// The entries of `dir` that are no symlinks (none if it does not exist).
pub(crate) fn real_entries(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut real = Vec::new();
    for entry in entries(dir)? {
        if !entry
            .file_type()
            .map_err(|e| Error::io(dir, e))?
            .is_symlink()
        {
            real.push(entry);
        }
    }
    Ok(real)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_are_create_only_and_listings_show_committed_files() -> quiver_core::Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let log = LocalLog::new(dir.path().join("offline"));
        futures::executor::block_on(async {
            assert!(log.dirs().await?.is_empty(), "no directory yet");
            assert!(log.list("trips").await?.is_empty());
            log.append("trips", "1.parquet", b"first".to_vec()).await?;
            log.append("trips@2", "2.parquet", b"second".to_vec())
                .await?;
            // A name that exists is refused, and the file there is kept.
            let refused = log.append("trips", "1.parquet", b"other".to_vec()).await;
            assert_eq!(refused.map_err(|e| e.code()), Err(ErrorCode::AlreadyExists));
            let root = dir.path().join("offline");
            assert_eq!(
                std::fs::read(root.join("trips/1.parquet")).ok(),
                Some(b"first".to_vec())
            );
            // Temporary and hidden files are not the log's.
            std::fs::write(root.join("trips/.3.parquet.1.2.tmp"), b"x").ok();
            std::fs::write(root.join("trips/_SUCCESS"), b"x").ok();
            assert_eq!(log.dirs().await?, ["trips", "trips@2"]);
            let listed = log.list("trips").await?;
            let names: Vec<&str> = listed.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["1.parquet"]);
            assert_eq!(listed[0].bytes, 5);
            // Removing is for good, and removing again is no error.
            log.remove("trips", "1.parquet").await?;
            log.remove("trips", "1.parquet").await?;
            assert!(log.list("trips").await?.is_empty());
            Ok(())
        })
    }
}
