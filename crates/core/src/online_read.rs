//! SEMANTICS.md "Online read": what a stored row means for each value asked of it at `now`.
//!
//! The online store hands over the row it holds for a key (or none); these rules decide, per
//! value, the status (`PRESENT`, `NULL_VALUE`, `NOT_FOUND`, `OUTSIDE_MAX_AGE`) and the value
//! served, reading a row written by another version of the view through that version's
//! features ([`project_values`]). Storage and wire formats stay out of here.

use std::borrow::Cow;

use crate::ResolvedView;
use crate::model::Feature;
use crate::registry::RegistryState;
use crate::semantics::{FeatureStatus, is_fresh};
use crate::types::Micros;
use crate::value::Value;

/// The parts of a stored row the read rules look at.
#[derive(Debug, Clone, Copy)]
pub struct StoredRowRef<'a> {
    pub event_ts: Micros,
    /// The view version that wrote the row.
    pub view_version: u32,
    /// Values in the writer version's feature order.
    pub values: &'a [Value],
}

/// What a read found for one key of one view.
#[derive(Debug, Clone, PartialEq)]
pub enum RowRead<'a> {
    /// No stored row.
    NotFound,
    /// A row older than the view's TTL at `now`.
    OutsideMaxAge,
    /// A fresh row, in the read view version's feature order.
    Fresh(Cow<'a, [Value]>),
}

impl<'a> RowRead<'a> {
    /// Applies the TTL at `now` and maps a row written by another version of `view` onto
    /// `view`'s features (its writer version is looked up in `registry`; an unknown writer
    /// version contributes no values). A row of `view`'s own version is borrowed, not copied.
    pub fn classify(
        stored: Option<StoredRowRef<'a>>,
        view: &ResolvedView,
        now: Micros,
        registry: &RegistryState,
    ) -> RowRead<'a> {
        match stored {
            None => RowRead::NotFound,
            Some(row) if !is_fresh(row.event_ts, now, view.ttl) => RowRead::OutsideMaxAge,
            Some(row) if row.view_version == view.version => {
                RowRead::Fresh(Cow::Borrowed(row.values))
            }
            Some(row) => {
                let writer = registry
                    .view_version(&view.name, row.view_version)
                    .map(|v| v.features.as_slice())
                    .unwrap_or_default();
                RowRead::Fresh(Cow::Owned(project_values(row.values, writer, view)))
            }
        }
    }

    /// The value served for the feature at `position` of the read view, and its status.
    pub fn value(&self, position: usize) -> (Value, FeatureStatus) {
        let (value, status) = self.value_ref(position);
        (value.cloned().unwrap_or(Value::Null), status)
    }

    /// Like [`RowRead::value`], borrowed: `None` for every status but `PRESENT`.
    pub fn value_ref(&self, position: usize) -> (Option<&Value>, FeatureStatus) {
        match self {
            RowRead::NotFound => (None, FeatureStatus::NotFound),
            RowRead::OutsideMaxAge => (None, FeatureStatus::OutsideMaxAge),
            RowRead::Fresh(values) => fresh_value(values, position),
        }
    }
}

/// The value at `position` of a fresh row's values (in the read view's feature order) and
/// its status: `PRESENT` unless it is null or missing (`NULL_VALUE`).
pub fn fresh_value(values: &[Value], position: usize) -> (Option<&Value>, FeatureStatus) {
    match values.get(position) {
        Some(value) if !value.is_null() => (Some(value), FeatureStatus::Present),
        _ => (None, FeatureStatus::NullValue),
    }
}

/// Maps values written by a view version with `writer_features` onto `view`'s features by
/// name. A feature the writer did not have, or had with another type, is [`Value::Null`]; so
/// is a value that does not fit its type (a row shorter than its writer's features or with a
/// foreign value is treated as missing data, never a panic).
pub fn project_values(
    values: &[Value],
    writer_features: &[Feature],
    view: &ResolvedView,
) -> Vec<Value> {
    view.features
        .iter()
        .map(|feature| {
            writer_features
                .iter()
                .enumerate()
                .find(|(_, writer)| writer.name == feature.name)
                .filter(|(_, writer)| writer.value_type == feature.value_type)
                .and_then(|(index, _)| values.get(index))
                .filter(|value| value.fits(feature.value_type))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::KeyType;

    fn view(version: u32, features: &[(&str, &str)], ttl: Micros) -> ResolvedView {
        let mut view = crate::testdata::view("v", &[("id", KeyType::Int64)], features);
        view.version = version;
        view.ttl = ttl;
        view
    }

    #[test]
    fn values_map_by_name_across_versions() {
        let v1 = view(1, &[("a", "int64"), ("b", "string"), ("c", "float32")], 0);
        let v2 = view(
            2,
            &[
                ("c", "float32"),
                ("new", "bool"),
                ("b", "int64"),
                ("a", "int64"),
            ],
            0,
        );
        let values = vec![Value::Int64(7), Value::String("x".into()), Value::Null];
        // Same version: identity.
        assert_eq!(project_values(&values, &v1.features, &v1), values);
        // c moved, new is missing, b changed type, a moved.
        assert_eq!(
            project_values(&values, &v1.features, &v2),
            vec![Value::Null, Value::Null, Value::Null, Value::Int64(7)]
        );
        // A short or foreign row never panics.
        assert_eq!(
            project_values(&[Value::Bool(true)], &v1.features, &v1),
            vec![Value::Null, Value::Null, Value::Null]
        );
    }

    #[test]
    fn statuses_follow_the_ttl_and_nulls() {
        let registry = RegistryState::default();
        let v = view(1, &[("a", "int64"), ("b", "string")], 10);
        let values = [Value::Int64(1), Value::Null];
        let row = |event_ts| {
            Some(StoredRowRef {
                event_ts,
                view_version: 1,
                values: &values,
            })
        };
        let read = |stored| RowRead::classify(stored, &v, 100, &registry);
        assert_eq!(read(None).value(0), (Value::Null, FeatureStatus::NotFound));
        // The TTL bound is inclusive: 90 is fresh at 100 with a TTL of 10, 89 is not.
        assert_eq!(
            read(row(89)).value(0),
            (Value::Null, FeatureStatus::OutsideMaxAge)
        );
        assert_eq!(
            read(row(90)).value(0),
            (Value::Int64(1), FeatureStatus::Present)
        );
        assert_eq!(
            read(row(90)).value(1),
            (Value::Null, FeatureStatus::NullValue)
        );
        assert!(matches!(read(row(90)), RowRead::Fresh(Cow::Borrowed(_))));
        // A row of an unknown writer version contributes nothing: every value is null.
        let foreign = Some(StoredRowRef {
            event_ts: 95,
            view_version: 7,
            values: &values,
        });
        assert_eq!(
            read(foreign).value(0),
            (Value::Null, FeatureStatus::NullValue)
        );
    }
}
