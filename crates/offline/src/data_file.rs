//! A Parquet file of a view's data or a label table, local or in object storage, and how its
//! bytes are read: a local file directly; an object by ranged reads, the footer first, then
//! the column chunks a scan unit needs, fetched together and decoded from memory by the same
//! synchronous reader that decodes local files.

use std::fs::File;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, Length};

use crate::error::{Error, Result};
use crate::object::{block_on, object_error};

/// Bytes read from the end of an object for its footer: most footers fit in one read.
const FOOTER_PREFETCH: u64 = 64 * 1024;
/// Largest footer read (a wide file's footer is a few MiB).
const MAX_FOOTER: u64 = 64 * 1024 * 1024;

/// One Parquet file to read.
#[derive(Debug, Clone)]
pub(crate) enum DataFile {
    Local(PathBuf),
    Remote(RemoteFile),
}

/// An object found by a listing: where it is, and which version of it was listed.
#[derive(Debug, Clone)]
pub(crate) struct RemoteFile {
    pub(crate) store: Arc<dyn ObjectStore>,
    /// `s3://bucket/key`, for messages and as the cache key.
    pub(crate) url: String,
    pub(crate) location: ObjectPath,
    pub(crate) size: u64,
    /// The ETag (or else the modification time) at listing.
    pub(crate) version: String,
}

impl DataFile {
    /// The path or URL, for messages and sorting.
    pub(crate) fn name(&self) -> String {
        match self {
            DataFile::Local(path) => path.to_string_lossy().into_owned(),
            DataFile::Remote(file) => file.url.clone(),
        }
    }

    /// Blocking: the footer, parsed (uncached; reads that repeat go through
    /// `FooterCache::load_file`).
    pub(crate) fn footer(&self) -> Result<ArrowReaderMetadata, FooterError> {
        match self {
            DataFile::Local(path) => {
                let file = File::open(path).map_err(|e| FooterError::Read(Error::io(path, e)))?;
                ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
                    .map_err(FooterError::Parquet)
            }
            DataFile::Remote(remote) => remote.footer(),
        }
    }

    /// As a path, for errors that carry one (a URL for an object).
    pub(crate) fn error_path(&self) -> PathBuf {
        match self {
            DataFile::Local(path) => path.clone(),
            DataFile::Remote(file) => PathBuf::from(&file.url),
        }
    }
}

impl RemoteFile {
    pub(crate) fn new(
        store: &Arc<dyn ObjectStore>,
        url: String,
        meta: object_store::ObjectMeta,
    ) -> Self {
        let version = meta
            .e_tag
            .clone()
            .unwrap_or_else(|| meta.last_modified.to_rfc3339());
        RemoteFile {
            store: Arc::clone(store),
            url,
            location: meta.location,
            size: meta.size,
            version,
        }
    }

    /// Blocking: reads and parses the footer: one ranged read of the file's tail, and a
    /// second when the footer is larger than that.
    pub(crate) fn footer(&self) -> Result<ArrowReaderMetadata, FooterError> {
        let unreadable = |what: String| FooterError::Parquet(ParquetError::General(what));
        if self.size < 12 {
            return Err(unreadable(format!(
                "{} bytes is too small for Parquet",
                self.size
            )));
        }
        let tail = self.size.min(FOOTER_PREFETCH);
        let mut bytes = self
            .fetch(std::iter::once(self.size - tail..self.size))
            .map_err(FooterError::Read)?;
        let Some(needed) = bytes.footer_len() else {
            return Err(unreadable("no Parquet magic at its end".into()));
        };
        if needed > tail {
            if needed > self.size || needed > MAX_FOOTER {
                return Err(unreadable(format!(
                    "a footer of {needed} bytes is not plausible"
                )));
            }
            bytes = self
                .fetch(std::iter::once(self.size - needed..self.size))
                .map_err(FooterError::Read)?;
        }
        ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new()).map_err(FooterError::Parquet)
    }

    /// Blocking: fetches `ranges` of the object (adjacent ranges in one request) and returns
    /// a reader that serves those ranges, and only those, from memory.
    pub(crate) fn fetch(&self, ranges: impl IntoIterator<Item = Range<u64>>) -> Result<SparseFile> {
        let mut ranges: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.end > r.start).collect();
        ranges.sort_by_key(|r| r.start);
        ranges.dedup();
        let bytes = block_on(self.store.get_ranges(&self.location, &ranges))?
            .map_err(|e| object_error(&self.url, &e))?;
        Ok(SparseFile {
            len: self.size,
            chunks: ranges.into_iter().map(|r| r.start).zip(bytes).collect(),
        })
    }
}

