//! Roots in object storage (`s3://bucket/prefix`): the same confinement as directories. A
//! request URL must lie under a configured root URL (same scheme and bucket, key under the
//! root's key by whole segments); a relative request path lies under the first root when no
//! directory is configured. Listings are bounded like directory walks.

use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};

use super::{MAX_ENTRIES, OutputFile, Roots};
use crate::data_file::{DataFile, RemoteFile};
use crate::error::{Error, Result};
use crate::object::{ObjectStores, ObjectUrl, block_on, is_url, object_error};

/// A configured root in object storage and the client for its bucket.
#[derive(Debug, Clone)]
pub(crate) struct RemoteRoot {
    pub(crate) url: ObjectUrl,
    pub(crate) store: Arc<dyn ObjectStore>,
}

/// Where an export to object storage goes.
#[derive(Debug, Clone)]
pub(crate) struct RemoteTarget {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) url: String,
    pub(crate) location: ObjectPath,
}

impl PartialEq for RemoteTarget {
    fn eq(&self, other: &Self) -> bool {
        self.url == other.url
    }
}

impl Eq for RemoteTarget {}

impl RemoteRoot {
    /// The root at `location` (a URL); its client is built now, the store is not contacted.
    pub(crate) fn open(flag: &str, location: &str, stores: &ObjectStores) -> Result<RemoteRoot> {
        let url = ObjectUrl::parse(flag, location)?;
        if has_glob(&url.key) {
            return Err(Error::invalid(
                flag,
                format!("`{location}` holds a glob character; a root is a bucket or a prefix"),
            ));
        }
        let store = stores.client(&url)?;
        Ok(RemoteRoot { url, store })
    }
}

fn has_glob(key: &str) -> bool {
    key.contains(['*', '?', '['])
}

impl Roots {
    /// The remote root `request` lies under and its URL; a relative request is taken under
    /// the first remote root.
    fn remote_root(&self, field: &str, request: &str) -> Result<(&RemoteRoot, ObjectUrl)> {
        if is_url(request) {
            let url = ObjectUrl::parse(field, request)?;
            let root = self
                .remote
                .iter()
                .find(|root| url.is_under(&root.url))
                .ok_or_else(|| self.outside(field, request))?;
            return Ok((root, url));
        }
        let root = self
            .remote
            .first()
            .ok_or_else(|| self.outside(field, request))?;
        let joined = format!("{}/{}", root.url, request.trim_start_matches('/'));
        Ok((root, ObjectUrl::parse(field, &joined)?))
    }

    /// Whether `request` names an object rather than a local file.
    pub(crate) fn is_remote(&self, request: &str) -> bool {
        is_url(request) || (self.dirs.is_empty() && !self.remote.is_empty())
    }

    /// Blocking: the Parquet objects `request` names: an object, a prefix (its `*.parquet`
    /// objects at any depth, hidden and `_` names skipped) or a glob, sorted by URL.
    pub(crate) fn remote_files(&self, field: &str, request: &str) -> Result<Vec<DataFile>> {
        let (root, url) = self.remote_root(field, request)?;
        let store = &root.store;
        let base = url.bucket_url();
        let mut files: Vec<RemoteFile> = Vec::new();
        if has_glob(&url.key) {
            let segments: Vec<&str> = url.key.split('/').collect();
            let literal = segments.iter().take_while(|s| !has_glob(s)).count();
            let prefix = segments[..literal].join("/");
            let pattern = glob::Pattern::new(&segments[literal..].join("/")).map_err(|e| {
                Error::invalid(
                    field,
                    format!("`{request}` is not a valid glob pattern: {e}"),
                )
            })?;
            let options = glob::MatchOptions {
                require_literal_separator: true,
                ..glob::MatchOptions::new()
            };
            for meta in list(store, &base, &prefix, field, request)? {
                let relative = relative_to(&meta.location, &prefix);
                if pattern.matches_with(&relative, options) {
                    let url = format!("{base}/{}", meta.location);
                    files.push(RemoteFile::new(store, url, meta));
                }
            }
        } else {
            if !url.key.is_empty() {
                let location = object_path(field, request, &url.key)?;
                match block_on(store.head(&location))? {
                    // A zero-byte object not named `.parquet` is a directory marker.
                    Ok(meta) if meta.size > 0 || url.key.ends_with(".parquet") => {
                        return Ok(vec![DataFile::Remote(RemoteFile::new(
                            store,
                            url.to_string(),
                            meta,
                        ))]);
                    }
                    Ok(_) => {}
                    Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(object_error(&url.to_string(), &e)),
                }
            }
            for meta in list(store, &base, &url.key, field, request)? {
                let relative = relative_to(&meta.location, &url.key);
                let visible = relative.split('/').all(|s| !s.starts_with(['.', '_']));
                if visible && relative.ends_with(".parquet") {
                    let url = format!("{base}/{}", meta.location);
                    files.push(RemoteFile::new(store, url, meta));
                }
            }
        }
        files.sort_by(|a, b| a.url.cmp(&b.url));
        Ok(files.into_iter().map(DataFile::Remote).collect())
    }

