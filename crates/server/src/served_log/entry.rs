//! One request's sampled rows, taken from a finished online read on the request path. When
//! every row is sampled, the read's keys and values move into the entry (no copy); otherwise
//! only the sampled rows are copied. Nothing is encoded here (the writer thread does that).

use std::sync::Arc;

use quiver_core::logging::{is_sampled, key_hash};
use quiver_core::types::Micros;
use quiver_core::value::{KeyValue, Value};

use crate::online_read::{OnlineRead, Served, ViewRead};

/// Which rows of a read are logged, decided before the response is built.
#[derive(Debug)]
pub(crate) struct Sampled {
    pub(crate) service: Arc<str>,
    pub(crate) version: u32,
    /// `None`: every row.
    pub(crate) rows: Option<Vec<usize>>,
}

/// The sampled rows of one GetOnlineFeatures call of a feature service.
#[derive(Debug)]
pub(crate) struct LogEntry {
    pub(crate) service: Arc<str>,
    pub(crate) version: u32,
    pub(crate) request_id: Arc<str>,
    pub(crate) served_at: Micros,
    /// Per selected view: the rows' keys (the view's join-key order) and what was served.
    pub(crate) views: Vec<LoggedView>,
    pub(crate) rows: usize,
    /// A rough size of the rows in memory, for the queue and the rate bound.
    pub(crate) bytes: usize,
}

/// The logged rows of one selected view.
#[derive(Debug)]
pub(crate) struct LoggedView {
    /// Each row's key, in the view's join-key order.
    pub(crate) keys: Vec<Vec<KeyValue>>,
    /// What was served for each row.
    pub(crate) read: ViewRead,
    /// The view's features selected, as positions in the read version's features.
    pub(crate) positions: Vec<usize>,
}

impl LoggedView {
    /// The value served for selected feature `f` of each row (`Value::Null` unless
    /// `PRESENT`) and its status.
    pub(crate) fn feature(
        &self,
        f: usize,
    ) -> impl Iterator<Item = (&Value, quiver_core::semantics::FeatureStatus)> {
        let position = self.positions.get(f).copied().unwrap_or(usize::MAX);
        self.read.rows.iter().map(move |row| {
            let (value, status) = row.value(position);
            (value.unwrap_or(&NULL), status)
        })
    }
}

static NULL: Value = Value::Null;

/// Which rows of `read` are logged under `threshold`: by the hash of each row's join keys
/// (every view's, in selection order, each name once), so a key is logged on every request.
pub(crate) fn sampled_rows(read: &OnlineRead, threshold: u64) -> Option<Vec<usize>> {
    if threshold == u64::MAX {
        return None;
    }
    let sources = read.selection.distinct_keys();
    let rows: Vec<usize> = (0..read.n_rows)
        .filter(|row| {
            let keys = sources.iter().map(|(v, k, _)| &read.keys[*v][*row][*k]);
            is_sampled(key_hash(keys), threshold)
        })
        .collect();
    Some(rows)
}

impl LogEntry {
    /// The sampled rows of a finished read: `keys` (taken from the read) and `views` move in
    /// when every row is sampled, else the sampled rows are copied.
    pub(crate) fn new(
        sampled: Sampled,
        keys: Vec<Vec<Vec<KeyValue>>>,
        (views, positions): (Vec<ViewRead>, Vec<Vec<usize>>),
        request_id: Arc<str>,
        served_at: Micros,
    ) -> LogEntry {
        let views: Vec<LoggedView> = keys
            .into_iter()
            .zip(views)
            .zip(positions)
            .map(|((keys, read), positions)| match &sampled.rows {
                None => LoggedView {
                    keys,
                    read,
                    positions,
                },
                Some(rows) => LoggedView {
                    keys: pick(&keys, rows),
                    read: ViewRead {
                        rows: pick(&read.rows, rows),
                    },
                    positions,
                },
            })
            .collect();
        let rows = views.first().map_or(0, |v| v.read.rows.len());
        let bytes = 64 + request_id.len() + views.iter().map(view_bytes).sum::<usize>();
        LogEntry {
            service: sampled.service,
            version: sampled.version,
            request_id,
            served_at,
            views,
            rows,
            bytes,
        }
    }
}

fn pick<T: Clone>(items: &[T], rows: &[usize]) -> Vec<T> {
    rows.iter().map(|r| items[*r].clone()).collect()
}

/// The entry holds whole stored rows (every feature of each, not only the selected ones):
/// all of their values count.
fn view_bytes(view: &LoggedView) -> usize {
    let keys: usize = view.keys.iter().flatten().map(key_bytes).sum();
    let values: usize = view
        .read
        .rows
        .iter()
        .map(|row| match row {
            Served::Fresh(row) => row.values.iter().map(value_bytes).sum(),
            Served::Projected { values, .. } => values.iter().map(value_bytes).sum(),
            Served::NotFound | Served::OutsideMaxAge { .. } => 0,
        })
        .sum();
    let statuses = view.positions.len() * view.read.rows.len();
    keys + values + statuses + 9 * view.read.rows.len()
}

fn key_bytes(key: &KeyValue) -> usize {
    match key {
        KeyValue::Int64(_) => 8,
        KeyValue::Int32(_) => 4,
        KeyValue::String(s) => s.len(),
        KeyValue::Bytes(b) => b.len(),
    }
}

fn value_bytes(value: &Value) -> usize {
    match value {
        Value::Null => 1,
        Value::Bool(_) => 1,
        Value::Int32(_) | Value::Float32(_) => 4,
        Value::Int64(_) | Value::Float64(_) | Value::Timestamp(_) => 8,
        Value::String(s) => s.len(),
        Value::Bytes(b) => b.len(),
        Value::List(items) => items.iter().map(value_bytes).sum::<usize>() + 4,
    }
}
