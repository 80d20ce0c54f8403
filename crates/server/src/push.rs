//! Push ingestion: a columnar wire batch is checked against the limits and validated against
//! every target view on receipt ([`PushBatch`]), then [`Pusher`] writes it to the offline log
//! and/or the online store. Nothing of an invalid batch is written.
//!
//! Rows are converted a chunk at a time ([`CHUNK_ROWS`]), both to validate and to write, so a
//! push's working memory is its wire columns, the push-log's Arrow batches and one chunk of
//! rows (the per-row form is several times larger than the wire form).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use prost::Message;
use quiver_core::online_store::OnlineStore;
use quiver_core::semantics::{LogPosition, invalid_time_message, is_valid_time};
use quiver_core::value::Row;
use quiver_core::{Kind, RegistryState, ResolvedView};
use quiver_offline::{OfflineStore, push_log_batch};
use quiver_proto::convert::{
    column_len, column_to_keys, column_to_micros, column_to_values, columns_by_name, slice_column,
};
use quiver_proto::v1;

use crate::error::{Error, Result};
use crate::limits::{Limits, check};
use crate::push_rules::{RuleCheck, Violations};

/// Rows converted from the wire columns at a time.
pub const CHUNK_ROWS: usize = 8_192;

/// A validated push: its wire columns, the target views, and where the rows go.
#[derive(Debug)]
pub struct PushBatch {
    pub views: Vec<ResolvedView>,
    columns: Vec<v1::NamedColumn>,
    received_at: i64,
    pub online: bool,
    pub offline: bool,
    pub n_rows: u64,
    /// Expectations broken by the rows (under `on_violation: warn`: written anyway).
    pub(crate) violations: Violations,
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
    /// Checks `request` against the limits, then validates it against `registry`: the target
    /// (a push-enabled view, or every view of a push-enabled source), the mode, and every
    /// column of every row for every target view (types, the valid time range). Rows without
    /// a created-time column get `received_at` where the source has created times.
    pub fn from_wire(
        request: v1::PushRequest,
        registry: &RegistryState,
        received_at: i64,
        limits: &Limits,
    ) -> Result<PushBatch> {
        let bytes = request.encoded_len() as u64;
        check(
            "push",
            bytes,
            "bytes",
            limits.max_push_bytes,
            "--max-push-bytes",
        )?;
        let views = target_views(&request, registry)?;
        let (online, offline) = push_mode(request.mode)?;
        columns_by_name(&request.columns, "columns")?;
        let n_rows = check_columns(&views, &request.columns)?;
        check(
            "push",
            n_rows as u64,
            "rows",
            limits.max_push_rows,
            "--max-push-rows",
        )?;
        let mut batch = PushBatch {
            views,
            columns: request.columns,
            received_at,
            online,
            offline,
            n_rows: n_rows as u64,
            violations: Violations::new(),
        };
        let mut violations = Violations::new();
        for view in &batch.views {
            let spec = registry
                .history(Kind::FeatureView, &view.name)
                .map(|h| &h.metadata.monitoring);
            let mut rules = spec.and_then(|spec| RuleCheck::new(view, spec));
            for range in batch.chunks() {
                let first = range.start;
                let rows = batch.rows(view, range)?;
                if let Some(rules) = &mut rules {
                    rules.rows(&rows, first, &mut violations)?;
                }
            }
            if let Some(rules) = rules {
                rules.finish(n_rows, &mut violations)?;
            }
        }
        batch.violations = violations;
        Ok(batch)
    }

    /// The row ranges converted at a time.
    pub fn chunks(&self) -> impl Iterator<Item = Range<usize>> + use<> {
        let n = self.n_rows as usize;
        (0..n)
            .step_by(CHUNK_ROWS)
            .map(move |start| start..(start + CHUNK_ROWS).min(n))
    }

    /// Rows `range` for `view` (in source column names, converted to its types).
    pub fn rows(&self, view: &ResolvedView, range: Range<usize>) -> Result<Vec<Row>> {
        let sliced = self
            .columns
            .iter()
            .map(|named| {
                let field = format!("columns.{}", named.name);
                let column = match &named.column {
                    Some(column) => slice_column(column, range.clone(), &field)?,
                    None => v1::Column::default(),
                };
                Ok((named.name.as_str(), column))
            })
            .collect::<Result<Vec<_>>>()?;
        let columns: BTreeMap<&str, &v1::Column> = sliced
            .iter()
            .map(|(name, column)| (*name, column))
            .collect();
        rows_for(view, &columns, self.received_at, range.start)
    }
}

impl PushBatch {
    /// Target view `index`.
    fn view(&self, index: usize) -> Result<&ResolvedView> {
        self.views
            .get(index)
            .ok_or_else(|| Error::Internal(format!("a push has no target view {index}")))
    }

    /// The views this batch writes.
    pub fn view_names(&self) -> impl Iterator<Item = &str> {
        self.views.iter().map(|view| view.name.as_str())
    }
}

/// Writes validated push batches: the offline log first, then the online store, each durable
/// before the push is acknowledged.
#[derive(Debug)]
pub struct Pusher {
    store: Arc<dyn OnlineStore>,
    offline: Arc<OfflineStore>,
}

