//! The durable Parquet writer of files streamed to disk, used for training exports
//! ([`write_parquet`], by the server's export and by the CLI's Flight export) and for label
//! tables uploaded to a shared directory (`write_file_durably`): a temporary name in the target directory, zstd, key-value
//! metadata (plus `quiver.rows`, appended at close), fsync, rename, directory fsync. A failed
//! write, or a failed input stream, leaves no file behind, not even the temporary one.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::{Stream, StreamExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{WriterProperties, WriterPropertiesBuilder};

use crate::error::{Error, Result};
use crate::roots::{OutputFile, RemoteTarget};
use crate::upload::UploadWriter;

/// Writes every batch of `batches` (all of `schema`) to a zstd Parquet file at `path` with
/// `metadata`, then `quiver.rows`, as the file's key-value metadata, replacing `path`
/// atomically once the file is durable. Returns the number of rows written. With no batch,
/// the file holds the schema and no rows.
///
/// The first error of `batches` stops the write and is returned (converted into [`Error`];
/// a caller with a foreign error type can map it with [`Error::input_stream`]); `path` is
/// then left as it was and the temporary file is removed before this returns.
pub async fn write_parquet<S, E>(
    schema: SchemaRef,
    batches: S,
    path: &Path,
    metadata: Vec<(String, String)>,
) -> Result<u64>
where
    S: Stream<Item = Result<RecordBatch, E>>,
    E: Into<Error>,
{
    let target = Target::File {
        path: path.to_path_buf(),
        replace: true,
    };
    write_stream(schema, batches, target, metadata).await
}

/// [`write_parquet`] to an export's [`OutputFile`]: unless it says `overwrite`, the file is
/// committed only if nothing exists at its path by then (a hard link, which never replaces),
/// else [`Error::AlreadyExists`] and no file is left behind. An export to object storage is
/// uploaded as it is encoded (see `upload.rs`).
pub async fn write_export<S, E>(
    schema: SchemaRef,
    batches: S,
    output: &OutputFile,
    metadata: Vec<(String, String)>,
) -> Result<u64>
where
    S: Stream<Item = Result<RecordBatch, E>>,
    E: Into<Error>,
{
    let target = match &output.remote {
        Some(remote) => Target::Object {
            target: remote.clone(),
            overwrite: output.overwrite,
        },
        None => Target::File {
            path: output.path.clone(),
            replace: output.overwrite,
        },
    };
    write_stream(schema, batches, target, metadata).await
}

/// Where a stream of batches is written.
enum Target {
    File {
        path: PathBuf,
        replace: bool,
    },
    Object {
        target: RemoteTarget,
        overwrite: bool,
    },
}

/// A file being written, locally or to object storage.
enum Writer {
    File(DurableWriter),
    Object(UploadWriter),
}

impl Target {
    /// Blocking: starts the file (an upload checks first that it may create the object).
    fn create(self, schema: SchemaRef, metadata: Vec<(String, String)>) -> Result<Writer> {
        match self {
            Target::File { path, replace } => {
                let mut writer = DurableWriter::create(&path, schema, metadata)?;
                writer.replace = replace;
                Ok(Writer::File(writer))
            }
            Target::Object { target, overwrite } => {
                let properties = properties(metadata, zstd);
                UploadWriter::create(target, overwrite, schema, properties).map(Writer::Object)
            }
        }
    }

    fn name(&self) -> PathBuf {
        match self {
            Target::File { path, .. } => path.clone(),
            Target::Object { target, .. } => PathBuf::from(&target.url),
        }
    }
}

impl Writer {
    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Writer::File(writer) => writer.write(batch),
            Writer::Object(writer) => writer.write(batch),
        }
    }

    fn commit(self) -> Result<u64> {
        match self {
            Writer::File(writer) => writer.commit(),
            Writer::Object(writer) => writer.commit(),
        }
    }
}

pub(crate) fn zstd(builder: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    builder.set_compression(Compression::ZSTD(ZstdLevel::default()))
}

/// Writer properties set by `tune`, then the key-value `metadata`.
pub(crate) fn properties(
    metadata: Vec<(String, String)>,
    tune: impl FnOnce(WriterPropertiesBuilder) -> WriterPropertiesBuilder,
) -> WriterProperties {
    tune(WriterProperties::builder())
        .set_key_value_metadata(Some(
            metadata
                .into_iter()
                .map(|(k, v)| KeyValue::new(k, v))
                .collect(),
        ))
        .build()
}

