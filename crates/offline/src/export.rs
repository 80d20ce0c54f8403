//! Writing Parquet files durably: a temporary name in the target directory, zstd, key-value
//! metadata, fsync, rename, directory fsync. A failed write leaves no partial file behind.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};
use crate::join::JoinOutput;

/// Writes every batch of `output` to a zstd Parquet file at `path` with `metadata` as the
/// file's key-value metadata, replacing `path` atomically once the file is durable. Returns
/// the number of rows written.
pub async fn write_parquet(
    output: JoinOutput,
    path: &Path,
    metadata: Vec<(String, String)>,
) -> Result<u64> {
    let mut writer = DurableWriter::create(path, output.schema, metadata)?;
    // Encoding and compression are CPU work: a blocking task writes while this task reads.
    // The file is committed only on an explicit `Done`; if this future is dropped or the
    // stream fails, the channel closes without it and the temporary file is removed.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Message>(2);
    let task = tokio::task::spawn_blocking(move || {
        loop {
            match receiver.blocking_recv() {
                Some(Message::Batch(batch)) => writer.write(&batch)?,
                Some(Message::Done) => return writer.commit().map(Some),
                None => return Ok(None),
            }
        }
    });
    let mut stream = output.stream;
    while let Some(batch) = stream.next().await {
        if sender.send(Message::Batch(batch?)).await.is_err() {
            break; // The writer failed; its error is returned below.
        }
    }
    // Ignoring a send error: the writer has stopped and reports why below.
    let _ = sender.send(Message::Done).await;
    drop(sender);
    match task.await?? {
        Some(rows) => Ok(rows),
        None => Err(Error::io(
            path,
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
struct DurableWriter {
    path: PathBuf,
    temp: PathBuf,
    writer: Option<ArrowWriter<File>>,
    rows: u64,
}

impl DurableWriter {
    fn create(path: &Path, schema: SchemaRef, metadata: Vec<(String, String)>) -> Result<Self> {
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
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_key_value_metadata(Some(
                metadata
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect(),
            ))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(properties))
            .map_err(|e| Error::parquet(&temp, e))?;
        Ok(DurableWriter {
            path: path.to_path_buf(),
            temp,
            writer: Some(writer),
            rows: 0,
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if let Some(writer) = &mut self.writer {
            writer
                .write(batch)
                .map_err(|e| Error::parquet(&self.temp, e))?;
            self.rows += batch.num_rows() as u64;
        }
        Ok(())
    }

    fn commit(mut self) -> Result<u64> {
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
        std::fs::rename(&self.temp, &self.path).map_err(|e| Error::io(&self.path, e))?;
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
