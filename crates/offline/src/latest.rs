//! Materialization scan: the latest row per key of a view's data in `[start, end)`.
//!
//! Each scan unit reduces its batches to one row per key ([`LatestReducer`]); the unit
//! results are reduced again in unit order. A row replaces the current winner of its key when
//! its order `(event_ts, created_ts)` is greater *or equal*, so among equal rows the last one in
//! (file order, row order) wins: the same rule as the point-in-time join.
//!
//! Memory is bounded by the number of distinct keys: winners are kept as small batches of
//! taken rows and compacted into one batch when they outgrow twice the number of keys.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::datatypes::{DataType, SchemaRef, TimestampMicrosecondType};
use futures::TryStreamExt;
use quiver_core::ResolvedView;
use quiver_core::model::Feature;
use quiver_core::semantics::{RowOrder, row_order};
use quiver_core::value::Row;

use crate::OfflineStore;
use crate::error::Result;
use crate::key_index::{KeyIndex, NO_SLOT};
use crate::scan::{ScanSpec, plan_units, read_unit, run_units};
use crate::values::{key_at, value_at};

/// Rows per item of [`LatestRows`].
const ROWS_PER_CHUNK: usize = 8192;

impl OfflineStore {
    /// Materialization scan: per key, the latest row of the view's data (source Parquet and
    /// push log) with `start <= event_ts < end`. `observer` sees every row in range as it is
    /// read (an `AtomicU64` counts them). The result iterates over chunks of at most 8192
    /// rows, in no particular key order; rows carry all of the view's features in definition
    /// order.
    pub async fn scan_latest(
        &self,
        view: &ResolvedView,
        start: i64,
        end: i64,
        observer: Arc<dyn ScanObserver>,
    ) -> Result<LatestRows> {
        let features: Vec<&Feature> = view.features.iter().collect();
        let spec = Arc::new(ScanSpec::new(view, &features, start, end));
        let (files, _hold) = crate::files::view_files(&self.view_reader(), view).await?;
        let units = plan_units(files, Arc::clone(&spec), &self.view_reader()).await?;
        let key_types = key_types(&spec.schema, spec.n_keys());
        let partials = run_units(units, Arc::clone(&spec), self.parallelism, {
            let key_types = key_types.clone();
            move |unit, spec| {
                let mut reducer = LatestReducer::new(spec, &key_types)?;
                read_unit(unit, spec, &mut |batch| {
                    observer.observe(&batch);
                    reducer.push(&batch)
                })?;
                reducer.finish()
            }
        });
        futures::pin_mut!(partials);
        let mut reducer = LatestReducer::new(&spec, &key_types)?;
        // The merge is CPU work too: keep it off the runtime's threads.
        while let Some(partial) = partials.try_next().await? {
            if let Some(batch) = partial {
                reducer = tokio::task::spawn_blocking(move || {
                    reducer.push(&batch)?;
                    Ok::<_, crate::Error>(reducer)
                })
                .await??;
            }
        }
        let batch = tokio::task::spawn_blocking(move || reducer.finish()).await??;
        Ok(LatestRows {
            batch,
            spec,
            offset: 0,
        })
    }
}

/// Sees the rows a scan reads, batch by batch, from the scan's parallel units (so at the same
/// time from several threads). Batches have the view's keys, `event_timestamp`,
/// `created_timestamp` when the source has one, and the features under their names.
pub trait ScanObserver: Send + Sync {
    fn observe(&self, batch: &RecordBatch);
}

/// Counts the rows.
impl ScanObserver for AtomicU64 {
    fn observe(&self, batch: &RecordBatch) {
        self.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
    }
}

/// The result of [`OfflineStore::scan_latest`]: an iterator over chunks of rows.
#[derive(Debug)]
pub struct LatestRows {
    batch: Option<RecordBatch>,
    spec: Arc<ScanSpec>,
    offset: usize,
}

impl LatestRows {
    /// The number of rows (distinct keys) in the result.
    pub fn n_rows(&self) -> usize {
        self.batch.as_ref().map_or(0, |b| b.num_rows())
    }
}

impl Iterator for LatestRows {
    type Item = Vec<Row>;

    fn next(&mut self) -> Option<Vec<Row>> {
        let batch = self.batch.as_ref()?;
        if self.offset >= batch.num_rows() {
            return None;
        }
        let end = (self.offset + ROWS_PER_CHUNK).min(batch.num_rows());
        let spec = &self.spec;
        let event = batch
            .column(spec.event_index())
            .as_primitive::<TimestampMicrosecondType>();
        let created = spec
            .created_index()
            .map(|i| batch.column(i).as_primitive::<TimestampMicrosecondType>());
        let rows = (self.offset..end)
            .map(|i| Row {
                key: (0..spec.n_keys())
                    .map(|k| key_at(batch.column(k).as_ref(), i))
                    .collect(),
                event_ts: event.value(i),
                created_ts: created.and_then(|c| c.is_valid(i).then(|| c.value(i))),
                values: batch.columns()[spec.first_feature_index()..]
                    .iter()
                    .map(|c| value_at(c.as_ref(), i))
                    .collect(),
            })
            .collect();
        self.offset = end;
        Some(rows)
    }
}

