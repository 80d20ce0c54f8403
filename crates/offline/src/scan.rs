//! Reading a view's data: the projected columns of every file, restricted to an event-time
//! range, converted to canonical types, in (file order, row order).
//!
//! Pushdown: only the needed columns are decoded; row groups whose event-time statistics lie
//! outside the range are skipped; row groups that straddle a bound are filtered while decoding
//! (a Parquet `RowFilter` on the event-time column, so the other columns are decoded only for
//! rows in range); row groups entirely inside the range are read without a filter.
//!
//! Work is split into *units* (consecutive row groups of one file) that run on the blocking
//! pool, `parallelism` at a time; results come back in unit order so that row order is
//! deterministic whatever the scheduling.

use std::fs::File;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, new_null_array};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{Field, Schema, SchemaRef};
use futures::{Stream, StreamExt, TryStreamExt};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::statistics::StatisticsConverter;
use parquet::arrow::arrow_reader::{
    ArrowPredicateFn, ArrowReaderMetadata, ParquetRecordBatchReaderBuilder, RowFilter,
};
use parquet::errors::ParquetError;
use parquet::file::reader::ChunkReader;
use quiver_core::ResolvedView;
use quiver_core::model::Feature;
use quiver_core::types::{KeyType, ValueType};

use crate::arrow_types::{
    ColumnRole, find_column, key_type, normalize_key, normalize_value, timestamp_type, to_micros,
    value_type,
};
use crate::data_file::{DataFile, FooterError};
use crate::error::{Error, Result};

/// Rows per batch read from Parquet.
pub(crate) const BATCH_SIZE: usize = 8192;
/// A unit grows by whole row groups until it has at least this many rows.
const UNIT_ROWS: usize = 256 * 1024;
/// Name of the event-time column in scan output.
pub(crate) const EVENT_TIMESTAMP: &str = "event_timestamp";
/// Name of the created-time column in scan output.
pub(crate) const CREATED_TIMESTAMP: &str = "created_timestamp";

/// What to read: the output layout is keys, event time, created time (if the source has
/// one), then features; rows with `start <= event_ts < end`.
#[derive(Debug)]
pub(crate) struct ScanSpec {
    pub(crate) view: String,
    pub(crate) keys: Vec<(String, KeyType)>,
    pub(crate) event_time: String,
    pub(crate) created_time: Option<String>,
    pub(crate) features: Vec<(String, ValueType)>,
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// Output schema: keys and features under their view field names.
    pub(crate) schema: SchemaRef,
}

