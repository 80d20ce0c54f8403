//! Flattening objects into named properties for plan diffs, and which changes break users.

use std::collections::BTreeMap;

use crate::model::{Kind, Metadata, ResolvedService, ResolvedView, Spec};
use crate::registry::RegistryState;
use crate::types::format_duration;

/// Property path -> display value.
pub type Properties = BTreeMap<String, String>;

const METADATA_PREFIXES: [&str; 5] = ["description", "owner", "tags.", "monitoring.", "logging."];

pub fn is_metadata(property: &str) -> bool {
    METADATA_PREFIXES.iter().any(|p| property.starts_with(p))
}

/// The properties of one object version plus its metadata.
pub fn properties(
    spec: &Spec,
    view: Option<&ResolvedView>,
    service: Option<&ResolvedService>,
    metadata: &Metadata,
) -> Properties {
    let mut props = Properties::new();
    match (spec, view, service) {
        (_, Some(view), _) => {
            props.insert("entities".into(), view.entities.join(", "));
            for key in &view.join_keys {
                props.insert(format!("join_keys.{}", key.name), key.key_type.to_string());
            }
            props.insert("source".into(), view.source_name.clone());
            props.insert(
                "source.fingerprint".into(),
                crate::fingerprint::source(&view.source),
            );
            props.insert("ttl".into(), format_duration(view.ttl));
            props.insert("online".into(), view.online.to_string());
            for feature in &view.features {
                props.insert(
                    format!("features.{}", feature.name),
                    feature.value_type.to_string(),
                );
            }
        }
        (_, None, Some(service)) => {
            for item in &service.items {
                let prefix = item.prefix();
                props.insert(
                    format!("items.{prefix}.view"),
                    format!("{}@{}", item.view, item.view_version),
                );
                for feature in &item.features {
                    props.insert(
                        format!("items.{prefix}.features.{feature}"),
                        "served".into(),
                    );
                }
            }
        }
        (Spec::Entity(entity), _, _) => {
            for (i, key) in entity.join_keys.iter().enumerate() {
                props.insert(
                    format!("join_keys[{i}]"),
                    format!("{}: {}", key.name, key.key_type),
                );
            }
        }
        (Spec::Source(source), _, _) => {
            if let Some(parquet) = &source.parquet {
                props.insert("parquet".into(), parquet.clone());
            }
            props.insert("push".into(), source.push.to_string());
            props.insert("event_time".into(), source.event_time.clone());
            if let Some(created) = &source.created_time {
                props.insert("created_time".into(), created.clone());
            }
            for (from, to) in &source.renames {
                props.insert(format!("renames.{from}"), to.clone());
            }
        }
        (Spec::FeatureView(_) | Spec::FeatureService(_), None, None) => {}
    }
    if !metadata.description.is_empty() {
        props.insert("description".into(), metadata.description.clone());
    }
    if !metadata.owner.is_empty() {
        props.insert("owner".into(), metadata.owner.clone());
    }
    for (k, v) in &metadata.tags {
        props.insert(format!("tags.{k}"), v.clone());
    }
    props.extend(metadata.monitoring.properties());
    props.extend(metadata.logging.iter().flat_map(|l| l.properties()));
    props
}

/// Whether changing `property` of `kind/name` from `old` to `new` breaks existing users:
/// key or type changes, and removing a feature that a live service serves.
pub fn classify(
    state: &RegistryState,
    kind: Kind,
    name: &str,
    property: &str,
    old: Option<&str>,
    new: Option<&str>,
) -> bool {
    if is_metadata(property) {
        return false;
    }
    match kind {
        Kind::Entity => property.starts_with("join_keys"),
        Kind::Source => false,
        Kind::FeatureView => {
            if property.starts_with("join_keys.") || property == "entities" {
                return true;
            }
            let Some(feature) = property.strip_prefix("features.") else {
                return false;
            };
            match (old, new) {
                (Some(_), Some(_)) => true,
                (Some(_), None) => served_by_live_service(state, name, feature),
                _ => false,
            }
        }
        Kind::FeatureService => {
            // Removing a served feature or a whole item changes what models receive.
            new.is_none() && (property.contains(".features.") || property.ends_with(".view"))
        }
    }
}

fn served_by_live_service(state: &RegistryState, view: &str, feature: &str) -> bool {
    state.list(Kind::FeatureService).any(|(_, version)| {
        version.service.as_ref().is_some_and(|s| {
            s.items
                .iter()
                .any(|item| item.view == view && item.features.iter().any(|f| f == feature))
        })
    })
}
