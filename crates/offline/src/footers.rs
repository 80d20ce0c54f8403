//! Parsed Parquet footers, kept between reads: every join, range read and materialization
//! plans its units from the footers of all of a view's files, and most files (sources, merged
//! push-log files) are read again and again unchanged.
//!
//! Keyed by (path, length, modification time): a file replaced in place is parsed again. The
//! cache holds at most [`FOOTER_CACHE_ENTRIES`] footers and is emptied when full (footers of
//! deleted files go then too); a footer is a few KiB for the narrow files Quiver reads.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::Mutex;

use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;

use crate::data_file::{DataFile, FooterError, RemoteFile};
use crate::error::Error;

/// Most footers kept.
pub(crate) const FOOTER_CACHE_ENTRIES: usize = 4096;

/// (path or URL, length, version: the modification time, or an object's ETag).
type Key = (std::ffi::OsString, u64, String);

#[derive(Debug, Default)]
pub(crate) struct FooterCache {
    entries: Mutex<HashMap<Key, ArrowReaderMetadata>>,
}

impl FooterCache {
    /// The footer of `file` (open at `path`), parsed unless it is cached for this version of
    /// the file.
    pub(crate) fn load(
        &self,
        path: &Path,
        file: &File,
    ) -> Result<ArrowReaderMetadata, ParquetError> {
        let stat = file
            .metadata()
            .map_err(|e| ParquetError::External(Box::new(e)))?;
        let modified = stat
            .modified()
            .ok()
            .map(|t| format!("{t:?}"))
            .unwrap_or_default();
        let key = (path.as_os_str().to_owned(), stat.len(), modified);
        self.get_or_load(key, || {
            ArrowReaderMetadata::load(file, ArrowReaderOptions::new())
        })
    }

    /// Blocking: the footer of `file`, a local file or an object, parsed unless cached.
    pub(crate) fn load_file(&self, file: &DataFile) -> Result<ArrowReaderMetadata, FooterError> {
        match file {
            DataFile::Local(path) => {
                let handle = File::open(path).map_err(|e| FooterError::Read(Error::io(path, e)))?;
                self.load(path, &handle).map_err(FooterError::Parquet)
            }
            DataFile::Remote(remote) => self.load_remote(remote),
        }
    }

    /// Blocking: the footer of an object, read remotely unless it is cached for the version
    /// the listing saw.
    fn load_remote(&self, file: &RemoteFile) -> Result<ArrowReaderMetadata, FooterError> {
        let key = (file.url.clone().into(), file.size, file.version.clone());
        self.get_or_load(key, || file.footer())
    }

    fn get_or_load<E>(
        &self,
        key: Key,
        load: impl FnOnce() -> Result<ArrowReaderMetadata, E>,
    ) -> Result<ArrowReaderMetadata, E> {
        if let Some(found) = self.lock().get(&key) {
            return Ok(found.clone());
        }
        let metadata = load()?;
        let mut entries = self.lock();
        if entries.len() >= FOOTER_CACHE_ENTRIES {
            entries.clear();
        }
        entries.insert(key, metadata.clone());
        Ok(metadata)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, ArrowReaderMetadata>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};

    use super::*;

    fn write(path: &Path, rows: i64) {
        let batch = RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..rows)) as _,
        )])
        .expect("batch");
        crate::parquet_writer::write_file_durably(path, &[batch], Vec::new()).expect("write");
    }

    #[test]
    fn a_footer_is_parsed_once_per_version_of_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f.parquet");
        write(&path, 3);
        let cache = FooterCache::default();
        let open = || File::open(&path).expect("open");
        let first = cache.load(&path, &open()).expect("load");
        let again = cache.load(&path, &open()).expect("load");
        assert!(Arc::ptr_eq(first.metadata(), again.metadata()), "cached");
        assert_eq!(cache.len(), 1);
        // Replaced in place (a new length): parsed again.
        write(&path, 3000);
        let replaced = cache.load(&path, &open()).expect("load");
        assert_eq!(replaced.metadata().file_metadata().num_rows(), 3000);
        assert_eq!(cache.len(), 2);
    }
}
