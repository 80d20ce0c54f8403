//! Object storage (S3 and S3-compatible servers, Google Cloud Storage, Azure Blob) for view
//! sources, label tables and exports, through the `object_store` crate that DataFusion uses.
//!
//! A location is a URL `s3://bucket/key`, `gs://bucket/key` or `az://container/key`.
//! Credentials and endpoints come from the server's environment (`AWS_*`, `GOOGLE_*`,
//! `AZURE_*`, as each builder's `from_env` reads them) and from operator options
//! ([`ObjectStores::new`]), never from a manifest or a request. Every client is bounded:
//! connect and request timeouts and a few retries (options may change them).
//!
//! Remote reads happen where local reads do, on the blocking pool: [`block_on`] waits there
//! for the object store's futures on the current Tokio runtime.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::error::{Error, ObjectErrorKind, Result};

/// Connect timeout of every client, unless an option sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Timeout of one request, unless an option sets `timeout`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Retries of a failed request, and the time they may take in all.
const MAX_RETRIES: usize = 3;
const RETRY_TIMEOUT: Duration = Duration::from_secs(30);

/// An object location: scheme, bucket (or container) and key, the key without a leading or
/// trailing `/` (empty for a whole bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectUrl {
    pub(crate) scheme: Scheme,
    pub(crate) bucket: String,
    pub(crate) key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scheme {
    S3,
    Gcs,
    Azure,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Azure => "az",
        }
    }
}

impl std::fmt::Display for ObjectUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.bucket)?;
        if !self.key.is_empty() {
            write!(f, "/{}", self.key)?;
        }
        Ok(())
    }
}

/// Whether `location` is a URL (`scheme://...`) rather than a file path.
pub(crate) fn is_url(location: &str) -> bool {
    location.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

impl ObjectUrl {
    /// Parses `location` (a URL, see [`is_url`]); `field` names it in errors.
    pub(crate) fn parse(field: &str, location: &str) -> Result<ObjectUrl> {
        let (scheme, rest) = location.split_once("://").unwrap_or(("", location));
        let scheme = match scheme {
            "s3" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "az" => Scheme::Azure,
            other => {
                return Err(Error::invalid(
                    field,
                    format!(
                        "`{location}`: the scheme `{other}://` is not supported; use a path, or s3://, gs:// or az://"
                    ),
                ));
            }
        };
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::invalid(
                field,
                format!(
                    "`{location}` names no bucket; write {}://BUCKET/KEY",
                    scheme.as_str()
                ),
            ));
        }
        let key = key.trim_end_matches('/');
        if !key.is_empty()
            && key
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(Error::invalid(
                field,
                format!(
                    "`{location}` has an empty, `.` or `..` path segment; name the key without it"
                ),
            ));
        }
        Ok(ObjectUrl {
            scheme,
            bucket: bucket.to_string(),
            key: key.to_string(),
        })
    }

    /// Whether `self` is `root` or lies under it (whole path segments).
    pub(crate) fn is_under(&self, root: &ObjectUrl) -> bool {
        self.scheme == root.scheme
            && self.bucket == root.bucket
            && (root.key.is_empty()
                || self.key == root.key
                || self
                    .key
                    .strip_prefix(&root.key)
                    .is_some_and(|rest| rest.starts_with('/')))
    }

    /// The URL of the bucket alone (`s3://bucket`), which DataFusion registers stores under.
    pub(crate) fn bucket_url(&self) -> String {
        format!("{}://{}", self.scheme.as_str(), self.bucket)
    }
}

/// The object store clients of a server: one per bucket, built on first use from the
/// environment and the operator's options.
#[derive(Debug, Default)]
pub struct ObjectStores {
    options: Vec<(String, String)>,
    clients: Mutex<HashMap<(Scheme, String), Arc<dyn ObjectStore>>>,
}

