//! The server's error, and the one mapping from [`ErrorCode`] to `tonic::Code`.

use quiver_core::ErrorCode;
use tonic::Status;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(#[from] quiver_core::Error),
    #[error(transparent)]
    Protocol(#[from] quiver_proto::ProtocolError),
    #[error(transparent)]
    Online(#[from] quiver_online::Error),
    #[error(transparent)]
    Offline(#[from] quiver_offline::Error),
    #[error(transparent)]
    Monitor(#[from] quiver_monitor::Error),
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: String, message: String },
    /// A push that breaks an expectation of a view that rejects such pushes.
    #[error("invalid argument `{field}`: {message}")]
    Violation {
        field: String,
        message: String,
        view: String,
        feature: String,
        rule: &'static str,
    },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{what} `{name}` not found")]
    NotFound { what: &'static str, name: String },
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A request over a limit: `what` it is, the `limit`, and the `setting` that raises it.
    #[error("{what}; the limit is {limit} ({setting})")]
    ResourceExhausted {
        what: String,
        limit: String,
        setting: &'static str,
    },
    #[error("cancelled")]
    Cancelled,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Core(e) => e.code(),
            Error::Protocol(e) => e.code(),
            Error::Online(e) => e.code(),
            Error::Offline(e) => e.code(),
            Error::Monitor(e) => e.code(),
            Error::InvalidArgument { .. } | Error::Violation { .. } => ErrorCode::InvalidArgument,
            Error::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Error::PermissionDenied(_) => ErrorCode::PermissionDenied,
            Error::ResourceExhausted { .. } => ErrorCode::ResourceExhausted,
            Error::Cancelled => ErrorCode::Cancelled,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Longest message sent to clients; longer ones are cut (a manifest can have many problems).
const MAX_MESSAGE: usize = 4_000;

/// The one mapping from the closed [`ErrorCode`] set to gRPC codes. No catch-all arm: a new
/// code must be mapped here deliberately.
pub fn grpc_code(code: ErrorCode) -> tonic::Code {
    match code {
        ErrorCode::NotFound => tonic::Code::NotFound,
        ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorCode::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorCode::Unavailable => tonic::Code::Unavailable,
        ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorCode::Cancelled => tonic::Code::Cancelled,
        ErrorCode::Internal => tonic::Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = error.code();
        let message = match code {
            ErrorCode::Internal => {
                let request_id = crate::transport::request_id();
                tracing::error!(%error, %request_id, "internal error");
                format!("internal error; see the server log (request id {request_id})")
            }
            ErrorCode::Unavailable | ErrorCode::ResourceExhausted => {
                tracing::warn!(%error, request_id = %crate::transport::request_id(), "request failed");
                error.to_string()
            }
            ErrorCode::NotFound
            | ErrorCode::AlreadyExists
            | ErrorCode::InvalidArgument
            | ErrorCode::FailedPrecondition
            | ErrorCode::Unauthenticated
            | ErrorCode::PermissionDenied
            | ErrorCode::Cancelled => {
                tracing::info!(%error, request_id = %crate::transport::request_id(), "request refused");
                error.to_string()
            }
        };
        let message = if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... (truncated)", &message[..end])
        } else {
            message
        };
        Status::new(grpc_code(code), message)
    }
}
