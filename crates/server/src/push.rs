//! Push ingestion: a columnar wire batch is validated against every target view on receipt
//! ([`PushBatch`]), then [`Pusher`] writes it to the offline log and/or the online store.
//! Nothing of an invalid batch is written.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use quiver_core::value::Row;
use quiver_core::{RegistryState, ResolvedView};
use quiver_offline::OfflineStore;
use quiver_online::RocksStore;
use quiver_proto::convert::{
    column_len, column_to_keys, column_to_micros, column_to_values, columns_by_name,
};
use quiver_proto::v1;

use crate::error::{Error, Result};

/// A validated push: the rows for every target view, and where they go.
#[derive(Debug)]
pub struct PushBatch {
    pub targets: Vec<PushTarget>,
    pub online: bool,
    pub offline: bool,
    pub n_rows: u64,
}

/// One target view and its rows (in source column names, converted to its types).
#[derive(Debug)]
pub struct PushTarget {
    pub view: ResolvedView,
    pub rows: Vec<Row>,
}

/// What a push wrote for one view.
#[derive(Debug, Default)]
pub struct Pushed {
    pub view: String,
    pub version: u32,
    pub written_online: u64,
    pub skipped_older: u64,
    pub written_offline: u64,
}

impl PushBatch {
    /// Validates `request` against `registry`: the target (a push-enabled view, or every view
    /// of a push-enabled source), the mode, and every column for every target view. Rows
    /// without a created-time column get `received_at` where the source has created times.
    pub fn from_wire(
        request: &v1::PushRequest,
        registry: &RegistryState,
        received_at: i64,
    ) -> Result<PushBatch> {
        let views = target_views(request, registry)?;
        let (online, offline) = push_mode(request.mode)?;
        let columns = columns_by_name(&request.columns, "columns")?;
        check_columns(&views, &request.columns)?;
        let targets = views
            .into_iter()
            .map(|view| {
                let rows = rows_for(&view, &columns, received_at)?;
                Ok(PushTarget { view, rows })
            })
            .collect::<Result<Vec<_>>>()?;
        let n_rows = targets.first().map_or(0, |t| t.rows.len()) as u64;
        Ok(PushBatch {
            targets,
            online,
            offline,
            n_rows,
        })
    }
}

impl PushBatch {
    /// The views this batch writes.
    pub fn view_names(&self) -> impl Iterator<Item = &str> {
        self.targets.iter().map(|t| t.view.name.as_str())
    }
}

/// Writes validated push batches: the offline log first, then the online store, each durable
/// before the push is acknowledged.
#[derive(Debug)]
pub struct Pusher {
    store: Arc<RocksStore>,
    offline: Arc<OfflineStore>,
}

impl Pusher {
    pub fn new(store: Arc<RocksStore>, offline: Arc<OfflineStore>) -> Self {
        Pusher { store, offline }
    }

    pub async fn push(&self, batch: PushBatch) -> Result<Vec<Pushed>> {
        let mut outcome = Vec::with_capacity(batch.targets.len());
        for PushTarget { view, rows } in batch.targets {
            let mut pushed = Pushed {
                view: view.name.clone(),
                version: view.version,
                ..Default::default()
            };
            let rows = Arc::new(rows);
            if batch.offline && !rows.is_empty() {
                let (offline, log_view, log_rows) =
                    (Arc::clone(&self.offline), view.clone(), Arc::clone(&rows));
                tokio::task::spawn_blocking(move || offline.append_push_log(&log_view, &log_rows))
                    .await
                    .map_err(|e| Error::Internal(format!("push log task failed: {e}")))??;
                pushed.written_offline = rows.len() as u64;
            }
            if batch.online && view.online {
                let stats = self.store.write_rows(&view, &rows, true)?;
                pushed.written_online = stats.written;
                pushed.skipped_older = stats.skipped_older;
            }
            outcome.push(pushed);
        }
        Ok(outcome)
    }
}