/// Why a footer could not be had: the file or object could not be read, or its bytes are
/// not Parquet.
#[derive(Debug)]
pub(crate) enum FooterError {
    Read(Error),
    Parquet(ParquetError),
}

/// Some byte ranges of a file, in memory; reading outside them is an error.
#[derive(Debug)]
pub(crate) struct SparseFile {
    len: u64,
    /// `(offset, bytes)`, sorted by offset.
    chunks: Vec<(u64, Bytes)>,
}

impl SparseFile {
    /// The length of the Parquet footer (metadata, its length and the magic) that the last
    /// eight bytes of the file announce, if they are here and end with the magic.
    fn footer_len(&self) -> Option<u64> {
        let (bytes, at) = self.find(self.len.checked_sub(8)?, 8).ok()?;
        let last: &[u8] = bytes.get(at..at + 8)?;
        if !matches!(&last[4..], b"PAR1" | b"PARE") {
            return None;
        }
        let length: [u8; 4] = last[..4].try_into().ok()?;
        Some(u64::from(u32::from_le_bytes(length)) + 8)
    }

    /// The chunk holding `[start, start + length)`, and the offset into it.
    fn find(&self, start: u64, length: usize) -> Result<(&Bytes, usize), ParquetError> {
        let end = start.saturating_add(length as u64);
        self.chunks
            .iter()
            .rev()
            .find(|(offset, bytes)| *offset <= start && end <= offset + bytes.len() as u64)
            .map(|(offset, bytes)| (bytes, (start - offset) as usize))
            .ok_or_else(|| {
                ParquetError::General(format!(
                    "bytes {start}..{end} were not fetched from object storage"
                ))
            })
    }
}

impl Length for SparseFile {
    fn len(&self) -> u64 {
        self.len
    }
}

impl ChunkReader for SparseFile {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> Result<Self::T, ParquetError> {
        let (bytes, at) = self.find(start, 0)?;
        Ok(bytes.slice(at..).reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> Result<Bytes, ParquetError> {
        if length == 0 {
            return Ok(Bytes::new());
        }
        let (bytes, at) = self.find(start, length)?;
        Ok(bytes.slice(at..at + length))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    #[test]
    fn a_sparse_file_serves_its_ranges_only() {
        let file = SparseFile {
            len: 100,
            chunks: vec![
                (10, Bytes::from_static(b"abcdef")),
                (50, Bytes::from_static(b"xyz")),
            ],
        };
        assert_eq!(
            file.get_bytes(12, 3).expect("inside"),
            Bytes::from_static(b"cde")
        );
        assert_eq!(
            file.get_bytes(50, 3).expect("whole"),
            Bytes::from_static(b"xyz")
        );
        let mut rest = String::new();
        file.get_read(13)
            .expect("read")
            .read_to_string(&mut rest)
            .expect("utf8");
        assert_eq!(rest, "def");
        for (start, length) in [(9, 2), (14, 3), (30, 1), (52, 2)] {
            assert!(file.get_bytes(start, length).is_err(), "{start}+{length}");
        }
        assert_eq!(file.get_bytes(30, 0).expect("empty"), Bytes::new());
        assert_eq!(file.footer_len(), None, "no tail fetched");
        let tail = |bytes: &'static [u8]| SparseFile {
            len: 100,
            chunks: vec![(92, Bytes::from_static(bytes))],
        };
        assert_eq!(tail(b"\x10\x00\x00\x00PAR1").footer_len(), Some(24));
        assert_eq!(tail(b"1,2,3,4\n").footer_len(), None, "not Parquet");
    }
}
