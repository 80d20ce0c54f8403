//! Training data from the served-row log: label rows joined to the rows serving logged, so a
//! model is trained on exactly the values it was served.
//!
//! The logged rows are read once (bounded in rows before anything is read) and indexed like a
//! view's rows ([`ViewIndex`]), with `served_at` as the event time: keyed by the service's join
//! keys, plus the request id when labels name their request. A label then takes the latest
//! logged row of its key at or before its time (by keys), or the latest of its request (by
//! request id); among rows served at the same instant, the last logged (file, then row order).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray, new_null_array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::{StreamExt, TryStreamExt};
use quiver_core::selection::collisions;
use quiver_core::types::{KeyType, ScalarType, ValueType};

use crate::OfflineStore;
use crate::arrow_types::{normalize_key, timestamp_type, value_type};
use crate::error::{Error, Result};
use crate::join::{
    JoinOutput, JoinStats, label_key_column, label_times, map_labels, timestamp_column,
};
use crate::labels::{LabelInput, Labels};
use crate::scan::ScanSpec;
use crate::served_log::{REQUEST_ID, SERVED_AT, SERVICE_VERSION, ServedLogDir};
use crate::view_index::ViewIndex;

/// The output column holding the matched row's request id, in a join by keys (label tables
/// often carry their own `request_id`).
pub const SERVED_REQUEST_ID: &str = "served_request_id";

/// How a label row finds its logged row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogMatch {
    /// The row logged for the label's request id (in `column`) and join keys.
    RequestId { column: String },
    /// The latest row logged for the label's join keys at or before its time (in
    /// `timestamp_column`), served at most `max_age` before it (0: no bound).
    Keys {
        timestamp_column: String,
        max_age: i64,
    },
}

/// One logged feature column and its name in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFeature {
    pub column: String,
    pub output: String,
    pub value_type: ValueType,
}

