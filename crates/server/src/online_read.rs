//! An online read as a validated domain request ([`OnlineRead`], built on receipt from the
//! wire request and one registry snapshot) and its execution against the online store. The
//! rules per value (TTL, statuses, reading another version's row) are
//! `quiver_core::online_read`'s; this module only gathers keys and rows.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use quiver_core::RegistryState;
use quiver_core::online_read::{RowRead, StoredRowRef, fresh_value};
use quiver_core::online_store::{OnlineStore, StoredRow};
use quiver_core::selection::Selection;
use quiver_core::semantics::FeatureStatus;
use quiver_core::types::Micros;
use quiver_core::value::{KeyValue, Value};
use quiver_proto::convert::{column_len, column_to_keys, columns_by_name};
use quiver_proto::selector::online_selector;
use quiver_proto::v1;

use crate::error::{Error, Result};
use crate::limits::{Limits, check};

/// Most entity rows a memory-only read serves (one point lookup each, on an async
/// worker); more go to the blocking pool and one batched MultiGet per view.
const MEMORY_READ_MAX_ROWS: usize = 128;

/// A validated online read: what to read, for which keys, under which output names.
#[derive(Debug)]
pub struct OnlineRead {
    pub selection: Selection,
    /// Output names per selected view and feature.
    pub names: Vec<Vec<String>>,
    /// Per selected view, the key of each entity row (in the view's join-key order).
    pub keys: Vec<Vec<Vec<KeyValue>>>,
    pub n_rows: usize,
}

/// What was read for one selected view: per entity row, the stored row as the read rules
/// classified it. Values stay in the stored rows (shared with the store's row cache); the
/// response's typed columns are filled from them directly.
#[derive(Debug, Clone)]
pub struct ViewRead {
    pub rows: Vec<Served>,
}

/// One entity row of one view under the read rules (`quiver_core::online_read`).
#[derive(Debug, Clone)]
pub enum Served {
    NotFound,
    OutsideMaxAge {
        event_ts: Micros,
    },
    /// A fresh row written by the read version of the view.
    Fresh(Arc<StoredRow>),
    /// A fresh row written by another version, its values mapped onto the read version.
    Projected {
        event_ts: Micros,
        values: Vec<Value>,
    },
}

impl Served {
    fn classify(
        stored: Option<Arc<StoredRow>>,
        view: &quiver_core::ResolvedView,
        now: Micros,
        registry: &RegistryState,
    ) -> Served {
        let Some(row) = stored else {
            return Served::NotFound;
        };
        let stored_ref = StoredRowRef {
            event_ts: row.event_ts,
            view_version: row.view_version,
            values: &row.values,
        };
        match RowRead::classify(Some(stored_ref), view, now, registry) {
            RowRead::NotFound => Served::NotFound,
            RowRead::OutsideMaxAge => Served::OutsideMaxAge {
                event_ts: row.event_ts,
            },
            RowRead::Fresh(Cow::Owned(values)) => Served::Projected {
                event_ts: row.event_ts,
                values,
            },
            RowRead::Fresh(Cow::Borrowed(_)) => Served::Fresh(row),
        }
    }

    /// The value served for the read view's feature at `position` (`None` unless
    /// `PRESENT`), and its status.
    pub fn value(&self, position: usize) -> (Option<&Value>, FeatureStatus) {
        match self {
            Served::NotFound => (None, FeatureStatus::NotFound),
            Served::OutsideMaxAge { .. } => (None, FeatureStatus::OutsideMaxAge),
            Served::Fresh(row) => fresh_value(&row.values, position),
            Served::Projected { values, .. } => fresh_value(values, position),
        }
    }

    /// Whether a row was stored for the key.
    pub fn found(&self) -> bool {
        !matches!(self, Served::NotFound)
    }

    /// The stored row's event time (0 when none was found).
    pub fn event_ts(&self) -> Micros {
        match self {
            Served::NotFound => 0,
            Served::OutsideMaxAge { event_ts } | Served::Projected { event_ts, .. } => *event_ts,
            Served::Fresh(row) => row.event_ts,
        }
    }
}

impl OnlineRead {
    /// Validates `request` against `registry`: the selector, output names, entity columns
    /// (equal lengths, known names, within the limits) and every key's type.
    pub fn from_wire(
        request: &v1::GetOnlineFeaturesRequest,
        registry: &RegistryState,
        limits: &Limits,
    ) -> Result<OnlineRead> {
        let bytes = prost::Message::encoded_len(request) as u64;
        check(
            "online read",
            bytes,
            "bytes",
            limits.max_online_request_bytes,
            "--max-online-request-bytes",
        )?;
        let selection = Selection::resolve(registry, &online_selector(request)?)?;
        let names = selection.output_names(request.full_names)?;
        let columns = columns_by_name(&request.entities, "entities")?;
        let n_rows = entity_rows(&selection, &request.entities)?;
        check(
            "online read",
            n_rows as u64,
            "entity rows",
            limits.max_online_entities,
            "--max-online-entities",
        )?;
        let keys = selection
            .views
            .iter()
            .map(|selected| view_keys(&selected.view, &columns, n_rows))
            .collect::<Result<_>>()?;
        Ok(OnlineRead {
            selection,
            names,
            keys,
            n_rows,
        })
    }

