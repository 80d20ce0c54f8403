//! Builders shared by the unit tests.

use quiver_core::RegistryState;
use quiver_core::ResolvedView;
use quiver_core::manifest::{ManifestFile, parse_manifests};
use quiver_core::model::{Feature, JoinKey, SourceSpec};
use quiver_core::plan::{NoSchemaCheck, apply};
use quiver_core::types::{KeyType, ValueType};

/// A view version with the given join keys and features (`("conv_rate", "float32")`).
pub(crate) fn view(
    name: &str,
    join_keys: &[(&str, KeyType)],
    features: &[(&str, &str)],
) -> ResolvedView {
    ResolvedView {
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
        features: features
            .iter()
            .map(|(name, value_type)| Feature {
                name: name.to_string(),
                value_type: ValueType::parse(value_type).expect("a known type"),
            })
            .collect(),
    }
}

/// The registry state of applying the README example once.
pub(crate) fn registry_state() -> RegistryState {
    let declared = parse_manifests(&[ManifestFile {
        path: "/repo/m.yaml".into(),
        content: quiver_core::testdata::EXAMPLE.into(),
    }])
    .expect("manifest parses");
    let state = RegistryState::default();
    apply(&state, declared, Some(0), false, &NoSchemaCheck, 1_000)
        .expect("example applies")
        .0
}
