//! Reading a row written by one view version through another: features map by name.

use quiver_core::ResolvedView;
use quiver_core::model::Feature;
use quiver_core::value::Value;

use crate::row_codec::StoredRow;

/// Maps a stored row onto `view`'s features by name. `writer_features` are the features of
/// the version that wrote the row (`stored.view_version`; the caller looks them up in the
/// registry). A feature the writer did not have, or had with another type, is
/// [`Value::Null`]; so is a value that does not fit its type (a row shorter than its writer's
/// features or with a foreign value is treated as missing data, never a panic).
pub fn project_values(
    stored: &StoredRow,
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
                .and_then(|(index, _)| stored.values.get(index))
                .filter(|value| value.fits(feature.value_type))
                .cloned()
                .unwrap_or(Value::Null)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::view;
    use quiver_core::types::KeyType;

    #[test]
    fn values_map_by_name_across_versions() {
        let v1 = view(
            "v",
            &[("id", KeyType::Int64)],
            &[("a", "int64"), ("b", "string"), ("c", "float32")],
        );
        let mut v2 = view(
            "v",
            &[("id", KeyType::Int64)],
            &[
                ("c", "float32"),
                ("new", "bool"),
                ("b", "int64"),
                ("a", "int64"),
            ],
        );
        v2.version = 2;
        let stored = StoredRow {
            event_ts: 1,
            created_ts: None,
            view_version: 1,
            values: vec![Value::Int64(7), Value::String("x".into()), Value::Null],
        };
        // Same version: identity.
        assert_eq!(project_values(&stored, &v1.features, &v1), stored.values);
        // c moved, new is missing, b changed type, a moved.
        assert_eq!(
            project_values(&stored, &v1.features, &v2),
            vec![Value::Null, Value::Null, Value::Null, Value::Int64(7)]
        );
        // A short or foreign row never panics.
        let short = StoredRow {
            values: vec![Value::Bool(true)],
            ..stored
        };
        assert_eq!(
            project_values(&short, &v1.features, &v1),
            vec![Value::Null, Value::Null, Value::Null]
        );
    }
}
