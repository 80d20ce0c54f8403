//! Errors of the domain model and the closed `ErrorCode` set every crate maps into.

/// The closed set of error classes Quiver reports. Each crate's error has `fn code()`, and
/// `quiver-server` maps this set (and only this set) onto `tonic::Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    NotFound,
    AlreadyExists,
    InvalidArgument,
    FailedPrecondition,
    ResourceExhausted,
    Unavailable,
    Unauthenticated,
    PermissionDenied,
    Cancelled,
    Internal,
}

/// One problem found in a manifest: where it is and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The manifest file (empty when the object came over the API without a file).
    pub file: String,
    /// `Kind/name` of the object, empty for file-level problems.
    pub object: String,
    /// The field at fault, as a path (`features[1].type`).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if !self.file.is_empty() {
            parts.push(self.file.clone());
        }
        if !self.object.is_empty() {
            parts.push(self.object.clone());
        }
        if !self.field.is_empty() {
            parts.push(format!("field `{}`", self.field));
        }
        if parts.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", parts.join(": "), self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid manifests:\n{}", format_problems(.0))]
    Invalid(Vec<Problem>),
    #[error("{kind} `{name}` not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} `{name}` has no version {version} (latest is {latest})")]
    VersionNotFound {
        kind: &'static str,
        name: String,
        version: u32,
        latest: u32,
    },
    #[error(
        "registry changed since the plan: planned against version {expected}, now at {actual}; run plan again"
    )]
    StaleRegistry { expected: u64, actual: u64 },
    #[error("breaking changes need --force:\n{}", .0.join("\n"))]
    Breaking(Vec<String>),
    #[error("invalid argument `{field}`: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("fingerprint mismatch for {object}: expected {expected}, registry has {actual}")]
    FingerprintMismatch {
        object: String,
        expected: String,
        actual: String,
    },
    #[error("corrupt registry state: {0}")]
    Corrupt(String),
    /// A registry store (`registry_store`) failed or refused; its backend chose the code.
    #[error("registry store: {message}")]
    Store { code: ErrorCode, message: String },
    /// A storage backend behind a trait of this crate ([`crate::online_store::OnlineStore`])
    /// failed or refused: its own error, with the code it chose (`INVALID_ARGUMENT` for a
    /// key of the wrong shape, `UNAVAILABLE` when it cannot be reached).
    #[error("{source}")]
    Backend {
        code: ErrorCode,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn format_problems(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Invalid(_) | Error::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            Error::NotFound { .. } | Error::VersionNotFound { .. } => ErrorCode::NotFound,
            Error::StaleRegistry { .. }
            | Error::Breaking(_)
            | Error::FingerprintMismatch { .. } => ErrorCode::FailedPrecondition,
            Error::Corrupt(_) => ErrorCode::Internal,
            Error::Store { code, .. } | Error::Backend { code, .. } => *code,
        }
    }

    /// A backend's error behind a storage trait, keeping its code and its source chain.
    pub fn backend(
        code: ErrorCode,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Backend {
            code,
            source: Box::new(source),
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
