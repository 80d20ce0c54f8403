//! Label tables uploaded with Flight DoPut, kept where every replica reads them
//! (`--upload-dir DIR|URL`: a directory every replica mounts, or `s3://`, `gs://`, `az://`),
//! so an export or a Flight ticket that names an upload works on any replica. One Parquet
//! file per upload, `<id>.parquet`, `id` naming the caller and the upload (the server
//! hashes them); a new upload of the same name replaces it. An upload is served for its
//! time to live after it was stored, then swept. Calls block.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::error::{Error, Result};
use crate::object::{ObjectStores, block_on, is_url, object_error};
use crate::remote_log::MemoryWriter;
use crate::roots::{RemoteRoot, list_objects};

/// The flag that names the location, for messages.
const FLAG: &str = "--upload-dir";

/// Where shared uploads live.
#[derive(Debug, Clone)]
pub struct SharedUploads {
    location: Location,
}

#[derive(Debug, Clone)]
enum Location {
    Local(PathBuf),
    Remote(RemoteRoot),
}

impl SharedUploads {
    /// Uploads at `location` (a directory, created if missing, or an object-storage URL with
    /// `stores`' options).
    pub fn open(location: &str, stores: &ObjectStores) -> Result<SharedUploads> {
        let location = if is_url(location) {
            Location::Remote(RemoteRoot::open(FLAG, location, stores)?)
        } else {
            let dir = PathBuf::from(location);
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
            Location::Local(dir)
        };
        Ok(SharedUploads { location })
    }

    /// Blocking: stores `batches` (at least one) as the upload `id`, replacing any.
    pub fn put(&self, id: &str, batches: &[RecordBatch]) -> Result<()> {
        let Some(first) = batches.first() else {
            return Ok(());
        };
        match &self.location {
            Location::Local(dir) => {
                let path = dir.join(file_name(id));
                crate::parquet_writer::write_file_durably(&path, batches, Vec::new())?;
            }
            Location::Remote(root) => {
                let mut writer = MemoryWriter::new(first.schema(), Vec::new())?;
                for batch in batches {
                    writer.write(batch)?;
                }
                let (bytes, _) = writer.finish()?;
                let (location, url) = object(root, id)?;
                let put = root.store.put(&location, PutPayload::from(bytes));
                block_on(put)?.map_err(|e| object_error(&url, &e))?;
            }
        }
        Ok(())
    }

