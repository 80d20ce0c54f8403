//! The client half of `quiver export`'s default: read a local label table (a Parquet file, a
//! directory of `*.parquet` files or a glob) and upload it with Arrow Flight DoPut, so the
//! server never sees a local path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::client::AuthChannel;
use anyhow::{Context, Result, bail};
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::FlightDescriptor;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A label table read from local files: its schema and batches, in file and row order.
#[derive(Debug)]
pub(crate) struct LocalLabels {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
}

/// The Parquet files `location` names on this machine, in path order: the same rules as the
/// server's labels roots, with this machine's file system as the one root (the user reads
/// their own files).
fn local_files(location: &Path) -> Result<Vec<PathBuf>> {
    let absolute = std::path::absolute(location)
        .with_context(|| format!("bad path {}", location.display()))?;
    let everything = quiver_offline::Roots::new("this machine", "", &[PathBuf::from("/")])
        .context("the file system root")?;
    let files = everything
        .files("labels", &absolute.to_string_lossy())
        .with_context(|| format!("cannot list {}", location.display()))?;
    if files.is_empty() {
        bail!(
            "{} matches no Parquet file; give a file, a directory of *.parquet files or a glob",
            location.display()
        );
    }
    Ok(files)
}

/// Reads the label table at `location` (file, directory or glob) into memory.
pub(crate) fn read_labels(location: &Path) -> Result<LocalLabels> {
    let mut schema: Option<SchemaRef> = None;
    let mut batches = Vec::new();
    for path in local_files(location)? {
        let file = std::fs::File::open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("{} is not a readable Parquet file", path.display()))?;
        let file_schema = Arc::clone(builder.schema());
        match &schema {
            Some(first) if first.fields() != file_schema.fields() => bail!(
                "{} has other columns or types than the first label file; all label files need one schema",
                path.display()
            ),
            Some(_) => {}
            None => schema = Some(file_schema),
        }
        for batch in builder.build()? {
            batches.push(batch.with_context(|| format!("reading {}", path.display()))?);
        }
    }
    let schema = schema.context("no label file")?;
    Ok(LocalLabels { schema, batches })
}

/// Uploads `labels` under a fresh name and returns the name (for `labels_upload`).
pub(crate) async fn upload(channel: &AuthChannel, labels: LocalLabels) -> Result<String> {
    let name = format!("cli-{}", random_suffix());
    let descriptor = FlightDescriptor::new_path(vec!["labels".to_string(), name.clone()]);
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(labels.schema)
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter(labels.batches.into_iter().map(Ok)));
    // The encoder's errors end the upload stream; the server then reports a broken upload.
    let data = encoded.filter_map(|item| async move { item.ok() });
    let mut flight =
        FlightServiceClient::new(channel.clone()).max_encoding_message_size(256 * 1024 * 1024);
    let mut results = flight
        .do_put(data)
        .await
        .context("uploading the label table (Flight DoPut)")?
        .into_inner();
    while results.try_next().await?.is_some() {}
    Ok(name)
}

fn random_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}