impl ScanSpec {
    pub(crate) fn new(view: &ResolvedView, features: &[&Feature], start: i64, end: i64) -> Self {
        let source = &view.source;
        let mut fields: Vec<Field> = view
            .join_keys
            .iter()
            .map(|k| Field::new(&k.name, key_type(k.key_type), true))
            .collect();
        fields.push(Field::new(EVENT_TIMESTAMP, timestamp_type(), true));
        if source.created_time.is_some() {
            fields.push(Field::new(CREATED_TIMESTAMP, timestamp_type(), true));
        }
        fields.extend(
            features
                .iter()
                .map(|f| Field::new(&f.name, value_type(f.value_type), true)),
        );
        ScanSpec {
            view: view.name.clone(),
            keys: view
                .join_keys
                .iter()
                .map(|k| (source.column_for(&k.name), k.key_type))
                .collect(),
            event_time: source.event_time.clone(),
            created_time: source.created_time.clone(),
            features: features
                .iter()
                .map(|f| (source.column_for(&f.name), f.value_type))
                .collect(),
            start,
            end,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    /// A spec over columns named as they are read (no source renames, no created time).
    pub(crate) fn plain(
        name: &str,
        keys: Vec<(String, KeyType)>,
        event_time: &str,
        features: Vec<(String, ValueType)>,
        (start, end): (i64, i64),
    ) -> Self {
        let mut fields: Vec<Field> = keys
            .iter()
            .map(|(name, key)| Field::new(name, key_type(*key), true))
            .collect();
        fields.push(Field::new(EVENT_TIMESTAMP, timestamp_type(), true));
        fields.extend(
            features
                .iter()
                .map(|(name, value)| Field::new(name, value_type(*value), true)),
        );
        ScanSpec {
            view: name.to_string(),
            keys,
            event_time: event_time.to_string(),
            created_time: None,
            features,
            start,
            end,
            schema: Arc::new(Schema::new(fields)),
        }
    }

    pub(crate) fn n_keys(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn event_index(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn created_index(&self) -> Option<usize> {
        self.created_time.as_ref().map(|_| self.keys.len() + 1)
    }

    pub(crate) fn first_feature_index(&self) -> usize {
        self.keys.len() + 1 + usize::from(self.created_time.is_some())
    }

    fn mismatch(&self, message: String) -> Error {
        Error::SourceMismatch {
            view: self.view.clone(),
            message,
        }
    }

    /// A file of the view's data that is not readable Parquet (not Parquet at all, truncated
    /// or corrupt): the data does not fit the view, the server is not at fault.
    fn unreadable(&self, name: &str, error: ParquetError) -> Error {
        self.mismatch(format!(
            "{name} is not a readable Parquet file ({error}); replace or remove it"
        ))
    }
}

/// One file, its footer, and where each output column is in it.
#[derive(Debug)]
struct FileScan {
    file: DataFile,
    /// `file`'s path or URL.
    name: String,
    metadata: ArrowReaderMetadata,
    /// Per output column, its name in the file (None: absent, read as nulls).
    columns: Vec<Option<String>>,
    /// Root indices of the file columns to decode.
    projection: Vec<usize>,
    event_root: usize,
}

/// Consecutive row groups of one file, read by one task.
#[derive(Debug, Clone)]
pub(crate) struct Unit {
    file: Arc<FileScan>,
    row_groups: Vec<usize>,
    /// Whether some row group may hold rows outside the range (or null event times).
    filter: bool,
}

/// Lists the units of `files` for `spec`, reading footers `parallelism` files at a time.
pub(crate) async fn plan_units(
    files: Vec<DataFile>,
    spec: Arc<ScanSpec>,
    reader: &crate::ViewReader,
) -> Result<Vec<Unit>> {
    let per_file: Vec<Vec<Unit>> =
        futures::stream::iter(files)
            .map(|file| {
                let (spec, footers) = (Arc::clone(&spec), Arc::clone(&reader.footers));
                async move {
                    tokio::task::spawn_blocking(move || plan_file(file, &spec, &footers)).await?
                }
            })
            .buffered(reader.parallelism.max(1))
            .try_collect()
            .await?;
    Ok(per_file.into_iter().flatten().collect())
}

/// Runs `work` on every unit on the blocking pool and yields the results in unit order.
pub(crate) fn run_units<T, F>(
    units: Vec<Unit>,
    spec: Arc<ScanSpec>,
    parallelism: usize,
    work: F,
) -> impl Stream<Item = Result<T>> + Send + 'static
where
    T: Send + 'static,
    F: Fn(&Unit, &ScanSpec) -> Result<T> + Send + Sync + 'static,
{
    let work = Arc::new(work);
    futures::stream::iter(units)
        .map(move |unit| {
            let work = Arc::clone(&work);
            let spec = Arc::clone(&spec);
            async move { tokio::task::spawn_blocking(move || work(&unit, &spec)).await? }
        })
        .buffered(parallelism.max(1))
}

fn plan_file(
    file: DataFile,
    spec: &ScanSpec,
    footers: &crate::footers::FooterCache,
) -> Result<Vec<Unit>> {
    let name = file.name();
    let metadata = footers.load_file(&file).map_err(|e| match e {
        FooterError::Read(e) => e,
        FooterError::Parquet(e) => spec.unreadable(&name, e),
    })?;
    let (columns, projection, event_root) = project(spec, metadata.schema(), &name)?;
    let kept = prune_row_groups(&metadata, &spec.event_time, spec.start, spec.end, &file)?;
    let file = Arc::new(FileScan {
        file,
        name,
        metadata,
        columns,
        projection,
        event_root,
    });
    Ok(group_units(&file, kept))
}

/// Which file columns a scan reads: per spec column its name (or `None` when the file lacks
/// an optional column: a created time or a feature, read as nulls), the sorted projection,
/// and the index of the event-time column.
fn project(
    spec: &ScanSpec,
    schema: &Schema,
    shown: &str,
) -> Result<(Vec<Option<String>>, Vec<usize>, usize)> {
    let mut columns = Vec::new();
    let mut projection = Vec::new();
    for (name, key) in &spec.keys {
        let index = find_column(schema, name, ColumnRole::Key(*key))
            .map_err(|actual| {
                spec.mismatch(format!(
                    "key column `{name}` in {shown} is {actual}, the view's key is {key}"
                ))
            })?
            .ok_or_else(|| spec.mismatch(format!("{shown} has no key column `{name}`")))?;
        columns.push(Some(name.clone()));
        projection.push(index);
    }
    let times = std::iter::once((&spec.event_time, true))
        .chain(spec.created_time.iter().map(|c| (c, false)));
    let mut event_root = 0;
    for (name, required) in times {
        let found = find_column(schema, name, ColumnRole::Time).map_err(|actual| {
            spec.mismatch(format!(
                "time column `{name}` in {shown} is {actual}, expected a timestamp"
            ))
        })?;
        match found {
            Some(index) => {
                if required {
                    event_root = index;
                }
                columns.push(Some(name.clone()));
                projection.push(index);
            }
            None if required => {
                return Err(spec.mismatch(format!("{shown} has no event time column `{name}`")));
            }
            None => columns.push(None),
        }
    }
    for (name, value) in &spec.features {
        let found = find_column(schema, name, ColumnRole::Feature(*value)).map_err(|actual| {
            spec.mismatch(format!(
                "column `{name}` in {shown} is {actual}, the view declares {value}"
            ))
        })?;
        columns.push(found.map(|_| name.clone()));
        projection.extend(found);
    }
    projection.sort_unstable();
    projection.dedup();
    Ok((columns, projection, event_root))
}

/// Groups the kept row groups of a file into scan units of about [`UNIT_ROWS`] rows.
fn group_units(file: &Arc<FileScan>, kept: Vec<(usize, bool)>) -> Vec<Unit> {
    let row_groups = file.metadata.metadata().row_groups();
    let mut units = Vec::new();
    let mut current: Option<(Vec<usize>, bool, usize)> = None;
    for (index, needs_filter) in kept {
        let rows = usize::try_from(row_groups[index].num_rows()).unwrap_or(0);
        let (groups, filter, n_rows) = current.get_or_insert_with(|| (Vec::new(), false, 0));
        groups.push(index);
        *filter |= needs_filter;
        *n_rows += rows;
        if *n_rows >= UNIT_ROWS
            && let Some((row_groups, filter, _)) = current.take()
        {
            units.push(Unit {
                file: Arc::clone(file),
                row_groups,
                filter,
            });
        }
    }
    if let Some((row_groups, filter, _)) = current {
        units.push(Unit {
            file: Arc::clone(file),
            row_groups,
            filter,
        });
    }
    units
}

/// The row groups that may hold rows in `[start, end)`, each with whether it needs a row
/// filter (statistics missing, nulls present, or not entirely inside the range).
fn prune_row_groups(
    metadata: &ArrowReaderMetadata,
    event_time: &str,
    start: i64,
    end: i64,
    file: &DataFile,
) -> Result<Vec<(usize, bool)>> {
    let row_groups = metadata.metadata().row_groups();
    let converter =
        StatisticsConverter::try_new(event_time, metadata.schema(), metadata.parquet_schema())
            .map_err(|e| Error::parquet(file.error_path(), e))?
            .with_missing_null_counts_as_zero(false);
    let stats = || -> Result<_, ParquetError> {
        let mins = converter.row_group_mins(row_groups)?;
        let maxes = converter.row_group_maxes(row_groups)?;
        let nulls = converter.row_group_null_counts(row_groups)?;
        Ok((mins, maxes, nulls))
    };
    let Ok((mins, maxes, nulls)) = stats() else {
        // Unusable statistics only cost pruning, never correctness.
        return Ok((0..row_groups.len()).map(|i| (i, true)).collect());
    };
    let (Ok(mins), Ok(maxes)) = (to_micros(mins.as_ref()), to_micros(maxes.as_ref())) else {
        return Ok((0..row_groups.len()).map(|i| (i, true)).collect());
    };
    let mut kept = Vec::new();
    for index in 0..row_groups.len() {
        let known = mins.is_valid(index) && maxes.is_valid(index);
        let (min, max) = (mins.value(index), maxes.value(index));
        if known && (max < start || min >= end) {
            continue;
        }
        let no_nulls = nulls.is_valid(index) && nulls.value(index) == 0;
        let inside = known && no_nulls && min >= start && max < end;
        kept.push((index, !inside));
    }
    Ok(kept)
}

/// Reads one unit, passing each batch (in the spec's layout, canonical types) to `sink`.
pub(crate) fn read_unit(
    unit: &Unit,
    spec: &ScanSpec,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = &unit.file;
    match &file.file {
        DataFile::Local(path) => {
            let handle = File::open(path).map_err(|e| Error::io(path, e))?;
            read_from(handle, unit, spec, sink)
        }
        DataFile::Remote(remote) => read_from(remote.fetch(chunk_ranges(unit))?, unit, spec, sink),
    }
}

impl Unit {
    /// About the bytes the unit's rows take in memory once decoded: per projected column
    /// chunk, its uncompressed size or its rows at the Arrow width of its type, whichever is
    /// more (dictionary-encoded strings are small in Parquet, not in Arrow).
    pub(crate) fn estimated_bytes(&self) -> usize {
        use parquet::basic::Type;
        let metadata = self.file.metadata.metadata();
        let schema = metadata.file_metadata().schema_descr();
        let mut bytes = 0usize;
        for &group in &self.row_groups {
            let row_group = metadata.row_group(group);
            let rows = usize::try_from(row_group.num_rows()).unwrap_or(0);
            for leaf in 0..row_group.num_columns() {
                if !self
                    .file
                    .projection
                    .contains(&schema.get_column_root_idx(leaf))
                {
                    continue;
                }
                let column = row_group.column(leaf);
                let width = match column.column_descr().physical_type() {
                    Type::BOOLEAN => 1,
                    Type::INT32 | Type::FLOAT => 4,
                    Type::INT64 | Type::DOUBLE | Type::INT96 => 8,
                    // An offset and a short value.
                    Type::BYTE_ARRAY => 12,
                    Type::FIXED_LEN_BYTE_ARRAY => {
                        usize::try_from(column.column_descr().type_length()).unwrap_or(16)
                    }
                };
                let uncompressed = usize::try_from(column.uncompressed_size()).unwrap_or(0);
                bytes = bytes.saturating_add(uncompressed.max(rows.saturating_mul(width)));
            }
        }
        bytes
    }
}

/// The byte ranges of the column chunks `unit` decodes: its row groups' projected columns.
fn chunk_ranges(unit: &Unit) -> Vec<std::ops::Range<u64>> {
    let metadata = unit.file.metadata.metadata();
    let schema = metadata.file_metadata().schema_descr();
    let mut ranges = Vec::new();
    for &group in &unit.row_groups {
        let row_group = metadata.row_group(group);
        for leaf in 0..row_group.num_columns() {
            if unit
                .file
                .projection
                .contains(&schema.get_column_root_idx(leaf))
            {
                let (start, length) = row_group.column(leaf).byte_range();
                ranges.push(start..start + length);
            }
        }
    }
    ranges
}

fn read_from<R: ChunkReader + 'static>(
    reader: R,
    unit: &Unit,
    spec: &ScanSpec,
    sink: &mut dyn FnMut(RecordBatch) -> Result<()>,
) -> Result<()> {
    let file = &unit.file;
    let name = file.name.as_str();
    let parquet_schema = file.metadata.parquet_schema();
    let mut builder =
        ParquetRecordBatchReaderBuilder::new_with_metadata(reader, file.metadata.clone())
            .with_batch_size(BATCH_SIZE)
            .with_row_groups(unit.row_groups.clone())
            .with_projection(ProjectionMask::roots(
                parquet_schema,
                file.projection.iter().copied(),
            ));
    if unit.filter {
        let (start, end) = (spec.start, spec.end);
        let predicate = ArrowPredicateFn::new(
            ProjectionMask::roots(parquet_schema, [file.event_root]),
            move |batch: RecordBatch| {
                let micros = to_micros(batch.column(0).as_ref())?;
                let values = micros.values();
                Ok(BooleanArray::new(
                    BooleanBuffer::collect_bool(values.len(), |i| {
                        micros.is_valid(i) && values[i] >= start && values[i] < end
                    }),
                    None,
                ))
            },
        );
        builder = builder.with_row_filter(RowFilter::new(vec![Box::new(predicate)]));
    }
    let reader = builder.build().map_err(|e| spec.unreadable(name, e))?;
    for batch in reader {
        let batch = batch.map_err(|e| spec.unreadable(name, e.into()))?;
        let batch = normalize_batch(&batch, file, spec)
            .map_err(|e| spec.mismatch(format!("reading {name}: {e}")))?;
        sink(batch)?;
    }
    Ok(())
}

/// Every time must be in the valid time range (SEMANTICS.md "Time"): a source row outside it
/// fails the materialization or join that reads it, on both paths alike.
fn check_times(
    micros: &arrow::array::TimestampMicrosecondArray,
    column: &str,
) -> Result<(), arrow::error::ArrowError> {
    let bad = micros
        .iter()
        .enumerate()
        .find(|(_, t)| t.is_some_and(|t| !quiver_core::semantics::is_valid_time(t)));
    match bad {
        Some((row, Some(t))) => Err(arrow::error::ArrowError::InvalidArgumentError(format!(
            "column `{column}`, row {row} of a batch: {}",
            quiver_core::semantics::invalid_time_message(t)
        ))),
        _ => Ok(()),
    }
}

fn normalize_batch(
    batch: &RecordBatch,
    file: &FileScan,
    spec: &ScanSpec,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n_rows = batch.num_rows();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(file.columns.len());
    let created = spec.created_index();
    for (index, (name, field)) in file.columns.iter().zip(spec.schema.fields()).enumerate() {
        let Some(array) = name.as_deref().and_then(|n| batch.column_by_name(n)) else {
            columns.push(new_null_array(field.data_type(), n_rows));
            continue;
        };
        let array = if index < spec.n_keys() {
            normalize_key(array, spec.keys[index].1)?
        } else if index == spec.event_index() || Some(index) == created {
            let micros = to_micros(array.as_ref())?;
            check_times(&micros, name.as_deref().unwrap_or_default())?;
            Arc::new(micros)
        } else {
            normalize_value(array, spec.features[index - spec.first_feature_index()].1)?
        };
        columns.push(array);
    }
    RecordBatch::try_new(Arc::clone(&spec.schema), columns)
}
