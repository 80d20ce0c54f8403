//! The crate's one error type, and its conversion into the online store's error (which the
//! server maps onto gRPC codes).

use quiver_core::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The `--online-store` URL is malformed.
    #[error("--online-store: {0}")]
    Url(String),
    /// The cluster could not be reached, or a command failed or timed out.
    #[error("redis cluster failed to {action}: {source}")]
    Redis {
        action: &'static str,
        #[source]
        source: redis::RedisError,
    },
    /// The cluster is configured in a way Quiver cannot run on (eviction, for example).
    #[error("redis cluster: {0}")]
    Config(String),
    /// Fewer replicas acknowledged a durable write than `replicas=` asks for.
    #[error(
        "a durable write reached {acknowledged} replica(s) of some primary within the timeout; `replicas={wanted}` asks for {wanted}"
    )]
    Replicas { acknowledged: i64, wanted: u32 },
    /// Every connection allowed is in use (`max_connections`), for longer than the timeout.
    #[error(
        "all {limit} redis connections are in use (`max_connections` in --online-store): raise it, or add replicas"
    )]
    Busy { limit: usize },
    /// The cluster answered something this crate did not expect.
    #[error("redis cluster: unexpected answer to {0}")]
    Protocol(&'static str),
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Url(_) => ErrorCode::InvalidArgument,
            Error::Redis { .. } | Error::Replicas { .. } => ErrorCode::Unavailable,
            Error::Config(_) => ErrorCode::FailedPrecondition,
            Error::Busy { .. } => ErrorCode::ResourceExhausted,
            Error::Protocol(_) => ErrorCode::Internal,
        }
    }

    /// A failure the cluster recovers from by itself: a redirection (slots moved), a
    /// cluster briefly down, a node unreachable or a connection dropped (a failover).
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            Error::Redis { source, .. } => {
                source.is_cluster_error() || source.is_io_error() || source.is_connection_dropped()
            }
            _ => false,
        }
    }

    pub(crate) fn redis(action: &'static str) -> impl FnOnce(redis::RedisError) -> Error {
        move |source| Error::Redis { action, source }
    }
}

impl From<Error> for quiver_core::Error {
    fn from(error: Error) -> Self {
        quiver_core::Error::backend(error.code(), error)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
