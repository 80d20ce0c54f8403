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
//! Calls block (they run the store's futures on the current Tokio runtime from the blocking
//! pool). Listings are bounded like any other (`roots::MAX_ENTRIES` objects).

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;

use crate::data_file::{DataFile, RemoteFile};
use crate::error::{Error, Result};
use crate::files::{LogRange, log_range_of, order_log};
use crate::object::{ObjectStores, block_on, object_error};
use crate::roots::{RemoteRoot, list_objects};

/// The flag that names a push log's location, for messages.
const FLAG: &str = "--push-log-dir";

/// Where a merged file's batches go, one at a time.
pub(crate) type BatchSink<'a> = dyn FnMut(&RecordBatch) -> Result<()> + 'a;

/// A push log under a prefix in object storage.
#[derive(Debug, Clone)]
pub(crate) struct RemoteLog {
    root: RemoteRoot,
}

/// An object of the log, as listed.
#[derive(Debug, Clone)]
pub(crate) struct LogObject {
    pub(crate) file: RemoteFile,
    pub(crate) range: Option<LogRange>,
    pub(crate) modified: chrono::DateTime<chrono::Utc>,
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

    fn key(&self, relative: &str) -> Result<ObjectPath> {
        let key = match self.root.url.key.as_str() {
            "" => relative.to_string(),
            prefix => format!("{prefix}/{relative}"),
        };
        ObjectPath::parse(&key)
            .map_err(|e| Error::invalid(FLAG, format!("`{key}` is not a valid object key: {e}")))
    }

    /// Blocking: writes `batches` as the object `name` of the view directory `dir`, create
    /// only; returns the rows written.
    pub(crate) fn put(&self, dir: &str, name: &str, batches: &[RecordBatch]) -> Result<u64> {
        let Some(first) = batches.first() else {
            return Ok(0);
        };
        let mut writer = MemoryWriter::new(first.schema(), Vec::new())?;
        for batch in batches {
            writer.write(batch)?;
        }
        let (bytes, rows) = writer.finish()?;
        self.create(&format!("{dir}/{name}"), bytes)?;
        Ok(rows)
    }

    /// Blocking: creates the object at `relative` (under the prefix) with `bytes`; refused
    /// if it exists.
    fn create(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let location = self.key(relative)?;
        let url = format!("{}/{relative}", self.url());
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let put = self
            .root
            .store
            .put_opts(&location, PutPayload::from(bytes), options);
        block_on(put)?.map_err(|e| object_error(&url, &e))?;
        Ok(())
    }

    /// Blocking: the objects of the view directory `dir`, in the log's order, split into
    /// those no merged object covers and those one does.
    pub(crate) fn objects(&self, dir: &str) -> Result<(Vec<LogObject>, Vec<LogObject>)> {
        let listed = self.list(Some(dir))?;
        let named = listed
            .into_iter()
            .filter_map(|(relative, object)| {
                let name = relative.strip_prefix(dir)?.strip_prefix('/')?;
                // Only the directory's own objects: hidden and nested names are not the log's.
                let visible = !name.contains('/') && !name.starts_with(['.', '_']);
                (visible && name.ends_with(".parquet")).then(|| (name.to_string(), object))
            })
            .collect();
        Ok(order_log(named))
    }

    /// Blocking: the files to read for the view directory `dir`, in order.
    pub(crate) fn files(&self, dir: &str) -> Result<Vec<DataFile>> {
        let (visible, _) = self.objects(dir)?;
        Ok(visible
            .into_iter()
            .map(|object| DataFile::Remote(object.file))
            .collect())
    }

    /// Blocking: every view directory of the log (its first key segments).
    pub(crate) fn dirs(&self) -> Result<Vec<String>> {
        let mut dirs: Vec<String> = self
            .list(None)?
            .into_iter()
            .filter_map(|(relative, _)| Some(relative.split_once('/')?.0.to_string()))
            .collect();
        dirs.sort();
        dirs.dedup();
        Ok(dirs)
    }

    /// Blocking: the ranges of every object named like the log's, in every view directory.
    pub(crate) fn ranges(&self) -> Result<Vec<LogRange>> {
        Ok(self
            .list(None)?
            .into_iter()
            .filter_map(|(_, object)| object.range)
            .collect())
    }

    /// Blocking: deletes an object (a covered one, once no listing may still read it).
    pub(crate) fn delete(&self, file: &RemoteFile) -> Result<()> {
        block_on(file.store.delete(&file.location))?.map_err(|e| object_error(&file.url, &e))
    }

    /// Blocking: writes the merged object `name` of `dir` from `batches` of `schema`,
    /// create only; returns the rows.
    pub(crate) fn put_merged(
        &self,
        dir: &str,
        name: &str,
        schema: SchemaRef,
        metadata: Vec<(String, String)>,
        batches: &mut dyn FnMut(&mut BatchSink<'_>) -> Result<()>,
    ) -> Result<u64> {
        let mut writer = MemoryWriter::new(schema, metadata)?;
        batches(&mut |batch| writer.write(batch))?;
        let (bytes, rows) = writer.finish()?;
        self.create(&format!("{dir}/{name}"), bytes)?;
        Ok(rows)
    }

    /// Blocking: every object under the prefix (or under `dir` in it), as (key relative to
    /// the prefix, object), at most [`MAX_OBJECTS`].
    fn list(&self, dir: Option<&str>) -> Result<Vec<(String, LogObject)>> {
        let root_key = self.root.url.key.clone();
        let prefix = match (dir, root_key.as_str()) {
            (Some(dir), "") => dir.to_string(),
            (Some(dir), root) => format!("{root}/{dir}"),
            (None, root) => root.to_string(),
        };
        let base = self.root.url.bucket_url();
        let store: &Arc<dyn ObjectStore> = &self.root.store;
        let metas = list_objects(store, &base, &prefix, FLAG, &self.url())?;
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
                let name = relative.rsplit('/').next().unwrap_or_default();
                let object = LogObject {
                    range: log_range_of(name),
                    modified: meta.last_modified,
                    file: RemoteFile::new(store, format!("{base}/{key}"), meta),
                };
                (relative, object)
            })
            .collect())
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