/// A chunk of at most this many rows is converted on the caller's task; a larger one on the
/// blocking pool (so that an async worker never spends long on one).
const INLINE_ROWS: usize = 64;

/// What the blocking part of a push did, per target view: where its rows went in the push
/// log (online, they keep it as their tie token), and its first chunk of rows when the view
/// is written online (converted once for both).
#[derive(Debug, Default)]
pub struct Logged(Vec<LoggedView>);

/// [`Logged`] for one view.
#[derive(Debug)]
struct LoggedView {
    origin: Option<LogPosition>,
    first_chunk: Option<Vec<Row>>,
}

impl Pusher {
    pub fn new(store: Arc<dyn OnlineStore>, offline: Arc<OfflineStore>) -> Self {
        Pusher { store, offline }
    }

    /// Blocking: appends every view's rows to its push log (Parquet, fsync, rename) and
    /// converts the first chunk each view writes online.
    pub fn log_blocking(&self, batch: &PushBatch) -> Result<Logged> {
        let mut logged = Logged::default();
        for view in &batch.views {
            let online = batch.online && view.online;
            let mut chunks = batch.chunks();
            let first = match chunks.next() {
                Some(range) if online || batch.offline => Some(batch.rows(view, range)?),
                _ => None,
            };
            let mut origin = None;
            if batch.offline && batch.n_rows > 0 {
                let mut log = Vec::new();
                if let Some(rows) = &first {
                    log.push(push_log_batch(view, rows)?);
                }
                for range in chunks {
                    log.push(push_log_batch(view, &batch.rows(view, range)?)?);
                }
                origin = self.offline.append_push_log_batches(view, &log)?;
            }
            logged.0.push(LoggedView {
                origin,
                first_chunk: first.filter(|_| online),
            });
        }
        Ok(logged)
    }

    /// Writes the rows of every view written online, a chunk at a time, the last one
    /// durable (acknowledged only once durable, even if every row lost to a stored one,
    /// which may come from a write not yet synced); what each view got.
    pub async fn write_online(&self, batch: Arc<PushBatch>, logged: Logged) -> Result<Vec<Pushed>> {
        let mut outcome = Vec::with_capacity(batch.views.len());
        for (index, (view, logged)) in batch.views.iter().zip(logged.0).enumerate() {
            let LoggedView {
                origin,
                first_chunk: mut first,
            } = logged;
            let mut pushed = Pushed {
                view: view.name.clone(),
                version: view.version,
                ..Default::default()
            };
            if batch.offline {
                pushed.written_offline = batch.n_rows;
            }
            if batch.online && view.online {
                let ranges: Vec<Range<usize>> = batch.chunks().collect();
                for (n, range) in ranges.iter().enumerate() {
                    let at = origin.as_ref().map(|o| o.nth(range.start as u64));
                    let rows = match first.take() {
                        Some(rows) => rows,
                        None => chunk_rows(&batch, index, range.clone()).await?,
                    };
                    let durable = n + 1 == ranges.len();
                    let stats = self
                        .store
                        .write_rows_at(view, rows, at.as_ref(), durable)
                        .await?;
                    pushed.written_online += stats.written;
                    pushed.skipped_older += stats.skipped_older;
                }
                if ranges.is_empty() {
                    self.store.sync().await?;
                }
            }
            outcome.push(pushed);
        }
        Ok(outcome)
    }
}

/// Rows `range` of `batch` for its view `index`, converted here when few, else on the
/// blocking pool.
async fn chunk_rows(batch: &Arc<PushBatch>, index: usize, range: Range<usize>) -> Result<Vec<Row>> {
    if range.len() <= INLINE_ROWS {
        return batch.rows(batch.view(index)?, range);
    }
    let batch = Arc::clone(batch);
    crate::run_blocking(move || batch.rows(batch.view(index)?, range)).await
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

/// Every column must be used by some target view, and all have one length (returned).
fn check_columns(views: &[ResolvedView], columns: &[v1::NamedColumn]) -> Result<usize> {
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
    Ok(len.unwrap_or(0))
}

/// The rows of one chunk for `view`; `first_row` is the chunk's first row in the push (for
/// error messages).
fn rows_for(
    view: &ResolvedView,
    columns: &BTreeMap<&str, &v1::Column>,
    received_at: i64,
    first_row: usize,
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
    check_times(&view.source.event_time, &event_ts, first_row)?;
    let n_rows = event_ts.len();
    // Created time: the pushed column, else the server receive time. A source without a
    // created-time column has no created times at all, on both paths.
    let created_ts: Vec<Option<i64>> = match view.source.created_time.as_deref() {
        None => vec![None; n_rows],
        Some(name) => match columns.get(name) {
            Some(col) => {
                let created = column_to_micros(col, &format!("columns.{name}"))?;
                check_times(name, &created, first_row)?;
                created.into_iter().map(Some).collect()
            }
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

/// Every time of a column must be in the valid time range (SEMANTICS.md "Time").
fn check_times(column: &str, micros: &[i64], first_row: usize) -> Result<()> {
    match micros.iter().position(|t| !is_valid_time(*t)) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(
            format!("columns.{column}[{}]", first_row + i),
            invalid_time_message(micros[i]),
        )),
    }
}