    /// Blocking: the version of the upload `id` as stored (its ETag, else its modification
    /// time): a copy a replica holds is current while this is unchanged. `None` if there is
    /// none.
    pub fn version(&self, id: &str) -> Result<Option<String>> {
        match &self.location {
            Location::Local(dir) => {
                let path = dir.join(file_name(id));
                match std::fs::metadata(&path).and_then(|m| m.modified()) {
                    Ok(stored) => Ok(Some(format!("{stored:?}"))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(Error::io(&path, e)),
                }
            }
            Location::Remote(root) => {
                let (location, url) = object(root, id)?;
                match block_on(root.store.head(&location))? {
                    Ok(meta) => Ok(Some(object_version(&meta))),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(object_error(&url, &e)),
                }
            }
        }
    }

    /// Blocking: the upload `id` and its [`SharedUploads::version`], unless there is none or
    /// it was stored more than `ttl` ago.
    pub fn get(&self, id: &str, ttl: Duration) -> Result<Option<(Vec<RecordBatch>, String)>> {
        let fresh = |stored: SystemTime| stored.elapsed().map_or(true, |age| age <= ttl);
        match &self.location {
            Location::Local(dir) => {
                let path = dir.join(file_name(id));
                let file = match std::fs::File::open(&path) {
                    Ok(file) => file,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(Error::io(&path, e)),
                };
                let stored = file
                    .metadata()
                    .and_then(|m| m.modified())
                    .map_err(|e| Error::io(&path, e))?;
                if !fresh(stored) {
                    return Ok(None);
                }
                Ok(Some((read_all(file, &path)?, format!("{stored:?}"))))
            }
            Location::Remote(root) => {
                let (location, url) = object(root, id)?;
                let got = block_on(async {
                    let got = root.store.get(&location).await?;
                    let meta = got.meta.clone();
                    Ok::<_, object_store::Error>((meta, got.bytes().await?))
                })?;
                let (meta, bytes) = match got {
                    Ok(got) => got,
                    Err(object_store::Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(object_error(&url, &e)),
                };
                if !fresh(meta.last_modified.into()) {
                    return Ok(None);
                }
                let version = object_version(&meta);
                Ok(Some((read_all(bytes, &PathBuf::from(url))?, version)))
            }
        }
    }

    /// Blocking: deletes the uploads stored more than `ttl` ago; returns how many.
    pub fn sweep(&self, ttl: Duration) -> Result<usize> {
        let old = |stored: SystemTime| stored.elapsed().is_ok_and(|age| age > ttl);
        let mut removed = 0;
        match &self.location {
            Location::Local(dir) => {
                for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
                    let path = entry.map_err(|e| Error::io(dir, e))?.path();
                    let is_upload = path.extension().is_some_and(|e| e == "parquet");
                    let stored = std::fs::metadata(&path).and_then(|m| m.modified());
                    if is_upload && stored.is_ok_and(old) {
                        match std::fs::remove_file(&path) {
                            Ok(()) => removed += 1,
                            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                            Err(e) => return Err(Error::io(&path, e)),
                        }
                    }
                }
            }
            Location::Remote(root) => {
                let base = root.url.bucket_url();
                let listed = list_objects(
                    &root.store,
                    &base,
                    &root.url.key,
                    FLAG,
                    &root.url.to_string(),
                )?;
                for meta in listed {
                    let stored: SystemTime = meta.last_modified.into();
                    if meta.location.as_ref().ends_with(".parquet") && old(stored) {
                        let url = format!("{base}/{}", meta.location);
                        match block_on(root.store.delete(&meta.location))? {
                            Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                            Err(e) => return Err(object_error(&url, &e)),
                        }
                    }
                }
            }
        }
        Ok(removed)
    }
}

/// An object's ETag, else its modification time (S3 times are whole seconds: two uploads in
/// one second differ by ETag).
fn object_version(meta: &object_store::ObjectMeta) -> String {
    meta.e_tag
        .clone()
        .unwrap_or_else(|| meta.last_modified.to_rfc3339())
}

fn file_name(id: &str) -> String {
    format!("{id}.parquet")
}

/// The object of upload `id` under the root, and its URL for messages.
fn object(root: &RemoteRoot, id: &str) -> Result<(ObjectPath, String)> {
    let key = match root.url.key.as_str() {
        "" => file_name(id),
        prefix => format!("{prefix}/{}", file_name(id)),
    };
    let url = format!("{}/{key}", root.url.bucket_url());
    let location = ObjectPath::parse(&key)
        .map_err(|e| Error::invalid(FLAG, format!("`{key}` is not a valid object key: {e}")))?;
    Ok((location, url))
}

/// Every batch of a Parquet file.
fn read_all<R: parquet::file::reader::ChunkReader + 'static>(
    input: R,
    path: &std::path::Path,
) -> Result<Vec<RecordBatch>> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(input)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| Error::parquet(path, e))?;
    reader.map(|batch| Ok(batch?)).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn uploads_in_a_directory_round_trip_expire_and_are_swept() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io(std::path::Path::new("tmp"), e))?;
        let location = dir.path().join("uploads");
        let uploads = SharedUploads::open(
            location.to_str().unwrap_or_default(),
            &ObjectStores::new(Vec::new()),
        )?;
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![1, 2, 3]))])?;
        uploads.put("caller-labels", std::slice::from_ref(&batch))?;
        let hour = Duration::from_secs(3600);
        let tables = |got: Option<(Vec<RecordBatch>, String)>| got.map(|(t, _)| t);
        let got = uploads.get("caller-labels", hour)?;
        assert_eq!(tables(got), Some(vec![batch.clone()]));
        assert_eq!(uploads.get("other", hour)?, None);
        assert_eq!(uploads.version("other")?, None);
        let first = uploads.version("caller-labels")?;
        // Replaced by a new upload of the same name: a new version.
        std::thread::sleep(Duration::from_millis(20));
        let smaller = batch.slice(0, 1);
        uploads.put("caller-labels", std::slice::from_ref(&smaller))?;
        let got = uploads.get("caller-labels", hour)?;
        assert_eq!(tables(got), Some(vec![smaller]));
        assert_ne!(uploads.version("caller-labels")?, first);
        // Past its time to live: not served, then swept.
        std::thread::sleep(Duration::from_millis(20));
        let expired = uploads.get("caller-labels", Duration::from_millis(1))?;
        assert_eq!(tables(expired), None);
        assert_eq!(uploads.sweep(hour)?, 0);
        assert_eq!(uploads.sweep(Duration::from_millis(1))?, 1);
        assert_eq!(tables(uploads.get("caller-labels", hour)?), None);
        Ok(())
    }
}
