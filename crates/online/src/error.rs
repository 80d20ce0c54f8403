//! The crate's one error type and its mapping onto [`ErrorCode`].

use quiver_core::ErrorCode;
use quiver_core::types::KeyType;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB failed (I/O, a full disk, a lock held by another process, ...).
    #[error("rocksdb failed to {action}: {source}")]
    Storage {
        action: &'static str,
        #[source]
        source: rocksdb::Error,
    },
    /// The database opened without a column family this crate creates.
    #[error("column family `{0}` is missing")]
    MissingColumnFamily(&'static str),
    /// Bytes on disk that do not decode: a bug, a foreign writer or a damaged file.
    #[error("corrupt {what}: {message}")]
    Corrupt { what: String, message: String },
    /// The registry state could not be serialized.
    #[error("failed to serialize registry state version {version}: {source}")]
    SerializeRegistry {
        version: u64,
        #[source]
        source: serde_json::Error,
    },
    /// A key part of a read has another type than the view's join key at that position.
    #[error(
        "key of view `{view}`: join key `{join_key}` (position {position}) is {expected}, got {actual}"
    )]
    KeyType {
        view: String,
        join_key: String,
        position: usize,
        expected: KeyType,
        actual: KeyType,
    },
    /// A key of a read has another number of parts than the view has join keys.
    #[error("key of view `{view}` has {actual} parts, the view has {expected} join keys ({names})")]
    KeyArity {
        view: String,
        expected: usize,
        actual: usize,
        names: String,
    },
    /// Something does not fit a length field of the persisted layouts (see `keys`, `row_codec`).
    #[error("{what} has length {len}, more than the storage layout allows ({max})")]
    TooLong { what: String, len: usize, max: u64 },
    /// A row given to `write_rows` does not match the view; nothing of its batch was written.
    #[error("invalid row `{field}`: {message}")]
    InvalidRow { field: String, message: String },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Storage { .. }
            | Error::MissingColumnFamily(_)
            | Error::Corrupt { .. }
            | Error::SerializeRegistry { .. } => ErrorCode::Internal,
            Error::KeyType { .. }
            | Error::KeyArity { .. }
            | Error::TooLong { .. }
            | Error::InvalidRow { .. } => ErrorCode::InvalidArgument,
        }
    }

    pub(crate) fn storage(action: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
        move |source| Error::Storage { action, source }
    }

    pub(crate) fn corrupt(what: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            message: message.into(),
        }
    }

    pub(crate) fn invalid_row(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::InvalidRow {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
