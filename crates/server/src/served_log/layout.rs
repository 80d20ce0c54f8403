//! The columns of a service version's log files, and log entries turned into record batches.
//!
//! Columns: `request_id`, `served_at` (UTC microseconds), `service`, `service_version`,
//! `service_fingerprint`; each join key under its name; per view `<prefix>.version` and
//! `<prefix>.event_time` (null when no row was found); per feature `<prefix>__<feature>` in its
//! declared type and `<prefix>__<feature>.status` (PRESENT, NULL_VALUE, NOT_FOUND,
//! OUTSIDE_MAX_AGE). Names never contain `.`, so the dotted columns cannot collide with keys or
//! features.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use quiver_core::RegistryState;
use quiver_core::selection::{Selection, Selector, collisions};
use quiver_core::types::KeyType;
use quiver_offline::arrow_values::{
    key_column, key_type, timestamp_type, value_column, value_type,
};

use super::entry::LogEntry;
use crate::error::{Error, Result};

/// What a service version's log files hold, resolved once per version.
#[derive(Debug)]
pub(crate) struct Layout {
    pub(crate) schema: SchemaRef,
    pub(crate) fingerprint: String,
    /// Per key column: (view, position in the view's join keys), and its type.
    keys: Vec<((usize, usize), KeyType)>,
    /// Per selected view: its version and its features' types.
    views: Vec<(u32, Vec<quiver_core::types::ValueType>)>,
}

impl Layout {
    /// The layout of `service` at `version` in `registry`.
    pub(crate) fn resolve(registry: &RegistryState, service: &str, version: u32) -> Result<Layout> {
        let selector = Selector::Service {
            reference: format!("{service}@{version}"),
            expected_fingerprint: None,
        };
        let selection = Selection::resolve(registry, &selector)?;
        Layout::of(&selection)
    }

    pub(crate) fn of(selection: &Selection) -> Result<Layout> {
        let fingerprint = selection
            .service
            .as_ref()
            .map(|s| s.fingerprint.clone())
            .unwrap_or_default();
        let ts = timestamp_type();
        let mut fields = vec![
            Field::new(quiver_offline::REQUEST_ID, DataType::Utf8, false),
            Field::new(quiver_offline::SERVED_AT, ts.clone(), false),
            Field::new("service", DataType::Utf8, false),
            Field::new(quiver_offline::SERVICE_VERSION, DataType::Int64, false),
            Field::new("service_fingerprint", DataType::Utf8, false),
        ];
        let mut keys = Vec::new();
        for (v, k, key) in selection.distinct_keys() {
            fields.push(Field::new(&key.name, key_type(key.key_type), false));
            keys.push(((v, k), key.key_type));
        }
        let mut views = Vec::new();
        for selected in &selection.views {
            let prefix = &selected.prefix;
            fields.push(Field::new(
                format!("{prefix}.version"),
                DataType::Int64,
                false,
            ));
            fields.push(Field::new(format!("{prefix}.event_time"), ts.clone(), true));
            let mut types = Vec::new();
            for feature in selected.selected_features() {
                let name = selected.output_name(&feature.name, true);
                fields.push(Field::new(&name, value_type(feature.value_type), true));
                fields.push(Field::new(format!("{name}.status"), DataType::Utf8, false));
                types.push(feature.value_type);
            }
            views.push((selected.view.version, types));
        }
        let names = collisions(fields.iter().map(|f| f.name().as_str()));
        if !names.is_empty() {
            return Err(Error::invalid(
                "logging",
                format!(
                    "the served-row log's columns would collide ({}); rename the join key or feature",
                    names.join(", ")
                ),
            ));
        }
        Ok(Layout {
            schema: Arc::new(Schema::new(fields)),
            fingerprint,
            keys,
            views,
        })
    }

    /// The rows of `entries` (all of this layout's service version) as one batch.
    pub(crate) fn batch(&self, entries: &[LogEntry]) -> Result<RecordBatch> {
        let rows: usize = entries.iter().map(|e| e.rows).sum();
        let first = entries.first();
        let repeat = |text: &str| {
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                text, rows,
            )))
        };
        let mut request_ids = StringBuilder::new();
        let mut served = Vec::with_capacity(rows);
        for entry in entries {
            for _ in 0..entry.rows {
                request_ids.append_value(&entry.request_id);
                served.push(entry.served_at);
            }
        }
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(request_ids.finish()),
            Arc::new(TimestampMicrosecondArray::from(served).with_timezone("UTC")),
            repeat(first.map_or("", |e| &e.service)),
            Arc::new(Int64Array::from(vec![
                i64::from(
                    first.map_or(0, |e| e.version)
                );
                rows
            ])),
            repeat(&self.fingerprint),
        ];
        for ((v, k), key) in &self.keys {
            let values = entries
                .iter()
                .flat_map(|e| e.views[*v].keys.iter().map(|row| &row[*k]));
            let column = key_column(*key, values.collect::<Vec<_>>().into_iter())
                .map_err(|row| Error::Internal(format!("log key of another type at row {row}")))?;
            columns.push(column);
        }
        for (v, (version, types)) in self.views.iter().enumerate() {
            columns.push(Arc::new(Int64Array::from(vec![i64::from(*version); rows])));
            let events = entries.iter().flat_map(|e| {
                e.views[v]
                    .read
                    .rows
                    .iter()
                    .map(|row| row.found().then_some(row.event_ts()))
            });
            columns.push(Arc::new(
                TimestampMicrosecondArray::from(events.collect::<Vec<_>>()).with_timezone("UTC"),
            ));
            for (f, value_type) in types.iter().enumerate() {
                let values = entries
                    .iter()
                    .flat_map(|e| e.views[v].feature(f).map(|(value, _)| value));
                let column = value_column(*value_type, values.collect::<Vec<_>>().into_iter())
                    .map_err(|row| {
                        Error::Internal(format!("log value of another type at row {row}"))
                    })?;
                columns.push(column);
                let mut statuses = StringBuilder::with_capacity(rows, rows * 8);
                for entry in entries {
                    for (_, status) in entry.views[v].feature(f) {
                        statuses.append_value(status.name());
                    }
                }
                columns.push(Arc::new(statuses.finish()));
            }
        }
        RecordBatch::try_new(Arc::clone(&self.schema), columns)
            .map_err(|e| Error::Internal(format!("served-row log batch: {e}")))
    }
}