    /// The object an export writes for `request`. Nothing is contacted: whether an object
    /// exists there is checked when the export writes it.
    pub(crate) fn remote_output(
        &self,
        field: &str,
        request: &str,
        overwrite: bool,
    ) -> Result<OutputFile> {
        let (root, url) = self.remote_root(field, request)?;
        if request.ends_with('/') || url.key == root.url.key || has_glob(&url.key) {
            return Err(Error::invalid(
                field,
                format!(
                    "`{request}` names no object; name a Parquet file under {}",
                    root.url
                ),
            ));
        }
        Ok(OutputFile {
            path: std::path::PathBuf::from(url.to_string()),
            overwrite,
            remote: Some(RemoteTarget {
                store: Arc::clone(&root.store),
                url: url.to_string(),
                location: object_path(field, request, &url.key)?,
            }),
        })
    }
}

/// `key` as the store's path, exactly as written (no percent-encoding: the store sees the
/// key the user named).
fn object_path(field: &str, request: &str, key: &str) -> Result<ObjectPath> {
    ObjectPath::parse(key)
        .map_err(|e| Error::invalid(field, format!("`{request}` is not a valid object key: {e}")))
}

/// `location` relative to `prefix` (a key prefix without a trailing `/`).
fn relative_to(location: &ObjectPath, prefix: &str) -> String {
    let location = location.as_ref();
    if prefix.is_empty() {
        return location.to_string();
    }
    location
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('/'))
        .unwrap_or(location)
        .to_string()
}

/// Blocking: every object under `prefix`, at most [`MAX_ENTRIES`].
pub(crate) fn list(
    store: &Arc<dyn ObjectStore>,
    base: &str,
    prefix: &str,
    field: &str,
    request: &str,
) -> Result<Vec<object_store::ObjectMeta>> {
    block_on(list_async(store, base, prefix, field, request))?
}

/// [`list`], awaited.
pub(crate) async fn list_async(
    store: &Arc<dyn ObjectStore>,
    base: &str,
    prefix: &str,
    field: &str,
    request: &str,
) -> Result<Vec<object_store::ObjectMeta>> {
    let prefix = match prefix {
        "" => None,
        prefix => Some(object_path(field, request, prefix)?),
    };
    let shown = match &prefix {
        Some(p) => format!("{base}/{p}"),
        None => base.to_string(),
    };
    let mut stream = store.list(prefix.as_ref());
    let mut found = Vec::new();
    while let Some(meta) = stream.next().await {
        found.push(meta.map_err(|e| object_error(&shown, &e))?);
        if found.len() > MAX_ENTRIES {
            return Err(Error::invalid(
                field,
                format!(
                    "`{request}` spans more than {MAX_ENTRIES} objects; name a smaller prefix or a narrower glob"
                ),
            ));
        }
    }
    Ok(found)
}