fn target_views(request: &v1::PushRequest, registry: &RegistryState) -> Result<Vec<ResolvedView>> {
    let views: Vec<ResolvedView> = match &request.target {
        Some(v1::push_request::Target::FeatureView(name)) => vec![registry.view(name)?.clone()],
        Some(v1::push_request::Target::Source(name)) => {
            registry.get(quiver_core::Kind::Source, name)?;
            let views: Vec<ResolvedView> = registry
                .list(quiver_core::Kind::FeatureView)
                .filter_map(|(_, v)| v.view.clone())
                .filter(|v| v.source_name == *name)
                .collect();
            if views.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "source `{name}` feeds no feature view"
                )));
            }
            views
        }
        None => return Err(Error::invalid("target", "set `feature_view` or `source`")),
    };
    for view in &views {
        if !view.source.push {
            return Err(Error::FailedPrecondition(format!(
                "view `{}` reads source `{}`, which does not accept pushes; declare it with `push: true`",
                view.name, view.source_name
            )));
        }
    }
    Ok(views)
}

/// `(online, offline)` of a wire push mode.
fn push_mode(mode: i32) -> Result<(bool, bool)> {
    match v1::PushMode::try_from(mode) {
        Ok(v1::PushMode::Unspecified | v1::PushMode::OnlineAndOffline) => Ok((true, true)),
        Ok(v1::PushMode::Online) => Ok((true, false)),
        Ok(v1::PushMode::Offline) => Ok((false, true)),
        Err(_) => Err(Error::invalid("mode", format!("unknown push mode {mode}"))),
    }
}

/// Every column must be used by some target view, and all have one length.
fn check_columns(views: &[ResolvedView], columns: &[v1::NamedColumn]) -> Result<()> {
    let mut known = BTreeSet::new();
    for view in views {
        known.extend(view.join_keys.iter().map(|k| k.name.clone()));
        known.extend(view.features.iter().map(|f| f.name.clone()));
        known.insert(view.source.event_time.clone());
        known.extend(view.source.created_time.clone());
    }
    let mut len = None;
    for (i, named) in columns.iter().enumerate() {
        if !known.contains(&named.name) {
            return Err(Error::invalid(
                format!("columns[{i}]"),
                format!(
                    "unknown column `{}`; the target views take: {}",
                    named.name,
                    known.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let n = named.column.as_ref().map(column_len).unwrap_or(0);
        match len {
            Some(l) if l != n => {
                return Err(Error::invalid(
                    format!("columns.{}", named.name),
                    format!("has {n} values, other columns have {l}"),
                ));
            }
            _ => len = Some(n),
        }
    }
    Ok(())
}

fn rows_for(
    view: &ResolvedView,
    columns: &BTreeMap<&str, &v1::Column>,
    received_at: i64,
) -> Result<Vec<Row>> {
    let column = |name: &str, what: &str| {
        columns.get(name).copied().ok_or_else(|| {
            Error::invalid(
                format!("columns.{name}"),
                format!("missing {what} column `{name}` of view `{}`", view.name),
            )
        })
    };
    let event_ts = column_to_micros(
        column(&view.source.event_time, "event time")?,
        &format!("columns.{}", view.source.event_time),
    )?;
    let n_rows = event_ts.len();
    // Created time: the pushed column, else the server receive time. A source without a
    // created-time column has no created times at all, on both paths.
    let created_ts: Vec<Option<i64>> = match view.source.created_time.as_deref() {
        None => vec![None; n_rows],
        Some(name) => match columns.get(name) {
            Some(col) => column_to_micros(col, &format!("columns.{name}"))?
                .into_iter()
                .map(Some)
                .collect(),
            None => vec![Some(received_at); n_rows],
        },
    };
    let mut keys = vec![Vec::with_capacity(view.join_keys.len()); n_rows];
    for key in &view.join_keys {
        let values = column_to_keys(
            column(&key.name, "join key")?,
            key.key_type,
            &format!("columns.{}", key.name),
        )?;
        for (row, value) in keys.iter_mut().zip(values) {
            row.push(value);
        }
    }
    let mut values = vec![Vec::with_capacity(view.features.len()); n_rows];
    for feature in &view.features {
        let column_values = column_to_values(
            column(&feature.name, "feature")?,
            feature.value_type,
            &format!("columns.{}", feature.name),
        )?;
        for (row, value) in values.iter_mut().zip(column_values) {
            row.push(value);
        }
    }
    Ok(keys
        .into_iter()
        .zip(values)
        .zip(event_ts.into_iter().zip(created_ts))
        .map(|((key, values), (event_ts, created_ts))| Row {
            key,
            event_ts,
            created_ts,
            values,
        })
        .collect())
}
