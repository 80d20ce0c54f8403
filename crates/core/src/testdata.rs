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
