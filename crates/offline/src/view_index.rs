//! One view's side of a point-in-time join: its rows in the labels' time range, indexed by key
//! and sorted by row order, probed label batch by label batch.
//!
//! Rows get ids in (file order, row order). A counting sort groups row ids by key slot (stably,
//! so ids ascend within a key); each key's run is then sorted by `(event_ts, created_ts, id)`,
//! which is usually a no-op check because data tends to arrive in time order. A probe at `t`
//! binary-searches the key's run for the last `event_ts <= t` and walks back past rows created
//! after `t` (as-known-at mode) until the TTL bound: the first row that
//! `quiver_core::semantics::is_candidate` accepts is the greatest candidate, and among equal
//! rows the one with the greatest id, as in `scan_latest`.

use std::sync::Arc;

use arrow::array::MutableArrayData;
use arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, TimestampMicrosecondArray, UInt32Array, new_null_array,
};
use arrow::compute::{concat, take};
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use futures::TryStreamExt;
use quiver_core::ResolvedView;
use quiver_core::model::Feature;
use quiver_core::semantics::{is_candidate, within_ttl};

use crate::ViewReader;
use crate::error::{Error, Result};
use crate::key_index::{KeyIndex, NO_SLOT};
use crate::latest::key_types;
use crate::memory::Held;
use crate::scan::{ScanSpec, Unit, plan_units, read_unit, run_units};

#[derive(Debug)]
pub(crate) struct ViewIndex {
    keys: KeyIndex,
    /// Per slot `s`, its rows are `order[starts[s]..starts[s + 1]]`.
    starts: Vec<u32>,
    order: Vec<u32>,
    /// `event_ts` of `order[i]`.
    events: Vec<i64>,
    /// `event_ts` by row id (rows without a slot included), kept only when asked for.
    row_events: Option<Vec<i64>>,
    /// `created_ts` of `order[i]`, kept only for as-known-at joins of sources that have it.
    created: Option<Vec<Option<i64>>>,
    features: Vec<ArrayRef>,
    feature_types: Vec<DataType>,
    ttl: i64,
    as_known_at: bool,
    /// The budget this index holds (none for indexes of rows read elsewhere).
    memory: Option<Arc<Held>>,
}

/// A view's scan over a time range, planned but not read: the units of its files.
pub(crate) struct ViewScan {
    pub(crate) spec: Arc<ScanSpec>,
    pub(crate) units: Vec<Unit>,
    pub(crate) ttl: i64,
    /// Keeps the listed push-log files until the scan is dropped.
    _hold: Option<crate::PushLogGuard>,
}

impl ViewScan {
    /// Lists and plans the view's files for `features` of rows with `start <= event_ts < end`.
    pub(crate) async fn plan(
        reader: &ViewReader,
        view: &ResolvedView,
        features: &[&Feature],
        (start, end): (i64, i64),
    ) -> Result<ViewScan> {
        let spec = Arc::new(ScanSpec::new(view, features, start, end));
        // An empty range (no label has a time) reads nothing.
        let (files, hold) = if start < end {
            let (files, hold) = crate::files::view_files(reader, view).await?;
            (files, Some(hold))
        } else {
            (Vec::new(), None)
        };
        let units = plan_units(files, Arc::clone(&spec), reader).await?;
        Ok(ViewScan {
            spec,
            units,
            ttl: view.ttl,
            _hold: hold,
        })
    }

    /// About the bytes its rows take in memory (`Unit::estimated_bytes`).
    pub(crate) fn estimated_bytes(&self) -> usize {
        self.units.iter().map(Unit::estimated_bytes).sum()
    }
}

impl ViewIndex {
    /// Reads the rows of `scan` and indexes them, paying every batch read from the budget.
    pub(crate) async fn build(
        reader: &ViewReader,
        scan: &ViewScan,
        as_known_at: bool,
        keep_events: bool,
    ) -> Result<ViewIndex> {
        let spec = Arc::clone(&scan.spec);
        let held = Arc::new(
            reader
                .memory
                .reserve(format!("the join's index of view `{}`", spec.view)),
        );
        let paying = Arc::clone(&held);
        let per_unit: Vec<Vec<RecordBatch>> = run_units(
            scan.units.clone(),
            Arc::clone(&spec),
            reader.parallelism,
            move |unit, spec| {
                let mut batches = Vec::new();
                read_unit(unit, spec, &mut |batch| {
                    paying.grow(batch.get_array_memory_size())?;
                    batches.push(batch);
                    Ok(())
                })?;
                Ok(batches)
            },
        )
        .try_collect()
        .await?;
        let ttl = scan.ttl;
        tokio::task::spawn_blocking(move || {
            Self::from_read(&spec, per_unit, ttl, (as_known_at, keep_events), held)
        })
        .await?
    }

