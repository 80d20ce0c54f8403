use quiver_core::ErrorCode;

/// What profiling and drift can fail on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A column the profile was told about is missing or has a type it cannot read.
    #[error("column `{column}`: {message}")]
    Column { column: String, message: String },
    /// A stored sketch does not decode (a corrupt or foreign profile).
    #[error("profile {what}: the stored sketch does not decode: {message}")]
    Sketch { what: String, message: String },
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Column { .. } => ErrorCode::InvalidArgument,
            Error::Sketch { .. } => ErrorCode::Internal,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
