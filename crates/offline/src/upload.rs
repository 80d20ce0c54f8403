//! Exports written to object storage: the Parquet bytes go up as they are encoded, in parts
//! of [`PART_SIZE`] (a multipart upload), so an export never needs local disk or memory for
//! the whole file. The object appears only when the upload completes; a failed or dropped
//! export aborts the upload and leaves no object. An export smaller than one part is one
//! PUT, create-only unless `overwrite`. Runs on the blocking pool ([`block_on`]).

use std::io::Write;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use object_store::{MultipartUpload, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::object::{block_on, object_error};
use crate::roots::RemoteTarget;

/// Bytes per uploaded part (S3 needs at least 5 MiB for every part but the last).
const PART_SIZE: usize = 8 * 1024 * 1024;

/// A Parquet file being uploaded; aborted unless committed.
pub(crate) struct UploadWriter {
    writer: Option<ArrowWriter<UploadSink>>,
    rows: u64,
    url: String,
    /// Why the sink failed, if it did (the encoder sees only an I/O error).
    failure: Failure,
}

type Failure = Arc<Mutex<Option<Error>>>;

struct UploadSink {
    target: RemoteTarget,
    overwrite: bool,
    upload: Option<Box<dyn MultipartUpload>>,
    buffer: Vec<u8>,
    failure: Failure,
}

impl UploadWriter {
    pub(crate) fn create(
        target: RemoteTarget,
        overwrite: bool,
        schema: SchemaRef,
        properties: WriterProperties,
    ) -> Result<Self> {
        let url = target.url.clone();
        let failure = Failure::default();
        let sink = UploadSink {
            target,
            overwrite,
            upload: None,
            buffer: Vec::with_capacity(PART_SIZE),
            failure: Arc::clone(&failure),
        };
        sink.refuse_existing()?;
        let writer = ArrowWriter::try_new(sink, schema, Some(properties))
            .map_err(|e| Error::parquet(&url, e))?;
        Ok(UploadWriter {
            writer: Some(writer),
            rows: 0,
            url,
            failure,
        })
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(writer) = &mut self.writer {
            writer.write(batch).map_err(|e| self.failed(e))?;
            self.rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// Writes the footer with `quiver.rows` and completes the upload; returns the rows.
    pub(crate) fn commit(mut self) -> Result<u64> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(0);
        };
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            "quiver.rows".to_string(),
            self.rows.to_string(),
        ));
        let sink = writer.into_inner().map_err(|e| self.failed(e))?;
        sink.finish()?;
        Ok(self.rows)
    }

    /// A write error: the sink's own error if it failed, else the encoder's.
    fn failed(&self, error: parquet::errors::ParquetError) -> Error {
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        failure.unwrap_or_else(|| Error::parquet(&self.url, error))
    }
}

impl UploadSink {
    /// Unless overwriting: refuses when an object exists at the target.
    fn refuse_existing(&self) -> Result<()> {
        if self.overwrite {
            return Ok(());
        }
        let target = &self.target;
        match block_on(target.store.head(&target.location))? {
            Ok(_) => Err(Error::AlreadyExists {
                field: "output_path".into(),
                message: format!(
                    "`{}` exists; set `overwrite` to replace it (`quiver export --overwrite`)",
                    target.url
                ),
            }),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(object_error(&target.url, &e)),
        }
    }

    /// Uploads the buffer as the next part, starting the upload on the first.
    fn put_part(&mut self) -> Result<()> {
        let target = &self.target;
        if self.upload.is_none() {
            let upload = block_on(target.store.put_multipart(&target.location))?
                .map_err(|e| object_error(&target.url, &e))?;
            self.upload = Some(upload);
        }
        let part = PutPayload::from(std::mem::take(&mut self.buffer));
        if let Some(upload) = &mut self.upload {
            block_on(upload.put_part(part))?.map_err(|e| object_error(&target.url, &e))?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let target = self.target.clone();
        if self.upload.is_none() {
            let mode = if self.overwrite {
                PutMode::Overwrite
            } else {
                PutMode::Create
            };
            let payload = PutPayload::from(std::mem::take(&mut self.buffer));
            let options = PutOptions {
                mode,
                ..PutOptions::default()
            };
            block_on(target.store.put_opts(&target.location, payload, options))?
                .map_err(|e| object_error(&target.url, &e))?;
            return Ok(());
        }
        if !self.buffer.is_empty() {
            self.put_part()?;
        }
        // A multipart upload cannot be made create-only: look once more before completing.
        self.refuse_existing()?;
        // Kept until completed: if completing fails, dropping `self` aborts the upload.
        if let Some(upload) = &mut self.upload {
            block_on(upload.complete())?.map_err(|e| object_error(&target.url, &e))?;
        }
        self.upload = None;
        Ok(())
    }
}

impl Write for UploadSink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= PART_SIZE
            && let Err(error) = self.put_part()
        {
            let message = error.to_string();
            *self
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
            return Err(std::io::Error::other(message));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for UploadSink {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take() {
            // Best effort: parts of an abandoned upload are otherwise kept (and billed).
            if let Ok(Err(e)) = block_on(upload.abort()) {
                tracing::warn!(url = %self.target.url, error = %e, "aborting an export's upload failed");
            }
        }
    }
}