    /// Blocking: indexes rows read under `held`, which then holds what the index keeps.
    pub(crate) fn from_read(
        spec: &ScanSpec,
        per_unit: Vec<Vec<RecordBatch>>,
        ttl: i64,
        options: (bool, bool),
        held: Arc<Held>,
    ) -> Result<ViewIndex> {
        let mut index = index_rows(spec, per_unit, ttl, options)?;
        // The read batches are gone; what the index keeps stays reserved.
        held.resize(index.memory_size())?;
        index.memory = Some(held);
        Ok(index)
    }

    /// Bytes the index holds: its feature columns and its row vectors.
    fn memory_size(&self) -> usize {
        let features: usize = self
            .features
            .iter()
            .map(|f| f.get_array_memory_size())
            .sum();
        let vectors = 4 * (self.starts.capacity() + self.order.capacity())
            + 8 * (self.events.capacity() + self.row_events.as_ref().map_or(0, Vec::capacity))
            + 16 * self.created.as_ref().map_or(0, Vec::capacity);
        features + vectors + self.keys.memory_size()
    }

    /// Blocking: indexes rows already read, `batches` in `spec`'s schema and row order (how
    /// the served-row log is joined: its rows are not a view's, but are chosen the same way).
    pub(crate) fn from_batches(
        spec: &ScanSpec,
        batches: Vec<RecordBatch>,
        ttl: i64,
        keep_events: bool,
    ) -> Result<ViewIndex> {
        index_rows(spec, vec![batches], ttl, (false, keep_events))
    }

    /// For each label row (normalized key columns, time `t`), the id of the chosen view row,
    /// or null when there is no candidate.
    pub(crate) fn probe(
        &self,
        keys: &[ArrayRef],
        t: &TimestampMicrosecondArray,
    ) -> Result<UInt32Array> {
        let n_rows = t.len();
        let mut slots = Vec::new();
        self.keys.lookup(keys, n_rows, &mut slots)?;
        let chosen = (0..n_rows).map(|i| {
            let slot = slots[i];
            if slot == NO_SLOT || t.is_null(i) {
                return None;
            }
            self.latest_candidate(slot as usize, t.value(i))
        });
        Ok(chosen.collect())
    }

    fn latest_candidate(&self, slot: usize, t: i64) -> Option<u32> {
        let (lo, hi) = (self.starts[slot] as usize, self.starts[slot + 1] as usize);
        let events = &self.events[lo..hi];
        let mut p = events.partition_point(|e| *e <= t);
        while p > 0 {
            p -= 1;
            // `created` is kept only for as-known-at joins; without it no row is too late.
            let created = self.created.as_ref().and_then(|c| c[lo + p]);
            if is_candidate(events[p], created, t, self.ttl, self.as_known_at) {
                return Some(self.order[lo + p]);
            }
            if !within_ttl(events[p], t, self.ttl) {
                return None; // Older rows are further out of the TTL window.
            }
        }
        None
    }

    /// The event times of the `chosen` rows (null where nothing was chosen).
    pub(crate) fn event_times(&self, chosen: &UInt32Array) -> TimestampMicrosecondArray {
        let events = chosen
            .iter()
            .map(|row| row.and_then(|row| Some(*self.row_events.as_ref()?.get(row as usize)?)));
        TimestampMicrosecondArray::from_iter(events).with_timezone(crate::arrow_types::UTC)
    }

    /// The feature columns gathered at `chosen` (null where nothing was chosen).
    pub(crate) fn gather(&self, chosen: &UInt32Array) -> Result<Vec<ArrayRef>> {
        if chosen.null_count() == chosen.len() {
            return Ok(self
                .feature_types
                .iter()
                .map(|t| new_null_array(t, chosen.len()))
                .collect());
        }
        Ok(self
            .features
            .iter()
            .map(|f| take(f.as_ref(), chosen, None))
            .collect::<Result<_, _>>()?)
    }
}

/// A stable counting sort of row ids by slot; rows without a slot are left out.
fn group_by_slot(slots: &[u32], n_slots: usize) -> (Vec<u32>, Vec<u32>) {
    let mut starts = vec![0u32; n_slots + 1];
    for slot in slots.iter().filter(|s| **s != NO_SLOT) {
        starts[*slot as usize + 1] += 1;
    }
    for s in 0..n_slots {
        starts[s + 1] += starts[s];
    }
    let mut next = starts.clone();
    let mut order = vec![0u32; starts[n_slots] as usize];
    for (row, slot) in slots.iter().enumerate() {
        if *slot != NO_SLOT {
            let at = &mut next[*slot as usize];
            order[*at as usize] = row as u32;
            *at += 1;
        }
    }
    (starts, order)
}

/// Sorts each slot's run of row ids by `(event_ts, created_ts, id)`.
fn sort_runs(starts: &[u32], order: &mut [u32], events: &[i64], created: Option<&[Option<i64>]>) {
    let key = |r: u32| {
        let r = r as usize;
        (events[r], created.and_then(|c| c[r]), r)
    };
    for run in starts.windows(2) {
        let run = &mut order[run[0] as usize..run[1] as usize];
        if !run.windows(2).all(|w| key(w[0]) <= key(w[1])) {
            run.sort_unstable_by_key(|r| key(*r));
        }
    }
}

