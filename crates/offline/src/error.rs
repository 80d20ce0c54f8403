//! The crate's one error type and its mapping onto `quiver_core::ErrorCode`.

use std::path::PathBuf;

use datafusion::error::DataFusionError;
use quiver_core::ErrorCode;

/// Everything that can go wrong in the offline store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller's input is wrong (label table, feature names, pushed rows).
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: String, message: String },
    /// A file the request would replace without saying so.
    #[error("`{field}`: {message}")]
    AlreadyExists { field: String, message: String },
    /// Output column names that would appear twice.
    #[error(
        "output column names collide: {}; ask for full names (`view__feature`) or request fewer features",
        names.join(", ")
    )]
    NameCollision { names: Vec<String> },
    /// The view's stored data (source Parquet or push log) does not fit the view.
    #[error("data of feature view `{view}` does not fit its definition: {message}")]
    SourceMismatch { view: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("Parquet file {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("query engine: {0}")]
    DataFusion(#[from] DataFusionError),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// Object storage refused or failed a request; `kind` says how.
    #[error("object storage `{url}`: {message}")]
    ObjectStore {
        url: String,
        kind: ObjectErrorKind,
        message: String,
    },
    /// The write of a push-log file that several appends shared failed: each append gets
    /// the failure with the original error's code (a store that cannot be reached stays
    /// UNAVAILABLE for every caller).
    #[error("push log: {message}")]
    GroupCommit { code: ErrorCode, message: String },
    /// The push log's backend (core's `OfflineLog`) failed or refused, with its code.
    #[error("push log: {0}")]
    Log(#[from] quiver_core::Error),
    /// More data than the in-memory structures address (for example > 4 billion rows).
    #[error("too much data: {0}")]
    TooLarge(String),
    /// The offline memory budget cannot grant what the work needs, even partitioned.
    #[error("offline memory: {0}")]
    OverBudget(String),
    /// A stream of record batches from outside this crate, given to
    /// [`write_parquet`](crate::write_parquet), failed; `what` names it.
    #[error("reading {what} failed: {source}")]
    InputStream {
        what: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// How an object storage request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectErrorKind {
    /// No such bucket or object.
    Missing,
    /// The credentials were refused or lack a permission: the server's configuration.
    Denied,
    /// Not a valid object key.
    InvalidPath,
    /// An object is already there (a create-only write).
    Exists,
    /// The store could not be reached or failed (after retries).
    Unavailable,
    /// Anything else the store reported.
    Other,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArgument { .. } | Error::NameCollision { .. } => {
                ErrorCode::InvalidArgument
            }
            Error::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            Error::SourceMismatch { .. } => ErrorCode::FailedPrecondition,
            Error::Io { .. } | Error::Parquet { .. } | Error::Arrow(_) => ErrorCode::Internal,
            Error::DataFusion(e) => datafusion_code(e),
            Error::Task(e) if e.is_cancelled() => ErrorCode::Cancelled,
            Error::Task(_) => ErrorCode::Internal,
            Error::ObjectStore { kind, .. } => match kind {
                ObjectErrorKind::Missing => ErrorCode::NotFound,
                ObjectErrorKind::Denied => ErrorCode::FailedPrecondition,
                ObjectErrorKind::InvalidPath => ErrorCode::InvalidArgument,
                ObjectErrorKind::Exists => ErrorCode::AlreadyExists,
                ObjectErrorKind::Unavailable => ErrorCode::Unavailable,
                ObjectErrorKind::Other => ErrorCode::Internal,
            },
            Error::TooLarge(_) | Error::OverBudget(_) => ErrorCode::ResourceExhausted,
            Error::GroupCommit { code, .. } => *code,
            Error::Log(e) => e.code(),
            // The source's own classification is not known here.
            Error::InputStream { .. } => ErrorCode::Internal,
        }
    }

    /// A failed input stream, `what` naming it ("the Arrow Flight stream").
    pub fn input_stream(
        what: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Error::InputStream {
            what: what.into(),
            source: source.into(),
        }
    }

    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.into(),
            source,
        }
    }
}

/// Classifies a DataFusion error by its root cause. `DataFusionError` is a foreign enum with
/// feature-dependent variants, so this match (unlike [`Error::code`]) has a catch-all arm.
fn datafusion_code(error: &DataFusionError) -> ErrorCode {
    match error.find_root() {
        DataFusionError::ResourcesExhausted(_) => ErrorCode::ResourceExhausted,
        // Reading label objects: classified as the store's own errors are.
        DataFusionError::ObjectStore(e) => crate::object::object_error("", e).code(),
        DataFusionError::Plan(_) | DataFusionError::SQL(..) | DataFusionError::SchemaError(..) => {
            ErrorCode::InvalidArgument
        }
        _ => ErrorCode::Internal,
    }
}

impl From<Error> for quiver_core::Error {
    /// A backend's error behind a trait of core (`OfflineLog`, `RegistryStore`): its code
    /// and its source chain. A core error that passed through is given back as it was.
    fn from(error: Error) -> Self {
        match error {
            Error::Log(error) => error,
            error => quiver_core::Error::backend(error.code(), error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datafusion_errors_are_classified_by_their_root() {
        let nested = DataFusionError::Context(
            "reading labels".into(),
            Box::new(DataFusionError::ResourcesExhausted("memory".into())),
        );
        assert_eq!(
            Error::DataFusion(nested).code(),
            ErrorCode::ResourceExhausted
        );
        let plan = DataFusionError::Plan("no such column".into());
        assert_eq!(Error::DataFusion(plan).code(), ErrorCode::InvalidArgument);
        let other = DataFusionError::Execution("boom".into());
        assert_eq!(Error::DataFusion(other).code(), ErrorCode::Internal);
        let names = Error::NameCollision {
            names: vec!["conv_rate".into()],
        };
        assert_eq!(names.code(), ErrorCode::InvalidArgument);
        assert!(names.to_string().contains("conv_rate"));
    }
}