async fn write_stream<S, E>(
    schema: SchemaRef,
    batches: S,
    target: Target,
    metadata: Vec<(String, String)>,
) -> Result<u64>
where
    S: Stream<Item = Result<RecordBatch, E>>,
    E: Into<Error>,
{
    let name = target.name();
    // Encoding and compression are CPU work: a blocking task writes while this task reads.
    // The file is committed only on an explicit `Done`; if this future is dropped or the
    // stream fails, the channel closes without it and the temporary file is removed (the
    // upload aborted).
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Message>(2);
    let task = tokio::task::spawn_blocking(move || {
        let mut writer = target.create(schema, metadata)?;
        loop {
            match receiver.blocking_recv() {
                Some(Message::Batch(batch)) => writer.write(&batch)?,
                Some(Message::Done) => return writer.commit().map(Some),
                None => return Ok(None),
            }
        }
    });
    let mut batches = std::pin::pin!(batches);
    let mut failed: Option<Error> = None;
    while let Some(batch) = batches.next().await {
        match batch {
            Ok(batch) => {
                if sender.send(Message::Batch(batch)).await.is_err() {
                    break; // The writer failed; its error is returned below.
                }
            }
            Err(e) => {
                failed = Some(e.into());
                break;
            }
        }
    }
    if failed.is_none() {
        // Ignoring a send error: the writer has stopped and reports why below.
        let _ = sender.send(Message::Done).await;
    }
    drop(sender);
    // Awaited even after a failed input, so the temporary file is gone when this returns.
    let written = task.await?;
    if let Some(error) = failed {
        return Err(error);
    }
    match written? {
        Some(rows) => Ok(rows),
        None => Err(Error::io(
            name,
            std::io::Error::other("the Parquet writer stopped early"),
        )),
    }
}

enum Message {
    Batch(RecordBatch),
    Done,
}

/// Writes `batches` to `path` durably (see the module docs).
pub(crate) fn write_file_durably(
    path: &Path,
    batches: &[RecordBatch],
    metadata: Vec<(String, String)>,
) -> Result<u64> {
    let Some(first) = batches.first() else {
        return Ok(0);
    };
    let mut writer = DurableWriter::create(path, first.schema(), metadata)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.commit()
}

/// A Parquet file being written under a temporary name; removed unless committed.
pub(crate) struct DurableWriter {
    path: PathBuf,
    temp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
    /// Whether the commit may replace an existing file at `path`.
    pub(crate) replace: bool,
}

impl DurableWriter {
    fn create(path: &Path, schema: SchemaRef, metadata: Vec<(String, String)>) -> Result<Self> {
        Self::create_with(path, schema, metadata, zstd)
    }