/// Indexes the rows read for a join (sorting and hashing: CPU work for the blocking pool).
fn index_rows(
    spec: &ScanSpec,
    per_unit: Vec<Vec<RecordBatch>>,
    ttl: i64,
    (as_known_at, keep_events): (bool, bool),
) -> Result<ViewIndex> {
    // Column-major, so each column's pieces are freed as soon as it is concatenated.
    let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); spec.schema.fields().len()];
    for batch in per_unit.into_iter().flatten() {
        for (i, column) in batch.columns().iter().enumerate() {
            columns[i].push(Arc::clone(column));
        }
    }
    let n_rows: usize = columns[spec.event_index()].iter().map(|c| c.len()).sum();
    if u32::try_from(n_rows).is_err() {
        return Err(Error::TooLarge(format!(
            "view `{}` has {n_rows} rows in the labels' time range; a join handles at most {} per view (split the label table by time)",
            spec.view,
            u32::MAX - 1
        )));
    }
    let (keys, slots, mut times) = key_rows(spec, &columns, n_rows)?;
    for column in columns.iter_mut().take(spec.first_feature_index()) {
        column.clear();
    }
    let (starts, mut order) = group_by_slot(&slots, keys.len());
    drop(slots);
    sort_runs(&starts, &mut order, &times.events, times.created.as_deref());
    let sorted_events = order.iter().map(|r| times.events[*r as usize]).collect();
    let sorted_created = match (as_known_at, &times.created) {
        (true, Some(created)) => Some(order.iter().map(|r| created[*r as usize]).collect()),
        _ => None,
    };
    let row_events = keep_events.then(|| std::mem::take(&mut times.events));
    drop(times);
    let feature_columns = concat_features(spec, &mut columns)?;
    Ok(ViewIndex {
        keys,
        starts,
        order,
        events: sorted_events,
        row_events,
        created: sorted_created,
        features: feature_columns,
        feature_types: spec
            .features
            .iter()
            .map(|(_, t)| crate::arrow_types::value_type(*t))
            .collect(),
        ttl,
        as_known_at,
        memory: None,
    })
}

/// Event and created times of every row, in row-id order.
struct RowTimes {
    events: Vec<i64>,
    /// Present when the source has a created-time column.
    created: Option<Vec<Option<i64>>>,
}

/// Assigns every row its key's slot (none for a row without an event time) and collects the
/// rows' times.
fn key_rows(
    spec: &ScanSpec,
    columns: &[Vec<ArrayRef>],
    n_rows: usize,
) -> Result<(KeyIndex, Vec<u32>, RowTimes)> {
    let mut keys = KeyIndex::new(&key_types(&spec.schema, spec.n_keys()))?;
    let mut slots: Vec<u32> = Vec::with_capacity(n_rows);
    let mut times = RowTimes {
        events: Vec::with_capacity(n_rows),
        created: spec.created_index().map(|_| Vec::with_capacity(n_rows)),
    };
    let mut batch_slots = Vec::new();
    for (piece, event) in columns[spec.event_index()].iter().enumerate() {
        let key_columns: Vec<ArrayRef> = columns[..spec.n_keys()]
            .iter()
            .map(|pieces| Arc::clone(&pieces[piece]))
            .collect();
        let event = event.as_primitive::<TimestampMicrosecondType>();
        keys.assign(&key_columns, event.len(), &mut batch_slots)?;
        for (row, slot) in batch_slots.iter().enumerate() {
            // A row without an event time has no place in row order.
            slots.push(if event.is_valid(row) { *slot } else { NO_SLOT });
        }
        times.events.extend_from_slice(event.values());
        if let (Some(created), Some(index)) = (&mut times.created, spec.created_index()) {
            let column = columns[index][piece].as_primitive::<TimestampMicrosecondType>();
            created.extend((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i))));
        }
    }
    Ok((keys, slots, times))
}

/// Each feature's pieces concatenated into one column (taken out of `columns`).
fn concat_features(spec: &ScanSpec, columns: &mut [Vec<ArrayRef>]) -> Result<Vec<ArrayRef>> {
    let mut feature_columns = Vec::with_capacity(spec.features.len());
    for j in 0..spec.features.len() {
        let index = spec.first_feature_index() + j;
        let pieces = std::mem::take(&mut columns[index]);
        let column = match pieces.as_slice() {
            [] => arrow::array::new_empty_array(spec.schema.field(index).data_type()),
            // `concat` would return it as is, sharing buffers with the other columns of its
            // batch (one IPC message for a spilled partition): copied, only it is kept.
            [piece] => {
                let data = piece.to_data();
                let mut copy = MutableArrayData::new(vec![&data], false, piece.len());
                copy.try_extend(0, 0, piece.len())?;
                arrow::array::make_array(copy.freeze())
            }
            _ => {
                let refs: Vec<&dyn Array> = pieces.iter().map(|c| c.as_ref()).collect();
                concat(&refs)?
            }
        };
        tracing::trace!(feature = %spec.schema.field(index).name(), rows = column.len(), "indexed");
        feature_columns.push(column);
    }
    Ok(feature_columns)
}
