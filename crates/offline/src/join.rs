//! The point-in-time join (SEMANTICS.md "Point-in-time join").
//!
//! Plan: validate the label table against the request; find the labels' time range; for each
//! view, read and index its rows with `event_ts` in `[min t - ttl, max t]` ([`ViewIndex`]);
//! then stream the label batches in order, probing every view for each batch and appending
//! the gathered feature columns. No per-label query, no cross join: the work is one scan per
//! view plus, per label row, a hash lookup and a binary search.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use quiver_core::ResolvedView;
use quiver_core::model::Feature;
use quiver_core::selection::{SelectedView, collisions};
use quiver_core::types::KeyType;

use crate::arrow_types::{key_compatible, normalize_key, to_micros, value_type};
use crate::error::{Error, Result};
use crate::labels::{LabelInput, Labels};
use crate::spilled_join::{LabelSide, SpilledColumns, SpilledReader, SpilledView, partition_count};
use crate::view_index::{ViewIndex, ViewScan};
use crate::{OfflineStore, ViewReader};

#[derive(Debug)]
pub struct JoinRequest {
    pub labels: LabelInput,
    /// The label time column (any timestamp unit; without a zone read as UTC).
    pub timestamp_column: String,
    /// The views to join and their features, resolved by `quiver_core::selection`.
    pub views: Vec<SelectedView>,
    /// Name feature columns `prefix__feature` instead of `feature`.
    pub full_names: bool,
    /// Also require `created_ts <= t` ("as known at t").
    pub as_known_at: bool,
    /// After each view's features, `<prefix>.event_time`: the chosen row's event time (null
    /// when none was chosen). Names never contain `.`, so it cannot collide.
    pub event_times: bool,
}

/// A result table as a stream of batches in label (or file) order.
pub struct JoinOutput {
    pub schema: SchemaRef,
    pub stream: BoxStream<'static, Result<RecordBatch>>,
    pub stats: Arc<JoinStats>,
}

impl std::fmt::Debug for JoinOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinOutput")
            .field("schema", &self.schema)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Counters updated while the output streams.
#[derive(Debug, Default)]
pub struct JoinStats {
    /// Rows output so far (label rows for a join).
    pub label_rows: AtomicU64,
    /// Per view prefix, output rows that found a row of that view.
    pub matched: Vec<(String, AtomicU64)>,
    /// Partitions spilled to disk by views that did not fit the memory budget (0: none).
    pub spilled_partitions: AtomicU64,
}

impl JoinStats {
    pub(crate) fn new(prefixes: impl IntoIterator<Item = String>) -> Self {
        JoinStats {
            label_rows: AtomicU64::new(0),
            spilled_partitions: AtomicU64::new(0),
            matched: prefixes
                .into_iter()
                .map(|p| (p, AtomicU64::new(0)))
                .collect(),
        }
    }
}

/// What the join needs to know about one view, after validation.
struct ViewPlan {
    /// Label column index and key type of each join key, in the view's key order.
    label_keys: Vec<(usize, KeyType)>,
    probe: Probe,
    /// Whether the chosen rows' event times are output after the features.
    event_times: bool,
}

/// How a view's features are found for a label batch.
enum Probe {
    /// Its rows fit the memory budget: probe their index.
    Memory(Box<ViewIndex>),
    /// Joined in partitions spilled to disk: the columns of spilled view `i`, read back in
    /// label order before the batch is joined.
    Spilled(usize),
}

impl OfflineStore {
    /// The point-in-time join: exactly one output row per label row, in label order, with
    /// all label columns unchanged, then the requested features of each view in request
    /// order. Invalid requests fail before any view data is read.
    pub async fn point_in_time_join(&self, request: JoinRequest) -> Result<JoinOutput> {
        let labels = Labels::open(self, request.labels).await?;
        let schema = Arc::clone(&labels.schema);
        let t_index = timestamp_column(&schema, &request.timestamp_column)?;
        let mut output_fields: Vec<Field> =
            schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        let mut label_keys = Vec::new();
        for join_view in &request.views {
            label_keys.push(label_key_columns(&schema, &join_view.view)?);
            let features: Vec<&Feature> = join_view.selected_features().collect();
            for feature in &features {
                let name = join_view.output_name(&feature.name, request.full_names);
                output_fields.push(Field::new(name, value_type(feature.value_type), true));
            }
            if request.event_times {
                let name = format!("{}.event_time", join_view.prefix);
                output_fields.push(Field::new(name, crate::arrow_types::timestamp_type(), true));
            }
        }
        let names = collisions(output_fields.iter().map(|f| f.name().as_str()));
        if !names.is_empty() {
            return Err(Error::NameCollision { names });
        }
        let stats = Arc::new(JoinStats::new(
            request.views.iter().map(|v| v.prefix.clone()),
        ));
        let output_schema = Arc::new(Schema::new(output_fields));
        // The views are read and indexed when the stream is first polled: a planned export
        // (a parked Flight ticket) holds no view data.
        let reader = self.view_reader();
        let (views_of, options) = (request.views, (request.as_known_at, request.event_times));
        let deferred = {
            let (schema, stats) = (Arc::clone(&output_schema), Arc::clone(&stats));
            async move {
                let bounds = labels.time_bounds(t_index).await?;
                let views = (&labels, t_index, bounds);
                let (plans, spilled) =
                    plan_views(&reader, views, &views_of, label_keys, options).await?;
                let n: usize = spilled.iter().map(SpilledView::partitions).sum();
                stats.spilled_partitions.store(n as u64, Ordering::Relaxed);
                let batches = with_spilled(labels.stream().await?, spilled);
                Ok::<_, Error>(map_labels(batches, reader.parallelism, {
                    move |(batch, spilled)| {
                        join_batch(&batch, &spilled, t_index, &plans, &schema, &stats)
                    }
                }))
            }
        };
        Ok(JoinOutput {
            schema: output_schema,
            stream: futures::stream::once(deferred).try_flatten().boxed(),
            stats,
        })
    }
}