    /// Like `create`, with writer properties set by `tune` (compression, row group size,
    /// encodings); the key-value metadata is set after it.
    pub(crate) fn create_with(
        path: &Path,
        schema: SchemaRef,
        metadata: Vec<(String, String)>,
        tune: impl FnOnce(WriterPropertiesBuilder) -> WriterPropertiesBuilder,
    ) -> Result<Self> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| {
                Error::invalid("path", format!("{} is not a file path", path.display()))
            })?;
        let dir = parent(path);
        let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let temp = dir.join(format!(".{name}.{}.{nanos}.tmp", std::process::id()));
        let file = File::create(&temp).map_err(|e| Error::io(&temp, e))?;
        let properties = properties(metadata, tune);
        let writer = ArrowWriter::try_new(file, schema, Some(properties))
            .map_err(|e| Error::parquet(&temp, e))?;
        Ok(DurableWriter {
            path: path.to_path_buf(),
            temp,
            writer: Some(writer),
            rows: 0,
            replace: true,
        })
    }

    /// Bytes written so far plus the row group buffered in memory (an estimate of the size).
    pub(crate) fn bytes(&self) -> u64 {
        self.writer
            .as_ref()
            .map_or(0, |w| (w.bytes_written() + w.in_progress_size()) as u64)
    }

    /// Where the file appears once committed.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(writer) = &mut self.writer {
            writer
                .write(batch)
                .map_err(|e| Error::parquet(&self.temp, e))?;
            self.rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    /// Closes, syncs and renames the file (a hard link when it must not replace), then syncs
    /// its directory; returns the rows written.
    pub(crate) fn commit(mut self) -> Result<u64> {
        let Some(writer) = self.writer.take() else {
            return Ok(0);
        };
        let committed = self.commit_inner(writer);
        if committed.is_err() {
            let _ = std::fs::remove_file(&self.temp);
        }
        committed
    }

    fn commit_inner(&self, mut writer: ArrowWriter<File>) -> Result<u64> {
        // The row count is only known now; Parquet footers take metadata until close.
        writer.append_key_value_metadata(parquet::file::metadata::KeyValue::new(
            "quiver.rows".to_string(),
            self.rows.to_string(),
        ));
        let file = writer
            .into_inner()
            .map_err(|e| Error::parquet(&self.temp, e))?;
        file.sync_all().map_err(|e| Error::io(&self.temp, e))?;
        drop(file);
        if self.replace {
            std::fs::rename(&self.temp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        } else {
            std::fs::hard_link(&self.temp, &self.path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => Error::AlreadyExists {
                    field: "output_path".into(),
                    message: format!(
                        "{} was created during the export; set `overwrite` to replace it",
                        self.path.display()
                    ),
                },
                _ => Error::io(&self.path, e),
            })?;
            std::fs::remove_file(&self.temp).map_err(|e| Error::io(&self.temp, e))?;
        }
        let dir = parent(&self.path);
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(&dir, e))?;
        Ok(self.rows)
    }
}

impl Drop for DurableWriter {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, Int64Array};
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::*;

    fn batch(schema: &SchemaRef, values: Vec<i64>) -> RecordBatch {
        let column: ArrayRef = Arc::new(Int64Array::from(values));
        RecordBatch::try_new(Arc::clone(schema), vec![column]).expect("batch")
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_input_stream_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("train.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batches = vec![
            Ok(batch(&schema, (0..10_000).collect())),
            Ok(batch(&schema, vec![1, 2, 3])),
            Err(Error::input_stream("the test stream", "connection reset")),
            Ok(batch(&schema, vec![4])),
        ];
        let error = write_parquet(
            Arc::clone(&schema),
            futures::stream::iter(batches),
            &path,
            vec![("quiver.feature_service".into(), "s".into())],
        )
        .await
        .expect_err("the input failed");
        assert!(matches!(error, Error::InputStream { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            "reading the test stream failed: connection reset"
        );
        assert_eq!(
            names(dir.path()),
            Vec::<String>::new(),
            "no file, no temp file"
        );

        // An existing file at the path is left as it was.
        std::fs::write(&path, b"previous").expect("write");
        let batches = vec![
            Ok(batch(&schema, vec![1])),
            Err(Error::input_stream("the test stream", "closed")),
        ];
        write_parquet(
            Arc::clone(&schema),
            futures::stream::iter(batches),
            &path,
            Vec::new(),
        )
        .await
        .expect_err("the input failed");
        assert_eq!(names(dir.path()), ["train.parquet"]);
        assert_eq!(std::fs::read(&path).expect("read"), b"previous");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_batches_the_file_has_the_schema_and_no_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.parquet");
        let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
        let batches = futures::stream::empty::<Result<RecordBatch>>();
        let metadata = vec![("quiver.fingerprint".to_string(), "abc".to_string())];
        let rows = write_parquet(Arc::clone(&schema), batches, &path, metadata)
            .await
            .expect("write");
        assert_eq!(rows, 0);
        let reader = SerializedFileReader::new(File::open(&path).expect("open")).expect("reader");
        let file = reader.metadata().file_metadata();
        assert_eq!(file.num_rows(), 0);
        assert_eq!(file.schema_descr().column(0).name(), "x");
        let kv: Vec<(String, Option<String>)> = file
            .key_value_metadata()
            .into_iter()
            .flatten()
            .filter(|e| e.key.starts_with("quiver."))
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            kv,
            [
                ("quiver.fingerprint".to_string(), Some("abc".to_string())),
                ("quiver.rows".to_string(), Some("0".to_string())),
            ]
        );
        assert_eq!(names(dir.path()), ["empty.parquet"]);
    }
}