pub(crate) fn key_types(schema: &SchemaRef, n_keys: usize) -> Vec<DataType> {
    schema.fields()[..n_keys]
        .iter()
        .map(|f| f.data_type().clone())
        .collect()
}

/// Per key, the greatest row by `(event_ts, created_ts)`; later rows win ties.
struct LatestReducer {
    keys: KeyIndex,
    n_keys: usize,
    event: usize,
    created: Option<usize>,
    /// Per slot: the winner's order and where it is (`retained[batch]`, row).
    orders: Vec<RowOrder>,
    locations: Vec<(usize, usize)>,
    retained: Vec<RecordBatch>,
    retained_rows: usize,
    /// Scratch: slots of the current batch, slots it touched and their best row in it.
    slots: Vec<u32>,
    touched: Vec<u32>,
    pending: Vec<u32>,
}

impl LatestReducer {
    fn new(spec: &ScanSpec, key_types: &[DataType]) -> Result<Self> {
        Ok(LatestReducer {
            keys: KeyIndex::new(key_types)?,
            n_keys: spec.n_keys(),
            event: spec.event_index(),
            created: spec.created_index(),
            orders: Vec::new(),
            locations: Vec::new(),
            retained: Vec::new(),
            retained_rows: 0,
            slots: Vec::new(),
            touched: Vec::new(),
            pending: Vec::new(),
        })
    }

    fn push(&mut self, batch: &RecordBatch) -> Result<()> {
        let n_rows = batch.num_rows();
        self.keys
            .assign(&batch.columns()[..self.n_keys], n_rows, &mut self.slots)?;
        let event = batch
            .column(self.event)
            .as_primitive::<TimestampMicrosecondType>();
        let created = self
            .created
            .map(|i| batch.column(i).as_primitive::<TimestampMicrosecondType>());
        let event_values = event.values();
        let new_len = self.keys.len();
        self.orders.resize(new_len, (i64::MIN, None));
        self.locations.resize(new_len, (usize::MAX, 0));
        self.pending.resize(new_len, NO_SLOT);
        for (row, slot) in self.slots.iter().enumerate() {
            if *slot == NO_SLOT || event.is_null(row) {
                continue;
            }
            let slot = *slot as usize;
            let created_ts = created.and_then(|c| c.is_valid(row).then(|| c.value(row)));
            let order = row_order(event_values[row], created_ts);
            // `orders` starts at the least order, so a key's first row always wins.
            if order >= self.orders[slot] {
                if self.pending[slot] == NO_SLOT {
                    self.touched.push(slot as u32);
                }
                self.orders[slot] = order;
                self.pending[slot] = row as u32;
            }
        }
        if self.touched.is_empty() {
            return Ok(());
        }
        let indices =
            UInt32Array::from_iter_values(self.touched.iter().map(|s| self.pending[*s as usize]));
        let winners = take_record_batch(batch, &indices)?;
        let batch_index = self.retained.len();
        for (row, slot) in self.touched.drain(..).enumerate() {
            self.locations[slot as usize] = (batch_index, row);
            self.pending[slot as usize] = NO_SLOT;
        }
        self.retained_rows += winners.num_rows();
        self.retained.push(winners);
        if self.retained_rows > 2 * self.orders.len() + 64 * 1024 {
            self.compact()?;
        }
        Ok(())
    }

    /// Gathers the current winners into one batch, in slot order. A single retained batch
    /// holds only winners already (no later batch has replaced any of its rows).
    fn compact(&mut self) -> Result<()> {
        if self.retained.len() <= 1 {
            return Ok(());
        }
        let mut indices = Vec::with_capacity(self.locations.len());
        for location in self.locations.iter_mut() {
            // Slots of keys whose rows all had a null event time have no winner.
            if location.0 != usize::MAX {
                let row = indices.len();
                indices.push(*location);
                *location = (0, row);
            }
        }
        let batches: Vec<&RecordBatch> = self.retained.iter().collect();
        let compacted = interleave_record_batch(&batches, &indices)?;
        self.retained_rows = compacted.num_rows();
        self.retained = vec![compacted];
        Ok(())
    }

    /// One row per key seen, or `None` if no row was in range.
    fn finish(mut self) -> Result<Option<RecordBatch>> {
        if self.retained.is_empty() {
            return Ok(None);
        }
        self.compact()?;
        Ok(self.retained.pop())
    }
}
