//! Backups while serving: a consistent copy of the data directory staged under
//! `<data dir>/backups/` (a RocksDB checkpoint of online rows, registry versions and
//! watermarks, and hard links to the committed push-log files, which never change), then
//! streamed to the client file by file with each file's SHA-256, and removed.
//!
//! Every push acknowledged before a backup starts is in it: an acknowledged push's push-log
//! file was committed and its online rows synced before the acknowledgement, and the
//! checkpoint and the link listing both start after the call arrived.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use quiver_core::fingerprint::hex;
use quiver_offline::OfflineStore;
use quiver_online::RocksStore;
use quiver_proto::v1;
use sha2::Digest;

use crate::error::{Error, Result};
use crate::options::Clock;
use crate::registry::Registry;

/// Bytes per streamed chunk.
const CHUNK_BYTES: usize = 1 << 20;
/// Staging directories start with this; leftovers of a crash are removed at start.
const STAGING_PREFIX: &str = ".staging-";

/// Stages backups of one data directory, one at a time.
#[derive(Debug)]
pub struct Backups {
    data_dir: PathBuf,
    store: Arc<RocksStore>,
    offline: Arc<OfflineStore>,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    running: Arc<AtomicBool>,
}

/// A staged backup: its files, ready to stream; the staging directory goes when it is dropped.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    /// Relative paths, '/'-separated, sorted.
    files: Vec<String>,
    registry_version: u64,
    started_at: i64,
    running: Arc<AtomicBool>,
}

impl Backups {
    /// Removes staging directories a crash left behind.
    pub fn open(
        data_dir: &Path,
        store: Arc<RocksStore>,
        offline: Arc<OfflineStore>,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
    ) -> Result<Backups> {
        let root = data_dir.join("backups");
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                if entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(STAGING_PREFIX)
                {
                    remove_staging(&entry.path());
                }
            }
        }
        Ok(Backups {
            data_dir: data_dir.to_path_buf(),
            store,
            offline,
            registry,
            clock,
            running: Arc::new(AtomicBool::new(false)),
        })
    }

    /// A hold on the push-log files for [`Backups::stage`].
    pub async fn hold_push_log(&self) -> quiver_offline::PushLogGuard {
        self.offline.hold_push_log().await
    }

    /// Stages a backup (blocking: a checkpoint flushes memtables and links files) while
    /// `_hold` keeps the push-log files. A second backup while one is staged or streaming is
    /// FAILED_PRECONDITION.
    pub fn stage(&self, _hold: quiver_offline::PushLogGuard) -> Result<Staged> {
        if self.running.swap(true, Ordering::AcqRel) {
            return Err(Error::FailedPrecondition(
                "a backup is already running; retry when it has finished".into(),
            ));
        }
        let started_at = self.clock.now();
        let dir = self.data_dir.join("backups").join(format!(
            "{STAGING_PREFIX}{started_at}-{:016x}",
            rand::random::<u64>()
        ));
        let mut staged = Staged {
            dir,
            files: Vec::new(),
            registry_version: self.registry.snapshot().version,
            started_at,
            running: Arc::clone(&self.running),
        };
        std::fs::create_dir_all(&staged.dir).map_err(|e| io("create", &staged.dir, e))?;
        self.store.checkpoint(&staged.dir.join("rocksdb"))?;
        for relative in self.offline.committed_push_log()? {
            let (from, to) = (self.data_dir.join(&relative), staged.dir.join(&relative));
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io("create", parent, e))?;
            }
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(|e| io("copy", &from, e))?;
            }
        }
        staged.files = list_files(&staged.dir)?;
        Ok(staged)
    }
}

impl Staged {
    /// Streams every file in chunks, then the summary, into `send` (blocking: reads files);
    /// true when all of it was sent. Stops when `send` fails (the client went away) or after
    /// sending a read error.
    pub fn stream(&self, send: impl Fn(Result<v1::BackupResponse>) -> bool) -> bool {
        let mut total = 0u64;
        for relative in &self.files {
            let Some(size) = self.stream_file(relative, &send) else {
                return false;
            };
            total += size;
        }
        let summary = v1::BackupSummary {
            registry_version: self.registry_version,
            started_at_micros: self.started_at,
            files: self.files.len() as u64,
            bytes: total,
        };
        send(Ok(item(v1::backup_response::Item::Summary(summary))))
    }

    fn stream_file(
        &self,
        relative: &str,
        send: &impl Fn(Result<v1::BackupResponse>) -> bool,
    ) -> Option<u64> {
        let path = self.dir.join(relative);
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                fail(send, io("open", &path, e));
                return None;
            }
        };
        let (mut hasher, mut size) = (sha2::Sha256::new(), 0u64);
        let mut buffer = vec![0u8; CHUNK_BYTES];
        loop {
            let n = match read_full(&mut file, &mut buffer) {
                Ok(n) => n,
                Err(e) => {
                    fail(send, io("read", &path, e));
                    return None;
                }
            };
            hasher.update(&buffer[..n]);
            size += n as u64;
            let last = n < buffer.len();
            let chunk = v1::BackupFileChunk {
                path: relative.to_string(),
                data: buffer[..n].to_vec(),
                last,
                size: if last { size } else { 0 },
                sha256: if last {
                    hex(&hasher.clone().finalize())
                } else {
                    String::new()
                },
            };
            if !send(Ok(item(v1::backup_response::Item::Chunk(chunk)))) {
                return None;
            }
            if last {
                return Some(size);
            }
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        // Unlinking many files blocks: on the blocking pool when there is one.
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn_blocking(move || remove_staging(&dir));
            }
            Err(_) => remove_staging(&dir),
        }
        self.running.store(false, Ordering::Release);
    }
}

/// Opens a restored data directory as the server would and returns its registry version:
/// the check `quiver restore` runs before it reports success.
pub fn verify_data_dir(data_dir: &Path) -> Result<u64> {
    let store = RocksStore::open(&data_dir.join("rocksdb"))?;
    Ok(store.load_registry()?.map_or(0, |state| state.version))
}

fn item(item: v1::backup_response::Item) -> v1::BackupResponse {
    v1::BackupResponse { item: Some(item) }
}

/// Logs and sends `error` (the stream ends after it).
fn fail(send: &impl Fn(Result<v1::BackupResponse>) -> bool, error: Error) {
    tracing::warn!(%error, "backup failed");
    send(Err(error));
}

/// Fills `buffer` unless the file ends first; returns the bytes read.
fn read_full(file: &mut std::fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Every regular file under `dir`, relative and '/'-separated, sorted.
fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let entries = std::fs::read_dir(&current).map_err(|e| io("list", &current, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io("list", &current, e))?;
            let kind = entry
                .file_type()
                .map_err(|e| io("inspect", &entry.path(), e))?;
            if kind.is_dir() {
                pending.push(entry.path());
            } else if kind.is_file()
                && let Ok(relative) = entry.path().strip_prefix(dir)
            {
                let parts: Vec<String> = relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                files.push(parts.join("/"));
            }
        }
    }
    files.sort();
    Ok(files)
}

fn remove_staging(dir: &Path) {
    if let Err(error) = std::fs::remove_dir_all(dir)
        && error.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), %error, "cannot remove a backup staging directory");
    }
}

fn io(action: &str, path: &Path, error: std::io::Error) -> Error {
    Error::Internal(format!(
        "backup: cannot {action} {}: {error}",
        path.display()
    ))
}
