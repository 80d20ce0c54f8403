//! Training sets from the served-row log (`ExportRequest.from_served_log`): label rows joined to
//! the rows a feature service logged, by request id or by keys and time
//! (`quiver_offline::OfflineStore::served_log_join`), so a model trains on what serving saw.

use std::sync::Arc;

use quiver_core::selection::Selection;
use quiver_core::types::Micros;
use quiver_offline::{JoinOutput, LabelInput, LogFeature, LogJoinRequest, LogMatch, OfflineStore};

use super::ServedLog;
use crate::error::{Error, Result};

/// A validated `from_served_log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromServedLog {
    pub join_on: LogJoinOn,
    /// Only rows served in `[start, end)`; None: the whole log.
    pub window: Option<(Micros, Micros)>,
}

/// How label rows find their logged rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogJoinOn {
    /// The label column holding the request id.
    RequestId(String),
    /// The label's keys and time; a row served more than `max_age` before it does not match
    /// (0: no bound).
    Keys { max_age: Micros },
}

impl FromServedLog {
    pub fn from_wire(
        wire: &quiver_proto::v1::ServedLogJoin,
        (start, end): (Micros, Micros),
    ) -> Result<FromServedLog> {
        let join_on = match wire.join_on.as_str() {
            "" | "request_id" if wire.max_age_micros != 0 => {
                return Err(Error::invalid(
                    "from_served_log.max_age_micros",
                    "a maximum age applies to `join_on: keys` only; drop it or join on keys",
                ));
            }
            "" | "request_id" => LogJoinOn::RequestId(match wire.request_id_column.as_str() {
                "" => quiver_offline::REQUEST_ID.to_string(),
                column => column.to_string(),
            }),
            "keys" if !wire.request_id_column.is_empty() => {
                return Err(Error::invalid(
                    "from_served_log.request_id_column",
                    "a request id column applies to `join_on: request_id` only; drop it or join on the request id",
                ));
            }
            "keys" if wire.max_age_micros < 0 => {
                return Err(Error::invalid(
                    "from_served_log.max_age_micros",
                    "give a maximum age of 0 (no bound) or more",
                ));
            }
            "keys" => LogJoinOn::Keys {
                max_age: wire.max_age_micros,
            },
            other => {
                return Err(Error::invalid(
                    "from_served_log.join_on",
                    format!("`{other}` is not a way to join the log; use `request_id` or `keys`"),
                ));
            }
        };
        let window = match (start, end) {
            (0, 0) => None,
            (start, end) if start < end => Some((start, end)),
            _ => {
                return Err(Error::invalid(
                    "start_micros",
                    "the window of logged rows is empty; give start < end, or neither",
                ));
            }
        };
        Ok(FromServedLog { join_on, window })
    }
}

impl FromServedLog {
    /// How the export joined, for its metadata: `request_id:<column>` or `keys`, with the
    /// maximum age and the window when given.
    pub fn describe(&self) -> String {
        let mut text = match &self.join_on {
            LogJoinOn::RequestId(column) => format!("request_id:{column}"),
            LogJoinOn::Keys { max_age: 0 } => "keys".to_string(),
            LogJoinOn::Keys { max_age } => format!("keys,max_age_micros={max_age}"),
        };
        if let Some((start, end)) = self.window {
            text.push_str(&format!(",window=[{start}, {end})"));
        }
        text
    }
}

/// One export from the log: what to join, resolved on a registry snapshot.
#[derive(Debug)]
pub(crate) struct LogExport<'a> {
    pub(crate) selection: &'a Selection,
    /// Whether the request named the service version (`name@N`): then only its rows are read.
    pub(crate) pinned: bool,
    pub(crate) labels: LabelInput,
    pub(crate) timestamp_column: String,
    pub(crate) full_names: bool,
    pub(crate) from: FromServedLog,
    pub(crate) max_rows: u64,
}

impl ServedLog {
    /// Starts the join of `export`: the service's queued rows are flushed first, so every row
    /// logged before the call can match.
    pub(crate) async fn join_labels(
        self: &Arc<Self>,
        offline: &OfflineStore,
        export: LogExport<'_>,
    ) -> Result<JoinOutput> {
        let Some(service) = &export.selection.service else {
            return Err(Error::invalid(
                "features",
                "a training set from the served-row log is built for a feature service; select one with `feature_service`",
            ));
        };
        let name = service.name.clone();
        let window = export.from.window.unwrap_or((Micros::MIN, Micros::MAX));
        let log = Arc::clone(self);
        crate::run_blocking(move || log.flush(&name)).await?;
        export.selection.output_names(export.full_names)?;
        let request = LogJoinRequest {
            labels: export.labels,
            on: match export.from.join_on {
                LogJoinOn::RequestId(column) => LogMatch::RequestId { column },
                LogJoinOn::Keys { max_age } => LogMatch::Keys {
                    timestamp_column: export.timestamp_column,
                    max_age,
                },
            },
            log: self.dir().clone(),
            service: service.name.clone(),
            version: export.pinned.then_some(service.version),
            window,
            keys: export
                .selection
                .distinct_keys()
                .into_iter()
                .map(|(_, _, key)| (key.name.clone(), key.key_type))
                .collect(),
            features: features(export.selection, export.full_names),
            max_rows: (export.max_rows, "--max-log-export-rows"),
        };
        Ok(offline.served_log_join(request).await?)
    }
}

/// Each selected feature's log column (`<prefix>__<feature>`) and output name.
fn features(selection: &Selection, full_names: bool) -> Vec<LogFeature> {
    selection
        .views
        .iter()
        .flat_map(|selected| {
            selected.selected_features().map(move |feature| LogFeature {
                column: selected.output_name(&feature.name, true),
                output: selected.output_name(&feature.name, full_names),
                value_type: feature.value_type,
            })
        })
        .collect()
}