impl ObjectStores {
    /// Clients configured from the environment, then `options` (`key=value` pairs of the
    /// `object_store` builders: `aws_endpoint`, `aws_region`, `aws_allow_http`,
    /// `google_service_account`, `azure_storage_account_name`, `timeout`, ...). An option a
    /// builder does not know is ignored by the others and refused by none: each scheme takes
    /// the keys it knows.
    pub fn new(options: Vec<(String, String)>) -> Self {
        ObjectStores {
            options,
            clients: Mutex::default(),
        }
    }

    /// The client for `url`'s bucket.
    pub(crate) fn client(&self, url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>> {
        let key = (url.scheme, url.bucket.clone());
        let mut clients = self
            .clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&key) {
            return Ok(Arc::clone(client));
        }
        let client = self.build(url)?;
        clients.insert(key, Arc::clone(&client));
        Ok(client)
    }

    fn build(&self, url: &ObjectUrl) -> Result<Arc<dyn ObjectStore>> {
        let bucket_url = url.bucket_url();
        let client = ClientOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_TIMEOUT,
        };
        // The three builders share no trait: the same steps, spelled once.
        macro_rules! build {
            ($builder:expr) => {
                self.options
                    .iter()
                    .fold(
                        $builder
                            .with_url(&bucket_url)
                            .with_client_options(client)
                            .with_retry(retry),
                        |builder, (key, value)| match key.parse() {
                            Ok(key) => builder.with_config(key, value),
                            Err(_) => builder,
                        },
                    )
                    .build()
                    .map(|store| Arc::new(store) as Arc<dyn ObjectStore>)
            };
        }
        let built = match url.scheme {
            Scheme::S3 => build!(AmazonS3Builder::from_env()),
            Scheme::Gcs => build!(GoogleCloudStorageBuilder::from_env()),
            Scheme::Azure => build!(MicrosoftAzureBuilder::from_env()),
        };
        built.map_err(|e| object_error(&bucket_url, &e))
    }
}

/// Runs `future` to completion from a thread of the blocking pool (or any thread outside
/// the runtime's workers), on the current Tokio runtime.
pub(crate) fn block_on<F: Future>(future: F) -> Result<F::Output> {
    let handle = tokio::runtime::Handle::try_current().map_err(|e| Error::ObjectStore {
        url: String::new(),
        kind: ObjectErrorKind::Other,
        message: format!("object storage needs a Tokio runtime: {e}"),
    })?;
    Ok(handle.block_on(future))
}

/// `error` from the object store at `url`, classified, with what to do about it.
pub(crate) fn object_error(url: &str, error: &object_store::Error) -> Error {
    use object_store::Error as E;
    let text = first_line(error);
    // `object_store::Error` is a foreign, non-exhaustive enum: the catch-all is needed here,
    // and what it yields is our own exhaustive kind. A listing's HTTP errors come as
    // `Generic`: its status and the store's error code tell the kind.
    let kind = match error {
        E::NotFound { .. } => ObjectErrorKind::Missing,
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => ObjectErrorKind::Denied,
        E::InvalidPath { .. } => ObjectErrorKind::InvalidPath,
        E::AlreadyExists { .. } | E::Precondition { .. } => ObjectErrorKind::Exists,
        E::Generic { .. } if text.contains("404 Not Found") => ObjectErrorKind::Missing,
        E::Generic { .. } if text.contains("400 Bad Request") => ObjectErrorKind::InvalidPath,
        E::Generic { .. }
            if text.contains("403 Forbidden") || text.contains("401 Unauthorized") =>
        {
            ObjectErrorKind::Denied
        }
        E::Generic { .. } => ObjectErrorKind::Unavailable,
        _ => ObjectErrorKind::Other,
    };
    let hint = match kind {
        ObjectErrorKind::Missing if text.contains("NoSuchBucket") => {
            "not found: the bucket does not exist; check the bucket name"
        }
        ObjectErrorKind::Missing => "not found: check the bucket and the key",
        ObjectErrorKind::Denied => {
            "access refused: check the server's credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY, or --object-store-option) and the bucket's permissions"
        }
        ObjectErrorKind::InvalidPath => "the store refused the request (not a valid object key?)",
        ObjectErrorKind::Exists => "an object exists there already",
        ObjectErrorKind::Unavailable => "the object store failed or could not be reached",
        ObjectErrorKind::Other => "object store error",
    };
    Error::ObjectStore {
        url: url.to_string(),
        kind,
        message: format!("{hint} ({})", store_said(&text)),
    }
}

