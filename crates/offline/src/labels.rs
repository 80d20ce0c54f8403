//! Label tables: given batches, or Parquet files read through DataFusion in a single ordered
//! partition (files sorted by path, rows in file order), so output rows keep label order.

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::prelude::ParquetReadOptions;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::OfflineStore;
use crate::arrow_types::to_micros;
use crate::data_file::{DataFile, FooterError};
use crate::error::{Error, Result};
use crate::object::ObjectUrl;
use crate::roots::Roots;

/// Where the label rows come from.
#[derive(Debug)]
pub enum LabelInput {
    /// A Parquet file, a directory of `*.parquet` files or a glob; files are read in path order.
    Parquet(String),
    /// Batches with one schema; at least one batch (it may be empty) to give the schema.
    Batches(Vec<RecordBatch>),
}

/// An opened label table: its schema and where its batches come from.
pub(crate) struct Labels {
    pub(crate) schema: SchemaRef,
    source: Source,
}

enum Source {
    Batches(Vec<RecordBatch>),
    Frame(DataFrame),
}

impl Labels {
    pub(crate) async fn open(store: &OfflineStore, input: LabelInput) -> Result<Labels> {
        match input {
            LabelInput::Batches(batches) => {
                let Some(first) = batches.first() else {
                    return Err(Error::invalid(
                        "labels",
                        "no label batches; pass at least one batch (it may be empty) so the label table has a schema",
                    ));
                };
                let schema = first.schema();
                if let Some(i) = batches
                    .iter()
                    .position(|b| b.schema().fields() != schema.fields())
                {
                    return Err(Error::invalid(
                        "labels",
                        format!(
                            "label batch {i} has a different schema than batch 0; all batches must have the same columns and types"
                        ),
                    ));
                }
                Ok(Labels {
                    schema,
                    source: Source::Batches(batches),
                })
            }
            LabelInput::Parquet(location) => {
                let roots = store.labels.clone();
                let files =
                    tokio::task::spawn_blocking(move || label_files(&roots, &location)).await??;
                register_stores(store, &files)?;
                let files: Vec<String> = files.iter().map(DataFile::name).collect();
                let options = ParquetReadOptions {
                    // The files are already chosen; accept any name.
                    file_extension: "",
                    ..Default::default()
                };
                let frame = store.session.read_parquet(files, options).await?;
                Ok(Labels {
                    schema: std::sync::Arc::clone(frame.schema().inner()),
                    source: Source::Frame(frame),
                })
            }
        }
    }

    /// The least and greatest label time (UTC micros), `None` if there is none.
    pub(crate) async fn time_bounds(&self, column: usize) -> Result<Option<(i64, i64)>> {
        let mut bounds: Option<(i64, i64)> = None;
        let mut update = |batch: &RecordBatch, index: usize| -> Result<()> {
            let micros = to_micros(batch.column(index).as_ref())?;
            for (i, t) in micros.values().iter().enumerate() {
                if micros.is_valid(i) {
                    bounds = Some(bounds.map_or((*t, *t), |(lo, hi)| (lo.min(*t), hi.max(*t))));
                }
            }
            Ok(())
        };
        match &self.source {
            Source::Batches(batches) => {
                for batch in batches {
                    update(batch, column)?;
                }
            }
            Source::Frame(frame) => {
                let name = self.schema.field(column).name();
                let mut stream = frame
                    .clone()
                    .select_columns(&[name.as_str()])?
                    .execute_stream()
                    .await?;
                while let Some(batch) = stream.try_next().await? {
                    update(&batch, 0)?;
                }
            }
        }
        Ok(bounds)
    }

    /// The label batches, in order (each call reads them again).
    pub(crate) async fn stream(&self) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        match &self.source {
            Source::Batches(batches) => {
                Ok(futures::stream::iter(batches.clone().into_iter().map(Ok)).boxed())
            }
            Source::Frame(frame) => {
                let stream = frame.clone().execute_stream().await?;
                Ok(stream.map_err(Error::from).boxed())
            }
        }
    }
}

/// Lets DataFusion read the label objects with the clients that listed them.
fn register_stores(store: &OfflineStore, files: &[DataFile]) -> Result<()> {
    for file in files {
        if let DataFile::Remote(remote) = file {
            let bucket = ObjectUrl::parse("labels_path", &remote.url)?.bucket_url();
            let url = ObjectStoreUrl::parse(&bucket)?;
            store
                .session
                .register_object_store(url.as_ref(), std::sync::Arc::clone(&remote.store));
        }
    }
    Ok(())
}

/// DataFusion reads label objects by URL, and a URL parser decodes `%` escapes and treats
/// `%2e%2e` as `..`: a key with `%` (or `#`, `?`) could name another object than the one
/// listed and checked, so it is refused.
fn refuse_reinterpreted_keys(file: &DataFile) -> Result<()> {
    let DataFile::Remote(remote) = file else {
        return Ok(());
    };
    if remote.location.as_ref().contains(['%', '#', '?']) {
        return Err(Error::invalid(
            "labels_path",
            format!(
                "{} has `%`, `#` or `?` in its key, which a URL would read as another object; rename it",
                remote.url
            ),
        ));
    }
    Ok(())
}

/// Blocking: the Parquet files a label location names under the labels roots, each checked
/// to be a Parquet file (its footer read), so a file of another kind is the caller's error.
fn label_files(roots: &Roots, location: &str) -> Result<Vec<DataFile>> {
    let files = roots.locate("labels_path", location)?;
    if files.is_empty() {
        return Err(Error::invalid(
            "labels_path",
            format!(
                "`{location}` matches no Parquet file; give a file, a directory of *.parquet files or a glob under a labels root"
            ),
        ));
    }
    for file in &files {
        refuse_reinterpreted_keys(file)?;
        let readable = match file.footer() {
            Ok(_) => true,
            // The store's failures keep their kind; a local file that cannot be opened is
            // as unreadable as one that is not Parquet.
            Err(FooterError::Read(e)) if matches!(file, DataFile::Remote(_)) => return Err(e),
            Err(_) => false,
        };
        if !readable {
            return Err(Error::invalid(
                "labels_path",
                format!(
                    "{} (from `{location}`) is not a readable Parquet file; give Parquet label tables",
                    file.name()
                ),
            ));
        }
    }
    Ok(files)
}
