//! A push log in object storage (`--push-log-dir s3://BUCKET/PREFIX`, or `gs://`, `az://`),
//! shared by replicas without a shared file system. Objects are named as a shared local
//! log's files (`<prefix>/<view>[@<g>]/<micros>-<seq>+<replica>.parquet`, `files.rs`) and
//! listed in the same order, so reads, ties and compaction behave as they do on disk:
//!
//! - An append is one create-only PUT of the whole Parquet file (`PutMode::Create`): the
//!   object appears whole or not at all, and is durable once the store acknowledges it.
//!   Nothing is left behind by a failed append.
//! - A replica merges runs of its own objects into `<first>~<last>+<replica>.parquet` (read
//!   one object at a time, the merged file encoded in memory, then one create-only PUT), and
//!   deletes the covered objects only once the merged one is
//!   [`SHARED_DELETE_GRACE`](crate::compaction) old: a listing taken before the merge may
//!   still read them.
//!
//! Its [`OfflineLog`] calls are the object store client's own requests, awaited.
//! Listings are bounded like any other (`roots::MAX_ENTRIES` objects).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use quiver_core::offline_log::{LogFile, OfflineLog};

use crate::data_file::{DataFile, RemoteFile};
use crate::error::{Error, Result};
use crate::files::LogBackend;
use crate::object::{ObjectStores, object_error};
use crate::roots::RemoteRoot;

/// The flag that names a push log's location, for messages.
const FLAG: &str = "--push-log-dir";

/// A push log under a prefix in object storage.
#[derive(Debug, Clone)]
pub(crate) struct RemoteLog {
    root: RemoteRoot,
}

impl RemoteLog {
    /// The log at `location` (`s3://bucket/prefix`, ...); the store is not contacted.
    pub(crate) fn open(location: &str, stores: &ObjectStores) -> Result<RemoteLog> {
        Ok(RemoteLog {
            root: RemoteRoot::open(FLAG, location, stores)?,
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub(crate) fn url(&self) -> String {
        self.root.url.to_string()
    }

    /// The key under the prefix of `relative`.
    fn relative_key(&self, relative: &str) -> String {
        match self.root.url.key.as_str() {
            "" => relative.to_string(),
            prefix => format!("{prefix}/{relative}"),
        }
    }

    fn key(&self, relative: &str) -> Result<ObjectPath> {
        let key = self.relative_key(relative);
        ObjectPath::parse(&key)
            .map_err(|e| Error::invalid(FLAG, format!("`{key}` is not a valid object key: {e}")))
    }

    /// Every object under the prefix (or under `dir` in it), as (key relative to the
    /// prefix, object), at most `roots::MAX_ENTRIES`.
    async fn objects(&self, dir: Option<&str>) -> Result<Vec<(String, object_store::ObjectMeta)>> {
        let root_key = self.root.url.key.clone();
        let prefix = match dir {
            Some(dir) => self.relative_key(dir),
            None => root_key.clone(),
        };
        let base = self.root.url.bucket_url();
        let store: &Arc<dyn ObjectStore> = &self.root.store;
        let metas =
            crate::roots::list_objects_async(store, &base, &prefix, FLAG, &self.url()).await?;
        Ok(metas
            .into_iter()
            .map(|meta| {
                let key = meta.location.to_string();
                let relative = match root_key.as_str() {
                    "" => key.clone(),
                    prefix => key
                        .strip_prefix(prefix)
                        .and_then(|k| k.strip_prefix('/'))
                        .unwrap_or(&key)
                        .to_string(),
                };
                (relative, meta)
            })
            .collect())
    }
}

#[async_trait::async_trait]
impl OfflineLog for RemoteLog {
    async fn dirs(&self) -> quiver_core::Result<Vec<String>> {
        let mut dirs: Vec<String> = self
            .objects(None)
            .await?
            .into_iter()
            .filter_map(|(relative, _)| Some(relative.split_once('/')?.0.to_string()))
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }

    async fn list(&self, dir: &str) -> quiver_core::Result<Vec<LogFile>> {
        let objects = self.objects(Some(dir)).await?;
        Ok(objects
            .into_iter()
            .filter_map(|(relative, meta)| {
                let name = relative.strip_prefix(dir)?.strip_prefix('/')?;
                // Only the directory's own objects: hidden and nested names are not the log's.
                let visible = !name.contains('/') && !name.starts_with(['.', '_']);
                (visible && name.ends_with(".parquet")).then(|| LogFile {
                    name: name.to_string(),
                    bytes: meta.size,
                    modified: meta.last_modified.timestamp_micros(),
                    version: meta
                        .e_tag
                        .clone()
                        .unwrap_or_else(|| meta.last_modified.to_rfc3339()),
                })
            })
            .collect())
    }

    /// One create-only PUT of the whole file.
    async fn append(&self, dir: &str, name: &str, file: Vec<u8>) -> quiver_core::Result<()> {
        let relative = format!("{dir}/{name}");
        let location = self.key(&relative)?;
        let url = format!("{}/{relative}", self.url());
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        self.root
            .store
            .put_opts(&location, PutPayload::from(file), options)
            .await
            .map_err(|e| object_error(&url, &e))?;
        Ok(())
    }

    async fn remove(&self, dir: &str, name: &str) -> quiver_core::Result<()> {
        let relative = format!("{dir}/{name}");
        let location = self.key(&relative)?;
        match self.root.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(&format!("{}/{relative}", self.url()), &e).into()),
        }
    }

    fn location(&self) -> String {
        self.url()
    }
}

impl LogBackend for RemoteLog {
    fn data_file(&self, dir: &str, file: &LogFile) -> DataFile {
        let key = self.relative_key(&format!("{dir}/{}", file.name));
        // The key as listed, not re-encoded (`Path::from` would escape `~` and `+`); a key
        // that does not parse reads as missing.
        let location = ObjectPath::parse(&key).unwrap_or_else(|_| ObjectPath::from(key.as_str()));
        DataFile::Remote(RemoteFile {
            store: Arc::clone(&self.root.store),
            url: format!("{}/{key}", self.root.url.bucket_url()),
            location,
            size: file.bytes,
            version: file.version.clone(),
        })
    }
}

/// A Parquet file encoded in memory (zstd, as the local log's files), `quiver.rows` added
/// at the end like `parquet_writer::DurableWriter`.
pub(crate) struct MemoryWriter {
    writer: ArrowWriter<Vec<u8>>,
    rows: u64,
}

impl MemoryWriter {
    pub(crate) fn new(schema: SchemaRef, metadata: Vec<(String, String)>) -> Result<Self> {
        let properties = crate::parquet_writer::properties(metadata, crate::parquet_writer::zstd);
        let writer = ArrowWriter::try_new(Vec::new(), schema, Some(properties))
            .map_err(|e| Error::parquet(std::path::Path::new(FLAG), e))?;
        Ok(MemoryWriter { writer, rows: 0 })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer
            .write(batch)
            .map_err(|e| Error::parquet(std::path::Path::new(FLAG), e))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> Result<(Vec<u8>, u64)> {
        self.writer
            .append_key_value_metadata(parquet::file::metadata::KeyValue::new(
                "quiver.rows".to_string(),
                self.rows.to_string(),
            ));
        let bytes = self
            .writer
            .into_inner()
            .map_err(|e| Error::parquet(std::path::Path::new(FLAG), e))?;
        Ok((bytes, self.rows))
    }
}
