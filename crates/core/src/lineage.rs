//! Which stored data a view version reads and writes (SEMANTICS.md "Data generations").
//!
//! Stored data outlives definitions: pushed rows sit in the view's offline push log, and a
//! materialization watermark says how far the online store holds a view's source. A new view
//! version may read that data as it is, or may not: a key or feature type change, renamed time
//! columns, or a view deleted and declared again make earlier rows mean something else.
//!
//! - A view version belongs to a **data generation**, named by the version that started it.
//!   A version continues its predecessor's generation when every stored push-log row reads the
//!   same under both ([`same_stored_layout`]); otherwise, and when the view is declared again
//!   after a deletion, it starts a new one. Each generation has its own push log, so a
//!   breaking change never leaves rows that break the new definition, and a push to an old
//!   pinned version goes to that version's generation.
//! - A **watermark** belongs to one view fingerprint: any change of meaning (a new source, a
//!   new feature, a TTL) starts incremental materialization from the beginning again, so it
//!   never skips history the new definition has and the old one did not.

use crate::ResolvedView;
use crate::registry::ObjectHistory;

/// Whether rows stored for `old` read the same under `new`: the same join keys (names, types,
/// order) in the same source columns, the same event and created time columns, and every
/// feature of both in the same source column with the same type. Features only one of them has
/// are fine (an added feature reads as null from older rows).
pub fn same_stored_layout(old: &ResolvedView, new: &ResolvedView) -> bool {
    let same_keys = old.join_keys == new.join_keys
        && old
            .join_keys
            .iter()
            .all(|k| old.source.column_for(&k.name) == new.source.column_for(&k.name));
    let same_times = old.source.event_time == new.source.event_time
        && old.source.created_time == new.source.created_time;
    let same_features = old.features.iter().all(|f| match new.feature(&f.name) {
        None => true,
        Some(g) => {
            f.value_type == g.value_type
                && old.source.column_for(&f.name) == new.source.column_for(&f.name)
        }
    });
    same_keys && same_times && same_features
}

/// The data generation of `candidate`, a view version being declared, given the view's
/// history so far (`None` for a new view): its own version when it starts one, else the
/// generation of the version it follows.
pub fn generation_for(history: Option<&ObjectHistory>, candidate: &ResolvedView) -> u32 {
    let Some(latest) = history.and_then(|h| h.latest()) else {
        return candidate.version;
    };
    let Some(previous) = latest.view.as_ref() else {
        return candidate.version;
    };
    if previous.version == candidate.version {
        // Unchanged (or declared again unchanged after a deletion): the same version.
        return previous.data_generation();
    }
    let redeclared = history.is_some_and(|h| h.deleted);
    if !redeclared && same_stored_layout(previous, candidate) {
        previous.data_generation()
    } else {
        candidate.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use crate::registry::ObjectVersion;
    use crate::testdata::view;
    use crate::types::{KeyType, ValueType};

    fn base() -> ResolvedView {
        view(
            "driver",
            &[("driver_id", KeyType::Int64)],
            &[("trips", "int64"), ("rate", "float32")],
        )
    }

    fn history(versions: &[ResolvedView], deleted: bool) -> ObjectHistory {
        let spec = crate::model::Spec::Entity(crate::model::EntitySpec {
            join_keys: Vec::new(),
        });
        ObjectHistory {
            kind: Kind::FeatureView,
            name: "driver".into(),
            versions: versions
                .iter()
                .map(|v| ObjectVersion {
                    version: v.version,
                    fingerprint: format!("f{}", v.version),
                    registry_version: u64::from(v.version),
                    created_at: 0,
                    applied_by: String::new(),
                    spec: spec.clone(),
                    view: Some(v.clone()),
                    service: None,
                })
                .collect(),
            metadata: Default::default(),
            deleted,
            origin: String::new(),
        }
    }

    fn next(previous: &ResolvedView, edit: impl FnOnce(&mut ResolvedView)) -> ResolvedView {
        let mut v = previous.clone();
        v.version = previous.version + 1;
        edit(&mut v);
        v
    }

    #[test]
    fn compatible_changes_keep_the_layout_and_breaking_ones_do_not() {
        let old = base();
        type Edit = fn(&mut ResolvedView);
        let table: Vec<(&str, Edit, bool)> = vec![
            ("ttl", |v| v.ttl = 7, true),
            ("online flag", |v| v.online = false, true),
            (
                "source path",
                |v| v.source.parquet = Some("/x/*.parquet".into()),
                true,
            ),
            (
                "added feature",
                |v| v.features.push(feature("new", "string")),
                true,
            ),
            (
                "removed feature",
                |v| {
                    v.features.pop();
                },
                true,
            ),
            (
                "feature type",
                |v| v.features[0].value_type = ValueType::parse("string").expect("type"),
                false,
            ),
            (
                "key type",
                |v| v.join_keys[0].key_type = KeyType::String,
                false,
            ),
            ("key name", |v| v.join_keys[0].name = "id".into(), false),
            ("event column", |v| v.source.event_time = "ts".into(), false),
            (
                "created column",
                |v| v.source.created_time = Some("created".into()),
                false,
            ),
            (
                "feature column renamed",
                |v| {
                    v.source.renames.insert("n_trips".into(), "trips".into());
                },
                false,
            ),
            (
                "key column renamed",
                |v| {
                    v.source.renames.insert("id".into(), "driver_id".into());
                },
                false,
            ),
        ];
        for (what, edit, same) in table {
            let new = next(&old, edit);
            assert_eq!(same_stored_layout(&old, &new), same, "{what}");
        }
    }

    fn feature(name: &str, value_type: &str) -> crate::model::Feature {
        crate::model::Feature {
            name: name.into(),
            value_type: ValueType::parse(value_type).expect("type"),
        }
    }

    #[test]
    fn generations_start_at_breaking_versions_and_redeclarations() {
        let v1 = base();
        assert_eq!(generation_for(None, &v1), 1);
        let mut v1 = v1;
        v1.generation = 1;
        let v2 = next(&v1, |v| v.ttl = 60);
        assert_eq!(generation_for(Some(&history(&[v1.clone()], false)), &v2), 1);
        let mut v2 = v2;
        v2.generation = 1;
        let v3 = next(&v2, |v| v.join_keys[0].key_type = KeyType::String);
        let h = history(&[v1.clone(), v2.clone()], false);
        assert_eq!(
            generation_for(Some(&h), &v3),
            3,
            "a breaking change starts one"
        );
        // The unchanged latest version declared again keeps its generation, even after a
        // deletion; a changed one declared after a deletion starts a new one.
        assert_eq!(generation_for(Some(&h), &v2), 1);
        let deleted = history(&[v1.clone(), v2.clone()], true);
        assert_eq!(generation_for(Some(&deleted), &v2), 1);
        assert_eq!(generation_for(Some(&deleted), &next(&v2, |v| v.ttl = 9)), 3);
        // Versions from before generations were recorded (0) are generation 1.
        let mut legacy = v1.clone();
        legacy.generation = 0;
        let h = history(&[legacy], false);
        assert_eq!(generation_for(Some(&h), &next(&v1, |v| v.ttl = 1)), 1);
    }
}