    /// Reads every selected view at `now` from the store (one batched read per view).
    pub async fn execute(
        &self,
        store: &dyn OnlineStore,
        registry: &RegistryState,
        now: Micros,
    ) -> Result<Vec<ViewRead>> {
        let mut views = Vec::with_capacity(self.selection.views.len());
        for (selected, keys) in self.selection.views.iter().zip(&self.keys) {
            let stored = store.read_rows(&selected.view, keys).await?;
            views.push(view_read(selected, stored, registry, now));
        }
        Ok(views)
    }

    /// The transport baseline `Echo`: a response of the same shape and about the same size
    /// as [`OnlineRead::execute`]'s, for one lookup per view: the first entity row's stored
    /// row (from memory only, never the disk, so an async worker may run it) is served for
    /// every entity row. A store without a memory tier (Redis) gives no row: all NOT_FOUND.
    pub fn echo(
        &self,
        store: &dyn OnlineStore,
        registry: &RegistryState,
        now: Micros,
    ) -> Result<Vec<ViewRead>> {
        self.selection
            .views
            .iter()
            .zip(&self.keys)
            .map(|(selected, keys)| {
                let first = keys.get(..1).unwrap_or_default();
                let first = store.read_rows_cached(&selected.view, first)?;
                let row = first.and_then(|rows| rows.into_iter().next().flatten());
                Ok(view_read(selected, vec![row; self.n_rows], registry, now))
            })
            .collect()
    }

    /// Like [`OnlineRead::execute`], from memory only (memtables and the block cache: no I/O,
    /// so an async worker may run it); `None` when the read is larger than
    /// `MEMORY_READ_MAX_ROWS` or some row would need the disk.
    pub fn execute_from_memory(
        &self,
        store: &dyn OnlineStore,
        registry: &RegistryState,
        now: Micros,
    ) -> Result<Option<Vec<ViewRead>>> {
        if self.n_rows > MEMORY_READ_MAX_ROWS {
            return Ok(None);
        }
        let mut views = Vec::with_capacity(self.selection.views.len());
        for (selected, keys) in self.selection.views.iter().zip(&self.keys) {
            let Some(stored) = store.read_rows_cached(&selected.view, keys)? else {
                return Ok(None);
            };
            views.push(view_read(selected, stored, registry, now));
        }
        Ok(Some(views))
    }
}

/// Applies the read rules to the rows stored for one selected view.
fn view_read(
    selected: &quiver_core::selection::SelectedView,
    stored: Vec<Option<Arc<StoredRow>>>,
    registry: &RegistryState,
    now: Micros,
) -> ViewRead {
    let rows = stored
        .into_iter()
        .map(|row| Served::classify(row, &selected.view, now, registry))
        .collect();
    ViewRead { rows }
}

/// Validates entity columns: equal lengths, no unknown names; returns the row count.
fn entity_rows(selection: &Selection, entities: &[v1::NamedColumn]) -> Result<usize> {
    let mut n_rows = None;
    for (i, named) in entities.iter().enumerate() {
        let used = selection
            .views
            .iter()
            .any(|v| v.view.join_keys.iter().any(|k| k.name == named.name));
        if !used {
            let keys: Vec<String> = selection
                .views
                .iter()
                .flat_map(|v| v.view.join_keys.iter().map(|k| k.name.clone()))
                .collect();
            return Err(Error::invalid(
                format!("entities[{i}]"),
                format!(
                    "`{}` is not a join key of the requested views (keys: {})",
                    named.name,
                    keys.join(", ")
                ),
            ));
        }
        let len = named.column.as_ref().map(column_len).unwrap_or(0);
        match n_rows {
            Some(n) if n != len => {
                return Err(Error::invalid(
                    format!("entities.{}", named.name),
                    format!(
                        "has {len} values, other key columns have {n}; every key column needs one value per entity row"
                    ),
                ));
            }
            _ => n_rows = Some(len),
        }
    }
    Ok(n_rows.unwrap_or(0))
}

/// The typed key of each entity row for one view.
fn view_keys(
    view: &quiver_core::ResolvedView,
    columns: &BTreeMap<&str, &v1::Column>,
    n_rows: usize,
) -> Result<Vec<Vec<KeyValue>>> {
    let mut keys: Vec<Vec<KeyValue>> = vec![Vec::with_capacity(view.join_keys.len()); n_rows];
    for key in &view.join_keys {
        let field = format!("entities.{}", key.name);
        let column = columns.get(key.name.as_str()).ok_or_else(|| {
            Error::invalid(
                &field,
                format!(
                    "missing join key `{}` ({}) needed by view `{}`",
                    key.name, key.key_type, view.name
                ),
            )
        })?;
        for (row, value) in keys
            .iter_mut()
            .zip(column_to_keys(column, key.key_type, &field)?)
        {
            row.push(value);
        }
    }
    Ok(keys)
}
