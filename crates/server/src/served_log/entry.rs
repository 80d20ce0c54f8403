//! One request's sampled rows, taken from a finished online read on the request path: only
//! the sampled rows are copied, nothing is encoded here (the writer thread does that).

use std::sync::Arc;

use quiver_core::logging::{is_sampled, key_hash};
use quiver_core::semantics::FeatureStatus;
use quiver_core::types::Micros;
use quiver_core::value::{KeyValue, Value};

use crate::online_read::{OnlineRead, ViewRead};

/// The sampled rows of one GetOnlineFeatures call of a feature service.
#[derive(Debug)]
pub(crate) struct LogEntry {
    pub(crate) service: Arc<str>,
    pub(crate) version: u32,
    pub(crate) request_id: Arc<str>,
    pub(crate) served_at: Micros,
    /// Per selected view: the sampled rows' keys (the view's join-key order), what was served.
    pub(crate) views: Vec<LoggedView>,
    pub(crate) rows: usize,
    /// A rough size of the rows in memory, for the queue and the rate bound.
    pub(crate) bytes: usize,
}

#[derive(Debug)]
pub(crate) struct LoggedView {
    pub(crate) keys: Vec<Vec<KeyValue>>,
    /// The served row's event time; `None` when no row was found.
    pub(crate) event_times: Vec<Option<Micros>>,
    /// Per selected feature: values and statuses.
    pub(crate) features: Vec<(Vec<Value>, Vec<FeatureStatus>)>,
}

/// Which rows of `read` are logged under `threshold`: by the hash of each row's join keys
/// (every view's, in selection order, each name once), so a key is logged on every request.
pub(crate) fn sampled_rows(read: &OnlineRead, threshold: u64) -> Vec<usize> {
    if threshold == u64::MAX {
        return (0..read.n_rows).collect();
    }
    // (view, position) of each distinct join-key name, in first-seen order.
    let mut names: Vec<&str> = Vec::new();
    let mut sources = Vec::new();
    for (v, selected) in read.selection.views.iter().enumerate() {
        for (k, key) in selected.view.join_keys.iter().enumerate() {
            if !names.contains(&key.name.as_str()) {
                names.push(&key.name);
                sources.push((v, k));
            }
        }
    }
    (0..read.n_rows)
        .filter(|row| {
            let keys = sources.iter().map(|(v, k)| &read.keys[*v][*row][*k]);
            is_sampled(key_hash(keys), threshold)
        })
        .collect()
}

impl LogEntry {
    /// The `rows` of a finished read, copied.
    pub(crate) fn new(
        read: &OnlineRead,
        views: &[ViewRead],
        rows: &[usize],
        request_id: Arc<str>,
        served_at: Micros,
    ) -> Option<LogEntry> {
        let service = read.selection.service.as_ref()?;
        let mut bytes = 64 + request_id.len();
        let logged = read
            .keys
            .iter()
            .zip(views)
            .map(|(keys, view)| {
                let keys: Vec<Vec<KeyValue>> = rows.iter().map(|r| keys[*r].clone()).collect();
                bytes += keys.iter().flatten().map(key_bytes).sum::<usize>();
                let features = view
                    .features
                    .iter()
                    .map(|f| {
                        let values: Vec<Value> =
                            rows.iter().map(|r| f.values[*r].clone()).collect();
                        bytes += values.iter().map(value_bytes).sum::<usize>() + rows.len();
                        (values, rows.iter().map(|r| f.statuses[*r]).collect())
                    })
                    .collect();
                let event_times = rows
                    .iter()
                    .map(|r| view.found[*r].then_some(view.event_timestamps[*r]))
                    .collect();
                bytes += 8 * rows.len();
                LoggedView {
                    keys,
                    event_times,
                    features,
                }
            })
            .collect();
        Some(LogEntry {
            service: Arc::from(service.name.as_str()),
            version: service.version,
            request_id,
            served_at,
            views: logged,
            rows: rows.len(),
            bytes,
        })
    }
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