/// Reads and indexes every view over the labels' time `bounds`; a view whose rows would not
/// fit what is left of the memory budget is joined in partitions spilled to disk.
async fn plan_views(
    reader: &ViewReader,
    (labels, t_index, bounds): (&Labels, usize, Option<(i64, i64)>),
    views: &[SelectedView],
    label_keys: Vec<Vec<(usize, KeyType)>>,
    (as_known_at, event_times): (bool, bool),
) -> Result<(Vec<ViewPlan>, Vec<SpilledView>)> {
    let (mut plans, mut spilled) = (Vec::new(), Vec::new());
    for (join_view, label_keys) in views.iter().zip(label_keys) {
        let features: Vec<&Feature> = join_view.selected_features().collect();
        let view = &join_view.view;
        // No label time: no row can be chosen, so read nothing.
        let range = match bounds {
            Some((min_t, max_t)) if view.ttl > 0 => {
                (min_t.saturating_sub(view.ttl), max_t.saturating_add(1))
            }
            Some((_, max_t)) => (i64::MIN, max_t.saturating_add(1)),
            None => (0, 0),
        };
        let scan = ViewScan::plan(reader, view, &features, range).await?;
        let (estimated, available) = (scan.estimated_bytes(), reader.memory.available());
        // In memory when it fits with a margin for the estimate; if it did not after all, the
        // rows read are given back and the view is joined in partitions.
        let mut partitions = reader.forced_partitions;
        if partitions.is_none() && estimated <= available / 10 * 9 {
            match ViewIndex::build(reader, &scan, as_known_at, event_times).await {
                Ok(index) => {
                    plans.push(ViewPlan {
                        label_keys,
                        probe: Probe::Memory(Box::new(index)),
                        event_times,
                    });
                    continue;
                }
                Err(Error::OverBudget(why)) => {
                    tracing::info!(view = %view.name, %why, "the view's rows did not fit after all");
                    partitions = Some(partition_count(
                        available.max(estimated).saturating_mul(2),
                        reader.memory.available(),
                        reader.parallelism,
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        let n =
            partitions.unwrap_or_else(|| partition_count(estimated, available, reader.parallelism));
        let side = LabelSide {
            keys: label_keys.clone(),
            t_index,
            as_known_at,
        };
        spilled.push(SpilledView::join(reader, scan, labels, side, n).await?);
        plans.push(ViewPlan {
            label_keys,
            probe: Probe::Spilled(spilled.len() - 1),
            event_times,
        });
    }
    Ok((plans, spilled))
}

/// Label batches paired with the columns of each spilled view for their rows, read back
/// in order (one batch at a time, so the result files are read sequentially).
fn with_spilled(
    stream: BoxStream<'static, Result<RecordBatch>>,
    spilled: Vec<SpilledView>,
) -> BoxStream<'static, Result<(RecordBatch, Vec<SpilledColumns>)>> {
    if spilled.is_empty() {
        return stream.map_ok(|batch| (batch, Vec::new())).boxed();
    }
    let readers: Vec<SpilledReader> = spilled.into_iter().map(SpilledReader::new).collect();
    let readers = Arc::new(std::sync::Mutex::new(readers));
    let at_end = Arc::clone(&readers);
    // After the last label batch: every spilled result row must have been taken.
    let finish = futures::stream::once(async move {
        tokio::task::spawn_blocking(move || {
            let mut readers = at_end
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            readers.iter_mut().try_for_each(SpilledReader::finish)
        })
        .await?
    })
    .try_filter_map(|()| futures::future::ready(Ok(None)));
    stream
        .and_then(move |batch| {
            let readers = Arc::clone(&readers);
            async move {
                tokio::task::spawn_blocking(move || {
                    let mut readers = readers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    let columns = readers
                        .iter_mut()
                        .map(|reader| reader.take(&batch))
                        .collect::<Result<Vec<_>>>()?;
                    Ok((batch, columns))
                })
                .await?
            }
        })
        .chain(finish)
        .boxed()
}

/// The items of `stream`, each mapped by `join` on the blocking pool, `parallelism` at a
/// time, in order.
pub(crate) fn map_labels<T, F>(
    stream: BoxStream<'static, Result<T>>,
    parallelism: usize,
    join: F,
) -> BoxStream<'static, Result<RecordBatch>>
where
    T: Send + 'static,
    F: Fn(T) -> Result<RecordBatch> + Send + Sync + 'static,
{
    let join = Arc::new(join);
    stream
        .map(move |item| {
            let join = Arc::clone(&join);
            async move {
                let item = item?;
                tokio::task::spawn_blocking(move || join(item)).await?
            }
        })
        .buffered(parallelism.max(1))
        .boxed()
}

fn join_batch(
    batch: &RecordBatch,
    spilled: &[SpilledColumns],
    t_index: usize,
    plans: &[ViewPlan],
    schema: &SchemaRef,
    stats: &JoinStats,
) -> Result<RecordBatch> {
    let t = label_times(batch, t_index)?;
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    for (plan, (_, matched)) in plans.iter().zip(&stats.matched) {
        let (features, events, found) = match &plan.probe {
            Probe::Memory(index) => {
                let keys = plan
                    .label_keys
                    .iter()
                    .map(|(i, key)| normalize_key(batch.column(*i), *key))
                    .collect::<Result<Vec<_>, _>>()?;
                let chosen = index.probe(&keys, &t)?;
                let found = chosen.len() - chosen.null_count();
                let events: Option<ArrayRef> = plan
                    .event_times
                    .then(|| Arc::new(index.event_times(&chosen)) as ArrayRef);
                (index.gather(&chosen)?, events, found)
            }
            Probe::Spilled(i) => {
                let SpilledColumns { features, events } = &spilled[*i];
                let found = events.len() - events.null_count();
                (features.clone(), Some(Arc::clone(events)), found)
            }
        };
        matched.fetch_add(found as u64, Ordering::Relaxed);
        columns.extend(features);
        if plan.event_times {
            columns.extend(events);
        }
    }
    stats
        .label_rows
        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

/// The label times of `batch` (column `t_index`) in microseconds, each a valid time.
pub(crate) fn label_times(
    batch: &RecordBatch,
    t_index: usize,
) -> Result<arrow::array::TimestampMicrosecondArray> {
    let t = to_micros(batch.column(t_index).as_ref())?;
    if let Some(bad) = t
        .iter()
        .flatten()
        .find(|t| !quiver_core::semantics::is_valid_time(*t))
    {
        return Err(Error::invalid(
            batch.schema().field(t_index).name(),
            format!(
                "a label time {}",
                quiver_core::semantics::invalid_time_message(bad)
            ),
        ));
    }
    Ok(t)
}

pub(crate) fn timestamp_column(schema: &Schema, name: &str) -> Result<usize> {
    let index = schema.index_of(name).map_err(|_| {
        Error::invalid(
            "timestamp_column",
            format!(
                "the label table has no column `{name}` (it has: {}); add it or name the label time column",
                crate::arrow_types::column_list(schema)
            ),
        )
    })?;
    let data_type = schema.field(index).data_type();
    if !matches!(data_type, DataType::Timestamp(_, _)) {
        return Err(Error::invalid(
            "timestamp_column",
            format!(
                "label column `{name}` is {data_type}; it must be a timestamp (any unit), so cast it to a timestamp"
            ),
        ));
    }
    Ok(index)
}

/// The label columns holding the view's join keys (by key name), with compatible types.
pub(crate) fn label_key_columns(
    schema: &Schema,
    view: &ResolvedView,
) -> Result<Vec<(usize, KeyType)>> {
    let owner = format!("view `{}`", view.name);
    view.join_keys
        .iter()
        .map(|key| label_key_column(schema, &key.name, key.key_type, &owner))
        .collect()
}

/// The label column `name` holding a join key of `owner` ("view `trips`"), of a type
/// compatible with `key`.
pub(crate) fn label_key_column(
    schema: &Schema,
    name: &str,
    key: KeyType,
    owner: &str,
) -> Result<(usize, KeyType)> {
    let index = schema.index_of(name).map_err(|_| {
        Error::invalid(
            name,
            format!(
                "the label table has no column `{name}`, a join key of {owner} (it has: {}); add the column",
                crate::arrow_types::column_list(schema)
            ),
        )
    })?;
    let actual = schema.field(index).data_type();
    if !key_compatible(actual, key, true) {
        return Err(Error::invalid(
            name,
            format!(
                "label column `{name}` is {actual}, but {owner} keys it as {key}; cast the column to {key}"
            ),
        ));
    }
    Ok((index, key))
}