#[derive(Debug)]
pub struct LogJoinRequest {
    pub labels: LabelInput,
    pub on: LogMatch,
    pub log: ServedLogDir,
    /// The service whose log is read, and the only service version read (None: every one).
    pub service: String,
    pub version: Option<u32>,
    /// Only rows served in `[start, end)`.
    pub window: (i64, i64),
    /// The service's join keys: log columns and label columns of these names.
    pub keys: Vec<(String, KeyType)>,
    pub features: Vec<LogFeature>,
    /// At most this many logged rows are read, and the setting that raises it.
    pub max_rows: (u64, &'static str),
}

/// What joining a label batch needs.
struct LogPlan {
    /// Label columns of the index's keys (join keys, then the request id), with key types.
    label_keys: Vec<(usize, KeyType)>,
    /// The label time column; none when joining by request id.
    t_index: Option<usize>,
    index: ViewIndex,
    n_features: usize,
}

impl OfflineStore {
    /// Joins the label rows to the served-row log (see the module docs): exactly one output
    /// row per label row, in label order, with the label columns, the features as logged,
    /// then `served_at` and `service_version` of the matched row (null when none matched)
    /// and, joined by keys, its request id ([`SERVED_REQUEST_ID`]).
    pub async fn served_log_join(&self, request: LogJoinRequest) -> Result<JoinOutput> {
        let labels = Labels::open(self, request.labels).await?;
        let schema = Arc::clone(&labels.schema);
        let mut label_keys = request
            .keys
            .iter()
            .map(|(name, key)| label_key_column(&schema, name, *key, "the feature service"))
            .collect::<Result<Vec<_>>>()?;
        let mut index_keys = request.keys.clone();
        let t_index = match &request.on {
            LogMatch::RequestId { column } => {
                label_keys.push(label_key_column(
                    &schema,
                    column,
                    KeyType::String,
                    "the served-row log (the request id)",
                )?);
                index_keys.push((REQUEST_ID.to_string(), KeyType::String));
                None
            }
            LogMatch::Keys {
                timestamp_column: name,
                ..
            } => Some(timestamp_column(&schema, name)?),
        };
        let output_schema = output_schema(&schema, &request.features, t_index.is_some())?;
        let stats = Arc::new(JoinStats::new(["served_log".to_string()]));
        // The log is read and indexed when the stream is first polled (a planned export holds
        // no rows).
        let parallelism = self.view_reader().parallelism;
        let deferred = {
            let (schema, stats) = (Arc::clone(&output_schema), Arc::clone(&stats));
            async move {
                let window = match (&request.on, t_index) {
                    (LogMatch::Keys { max_age, .. }, Some(t_index)) => {
                        let bounds = labels.time_bounds(t_index).await?;
                        label_window(request.window, bounds, *max_age)
                    }
                    _ => request.window,
                };
                let spec = log_spec(&request.features, index_keys, t_index.is_some(), window);
                let ttl = match request.on {
                    LogMatch::Keys { max_age, .. } => max_age,
                    LogMatch::RequestId { .. } => 0,
                };
                let (log, max_rows) = (request.log, request.max_rows);
                let (service, version) = (request.service, request.version);
                let index = tokio::task::spawn_blocking(move || {
                    let files = log.files(&service, (spec.start, spec.end), version)?;
                    read_log(&log, &files, &spec, max_rows)
                        .and_then(|batches| ViewIndex::from_batches(&spec, batches, ttl, true))
                })
                .await??;
                let plan = LogPlan {
                    label_keys,
                    t_index,
                    index,
                    n_features: request.features.len(),
                };
                Ok::<_, Error>(map_labels(
                    labels.stream().await?,
                    parallelism,
                    move |batch| join_log_batch(&batch, &plan, &schema, &stats),
                ))
            }
        };
        let stream = futures::stream::once(deferred).try_flatten().boxed();
        Ok(JoinOutput {
            schema: output_schema,
            stream,
            stats,
        })
    }
}

/// The logged rows a keys join can choose: served in the request's window, at or before the
/// last label time and (with a `max_age`) not before the first label time minus it.
fn label_window(window: (i64, i64), bounds: Option<(i64, i64)>, max_age: i64) -> (i64, i64) {
    let Some((min_t, max_t)) = bounds else {
        return (0, 0); // No label time: no row can be chosen, so read nothing.
    };
    let start = match max_age {
        0 => window.0,
        _ => window.0.max(min_t.saturating_sub(max_age)),
    };
    (start, window.1.min(max_t.saturating_add(1)))
}

fn output_schema(labels: &Schema, features: &[LogFeature], by_keys: bool) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = labels.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.extend(
        features
            .iter()
            .map(|f| Field::new(&f.output, value_type(f.value_type), true)),
    );
    fields.push(Field::new(SERVED_AT, timestamp_type(), true));
    fields.push(Field::new(SERVICE_VERSION, DataType::Int64, true));
    if by_keys {
        fields.push(Field::new(SERVED_REQUEST_ID, DataType::Utf8, true));
    }
    let names = collisions(fields.iter().map(|f| f.name().as_str()));
    if !names.is_empty() {
        return Err(Error::NameCollision { names });
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The index's layout: keys, `served_at` as the event time, then the features, the service
/// version and (joined by keys) the request id.
fn log_spec(
    features: &[LogFeature],
    keys: Vec<(String, KeyType)>,
    by_keys: bool,
    window: (i64, i64),
) -> ScanSpec {
    let mut columns: Vec<(String, ValueType)> = features
        .iter()
        .map(|f| (f.column.clone(), f.value_type))
        .collect();
    columns.push((
        SERVICE_VERSION.to_string(),
        ValueType::scalar(ScalarType::Int64),
    ));
    if by_keys {
        columns.push((
            REQUEST_ID.to_string(),
            ValueType::scalar(ScalarType::String),
        ));
    }
    ScanSpec::plain("served log", keys, SERVED_AT, columns, window)
}

/// Blocking: the logged rows of `files` in the spec's window, in the spec's schema, after
/// checking their number against `max_rows`.
fn read_log(
    log: &ServedLogDir,
    files: &[PathBuf],
    spec: &ScanSpec,
    (max_rows, setting): (u64, &'static str),
) -> Result<Vec<RecordBatch>> {
    let window = (spec.start, spec.end);
    if files.is_empty() || window.0 >= window.1 {
        return Ok(Vec::new());
    }
    let rows = log.count(files, window)?;
    if rows > max_rows {
        return Err(Error::TooLarge(format!(
            "the served-row log has {rows} rows in the window to join; the limit is {max_rows} ({setting}); narrow the window (start, end) or raise the limit"
        )));
    }
    let merged = log.schema(files)?;
    let mut batches = Vec::new();
    log.read(files, &merged, window, None, &mut |batch| {
        batches.push(conform(&batch, spec)?);
        Ok(true)
    })?;
    Ok(batches)
}

/// A batch of logged rows in the spec's schema: keys and the time as logged, features in their
/// declared type (null where the logging version had no such column).
fn conform(batch: &RecordBatch, spec: &ScanSpec) -> Result<RecordBatch> {
    let schema = &spec.schema;
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (name, key) in &spec.keys {
        columns.push(match batch.column_by_name(name) {
            Some(column) => normalize_key(column, *key)?,
            None => new_null_array(&crate::arrow_types::key_type(*key), batch.num_rows()),
        });
    }
    let served = batch.column_by_name(SERVED_AT).ok_or_else(|| {
        Error::invalid(
            SERVED_AT,
            "a served-row log file has no `served_at` column; it was not written by Quiver",
        )
    })?;
    columns.push(Arc::new(crate::arrow_types::to_micros(served.as_ref())?));
    for (index, (name, value)) in spec.features.iter().enumerate() {
        let expected = schema.field(spec.first_feature_index() + index).data_type();
        columns.push(match batch.column_by_name(name) {
            Some(column) if column.data_type() == expected => Arc::clone(column),
            Some(column) => {
                return Err(Error::invalid(
                    name,
                    format!(
                        "the log holds `{name}` as {}, but the service version asked for declares {value}; export the rows of one service version (`feature_service: name@N`)",
                        column.data_type()
                    ),
                ));
            }
            None => new_null_array(expected, batch.num_rows()),
        });
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

fn join_log_batch(
    batch: &RecordBatch,
    plan: &LogPlan,
    schema: &SchemaRef,
    stats: &JoinStats,
) -> Result<RecordBatch> {
    let keys = plan
        .label_keys
        .iter()
        .map(|(i, key)| normalize_key(batch.column(*i), *key))
        .collect::<Result<Vec<_>, _>>()?;
    let t = match plan.t_index {
        Some(t_index) => label_times(batch, t_index)?,
        // By request id: the request's latest logged row, whenever it was served.
        None => TimestampMicrosecondArray::from(vec![i64::MAX; batch.num_rows()]),
    };
    let chosen = plan.index.probe(&keys, &t)?;
    for (_, matched) in &stats.matched {
        matched.fetch_add(
            (chosen.len() - chosen.null_count()) as u64,
            Ordering::Relaxed,
        );
    }
    let mut gathered = plan.index.gather(&chosen)?;
    let extra = gathered.split_off(plan.n_features);
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.extend(gathered);
    columns.push(Arc::new(plan.index.event_times(&chosen)));
    columns.extend(extra);
    stats
        .label_rows
        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}
