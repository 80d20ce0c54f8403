//! [`OfflineLog`]: where push logs live, behind one async trait with no backend types. A
//! directory (`<data_dir>/offline`, or one every replica mounts) and a prefix in object
//! storage (shared by replicas) implement it in `quiver-offline`.
//!
//! A log is directories (one per view and data generation) of immutable files, each a whole
//! Parquet file named so that names sort in append order (see `quiver-offline`'s `files.rs`
//! and [`crate::semantics::LogPosition`]). The trait stores and lists files; what they hold,
//! how they are ordered, merged and read stays with the offline engine:
//!
//! - **append**: a push group's file, or a merged file, is stored create-only, durable once
//!   the call returns, and seen by readers whole or not at all;
//! - **list**: the committed files of a directory (never one still being written);
//! - **compact**: a merged file is appended under a name that covers a run of files, which
//!   listings then hide, and the covered files are removed later, once no reader may still
//!   read them ([`OfflineLog::remove`]).
//!
//! Errors are [`crate::Error::Backend`] with the code the backend chose.

use crate::error::Result;

/// A committed file of a log directory, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The file's name in its directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When it was committed, in microseconds since the epoch.
    pub modified: i64,
    /// Which version of it was listed (an ETag, else the modification time): what a reader
    /// caches its footer under.
    pub version: String,
}

#[async_trait::async_trait]
pub trait OfflineLog: Send + Sync + std::fmt::Debug {
    /// Every directory of the log, sorted.
    async fn dirs(&self) -> Result<Vec<String>>;

    /// The committed files of `dir`, in no particular order; none when it does not exist.
    /// Files being written, and names starting with `.` or `_`, are left out.
    async fn list(&self, dir: &str) -> Result<Vec<LogFile>>;

    /// Stores `file` as `dir/name`, creating `dir` if needed: durable once the call returns,
    /// seen by readers whole or not at all, and create-only (a name that exists is an
    /// `ALREADY_EXISTS` error; the file there is never replaced).
    async fn append(&self, dir: &str, name: &str, file: Vec<u8>) -> Result<()>;

    /// Deletes `dir/name` for good (a file a merged one covers). A file already gone is
    /// not an error.
    async fn remove(&self, dir: &str, name: &str) -> Result<()>;

    /// Where the log lives (a path or a URL, no secrets), for messages.
    fn location(&self) -> String;
}
