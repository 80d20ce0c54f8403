//! Manifests shared by tests of several crates.

/// The manifest example of the README and the foundation issue.
pub const EXAMPLE: &str = r#"kind: Entity
name: driver
join_keys: [{name: driver_id, type: int64}]
---
kind: Source
name: driver_stats_source
parquet: data/driver_stats.parquet   # relative to the manifest file
event_time: event_timestamp
created_time: created
---
kind: FeatureView
name: driver_stats
entities: [driver]
source: driver_stats_source
ttl: 2h
features: [{name: conv_rate, type: float32}, {name: vehicle_type, type: string}]
---
kind: FeatureService
name: driver_model
features: [{view: driver_stats}]
"#;

/// A view version with the given join keys and features (`("conv_rate", "float32")`), a
/// push-only source, no TTL, online.
///
/// # Panics
/// On an unknown feature type: it is for tests.
pub fn view(
    name: &str,
    join_keys: &[(&str, crate::types::KeyType)],
    features: &[(&str, &str)],
) -> crate::ResolvedView {
    use crate::model::{Feature, JoinKey, SourceSpec};
    crate::ResolvedView {
        name: name.to_string(),
        version: 1,
        fingerprint: String::new(),
        entities: Vec::new(),
        join_keys: join_keys
            .iter()
            .map(|(name, key_type)| JoinKey {
                name: name.to_string(),
                key_type: *key_type,
            })
            .collect(),
        source_name: "source".to_string(),
        source: SourceSpec {
            parquet: None,
            push: true,
            event_time: "event_timestamp".to_string(),
            created_time: None,
            renames: Default::default(),
        },
        ttl: 0,
        online: true,
        generation: 1,
        features: features
            .iter()
            .map(|(name, value_type)| Feature {
                name: name.to_string(),
                value_type: crate::types::ValueType::parse(value_type)
                    .unwrap_or_else(|| panic!("unknown test feature type `{value_type}`")),
            })
            .collect(),
    }
}