/// What the store said: the code and message of an S3-style XML error body when there is
/// one, else the error text, at most 300 characters.
fn store_said(text: &str) -> String {
    let tag = |name: &str| {
        let start = text.find(&format!("<{name}>"))? + name.len() + 2;
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(&text[start..end])
    };
    if let (Some(code), Some(message)) = (tag("Code"), tag("Message")) {
        return format!("{code}: {message}");
    }
    text.chars().take(300).collect()
}

/// The error and its sources, without multi-line response bodies.
fn first_line(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text.lines().map(str::trim).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_nest_by_whole_segments() {
        assert!(is_url("s3://b/k") && is_url("http://x") && !is_url("data/x.parquet"));
        assert!(!is_url("/abs/path") && !is_url("c:/x"));
        let root = ObjectUrl::parse("f", "s3://bucket/data/").expect("root");
        assert_eq!(root.key, "data");
        assert_eq!(root.to_string(), "s3://bucket/data");
        let inside = ObjectUrl::parse("f", "s3://bucket/data/x/*.parquet").expect("in");
        assert!(inside.is_under(&root));
        assert!(root.is_under(&root));
        for outside in [
            "s3://bucket/database/x",
            "s3://other/data/x",
            "gs://bucket/data/x",
        ] {
            let url = ObjectUrl::parse("f", outside).expect("parse");
            assert!(!url.is_under(&root), "{outside}");
        }
        let whole = ObjectUrl::parse("f", "s3://bucket").expect("bucket");
        assert!(inside.is_under(&whole) && whole.key.is_empty());
        for bad in [
            "s3://",
            "s3:///k",
            "s3://b/a/../c",
            "s3://b/a//c",
            "http://h/k",
            "ftp://h",
        ] {
            let error = ObjectUrl::parse("source", bad).expect_err(bad);
            assert!(error.to_string().contains("source"), "{error}");
        }
    }

    #[test]
    fn store_errors_are_classified_with_what_the_store_said() {
        let generic = |text: &str| object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        };
        let body = "Server returned non-2xx status code: 404 Not Found: <?xml version=\"1.0\"?> <Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist</Message></Error>";
        let Error::ObjectStore { url, kind, message } = object_error("s3://b/k", &generic(body))
        else {
            panic!("not an object store error");
        };
        assert_eq!((url.as_str(), kind), ("s3://b/k", ObjectErrorKind::Missing));
        assert!(
            message.starts_with("not found: the bucket does not exist"),
            "{message}"
        );
        assert!(
            message.ends_with("(NoSuchBucket: The specified bucket does not exist)"),
            "{message}"
        );
        let denied = object_error(
            "s3://b",
            &generic(
                "status code: 403 Forbidden: <Error><Code>InvalidAccessKeyId</Code><Message>unknown</Message></Error>",
            ),
        );
        assert_eq!(denied.code(), quiver_core::ErrorCode::FailedPrecondition);
        assert!(
            denied.to_string().contains("InvalidAccessKeyId: unknown"),
            "{denied}"
        );
        let down = object_error(
            "s3://b",
            &generic("error sending request: connection refused"),
        );
        assert_eq!(down.code(), quiver_core::ErrorCode::Unavailable);
        assert!(down.to_string().contains("connection refused"), "{down}");
    }
}
