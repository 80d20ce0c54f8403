//! Definitions as declared (specs) and as resolved into immutable versions.
//!
//! A *spec* is what a manifest declares. Its *meaning* (everything but [`Metadata`]) is what a
//! fingerprint hashes. A *resolved* view or service is a spec with every reference replaced by
//! the exact definition it points to, so that `name@N` is self-contained.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::logging::LoggingSpec;
use crate::monitoring::MonitoringSpec;
use crate::types::{KeyType, Micros, ValueType};

/// The four kinds of registry object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    Entity,
    Source,
    FeatureView,
    FeatureService,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Entity,
        Kind::Source,
        Kind::FeatureView,
        Kind::FeatureService,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Entity => "Entity",
            Kind::Source => "Source",
            Kind::FeatureView => "FeatureView",
            Kind::FeatureService => "FeatureService",
        }
    }

    /// Accepts `FeatureView`, `feature_view`, `feature-view`, `featureview`, `views`, ...
    pub fn parse(text: &str) -> Option<Kind> {
        let norm: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .collect::<String>()
            .to_ascii_lowercase();
        let norm = norm.strip_suffix('s').unwrap_or(&norm);
        match norm {
            "entity" | "entitie" => Some(Kind::Entity),
            "source" => Some(Kind::Source),
            "featureview" | "view" => Some(Kind::FeatureView),
            "featureservice" | "service" => Some(Kind::FeatureService),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Descriptions, owners, tags, monitoring and logging settings: they never change an object's meaning or version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Drift thresholds and freshness bound (`monitoring:`), see [`crate::monitoring`].
    #[serde(default, skip_serializing_if = "MonitoringSpec::is_empty")]
    pub monitoring: MonitoringSpec,
    /// Feature services only: served-row logging (`logging:`), see [`crate::logging`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<LoggingSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinKey {
    pub name: String,
    #[serde(rename = "type")]
    pub key_type: KeyType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntitySpec {
    pub join_keys: Vec<JoinKey>,
}

/// Where a source's rows come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpec {
    /// Absolute Parquet file, directory or glob; `None` for a push-only source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parquet: Option<String>,
    /// Whether rows may be pushed to the views this source feeds.
    #[serde(default)]
    pub push: bool,
    pub event_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_time: Option<String>,
    /// Source column name -> field name used by views (keys and features).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub renames: BTreeMap<String, String>,
}

impl SourceSpec {
    /// The source column that holds `field` (after renames).
    pub fn column_for(&self, field: &str) -> String {
        self.renames
            .iter()
            .find(|(_, to)| to.as_str() == field)
            .map(|(from, _)| from.clone())
            .unwrap_or_else(|| field.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(rename = "type")]
    pub value_type: ValueType,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureViewSpec {
    pub entities: Vec<String>,
    pub source: String,
    /// Time to live in microseconds; 0 = unbounded.
    pub ttl: Micros,
    pub online: bool,
    pub features: Vec<Feature>,
}

/// One view in a service: all its features or a chosen subset, under an optional alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceItem {
    /// `name` (latest) or `name@N` (pinned).
    pub view: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeatureServiceSpec {
    pub items: Vec<ServiceItem>,
}

/// The meaning-bearing part of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum Spec {
    Entity(EntitySpec),
    Source(SourceSpec),
    FeatureView(FeatureViewSpec),
    FeatureService(FeatureServiceSpec),
}

impl Spec {
    pub fn kind(&self) -> Kind {
        match self {
            Spec::Entity(_) => Kind::Entity,
            Spec::Source(_) => Kind::Source,
            Spec::FeatureView(_) => Kind::FeatureView,
            Spec::FeatureService(_) => Kind::FeatureService,
        }
    }
}

/// A declared object: what a manifest document (or an API call) says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    pub spec: Spec,
    pub metadata: Metadata,
    /// The manifest file it came from, for error messages.
    pub origin: String,
}

impl Declared {
    pub fn kind(&self) -> Kind {
        self.spec.kind()
    }

    pub fn label(&self) -> String {
        format!("{}/{}", self.kind(), self.name)
    }
}

/// A feature view version with every reference resolved: its keys, source and features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedView {
    pub name: String,
    pub version: u32,
    pub fingerprint: String,
    pub entities: Vec<String>,
    /// Join keys in canonical order: entities in declared order, keys in entity order.
    pub join_keys: Vec<JoinKey>,
    pub source_name: String,
    pub source: SourceSpec,
    pub ttl: Micros,
    pub online: bool,
    pub features: Vec<Feature>,
    /// The data generation (see [`crate::lineage`]): the version that started the push log
    /// this version reads and writes. 0 in registries from before it was recorded (read as 1).
    /// Not part of the fingerprint: it follows from the history, not from the definition.
    #[serde(default)]
    pub generation: u32,
}

impl ResolvedView {
    /// The data generation, 1 for versions stored before generations were recorded.
    pub fn data_generation(&self) -> u32 {
        self.generation.max(1)
    }

    pub fn feature(&self, name: &str) -> Option<&Feature> {
        self.features.iter().find(|f| f.name == name)
    }

    pub fn pinned_name(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The position of feature `name` in [`ResolvedView::features`], or the one message for
    /// a feature the view does not have (it lists the features it has).
    pub fn feature_position(&self, name: &str) -> Result<usize, String> {
        self.features
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.features.iter().map(|f| f.name.as_str()).collect();
                format!(
                    "view `{}` has no feature `{name}`; it has: {}",
                    self.pinned_name(),
                    known.join(", ")
                )
            })
    }
}

/// One view of a service version, fixed to an exact view version and feature list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedItem {
    pub view: String,
    pub view_version: u32,
    pub view_fingerprint: String,
    pub features: Vec<String>,
    /// Prefix used for full feature names (`alias__feature`); the view name by default.
    pub alias: Option<String>,
}

impl ResolvedItem {
    pub fn prefix(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.view)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedService {
    pub name: String,
    pub version: u32,
    pub fingerprint: String,
    pub items: Vec<ResolvedItem>,
}

/// Splits `name@N` into the name and the optional version.
pub fn split_pin(text: &str) -> Result<(&str, Option<u32>), String> {
    match text.split_once('@') {
        None => Ok((text, None)),
        Some((name, version)) => version
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .map(|v| (name, Some(v)))
            .ok_or_else(|| {
                format!(
                    "`{text}`: the part after `@` must be a version number >= 1, like `{name}@2`"
                )
            }),
    }
}

/// Checks an object or field name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_loosely() {
        for (text, kind) in [
            ("FeatureView", Kind::FeatureView),
            ("feature_views", Kind::FeatureView),
            ("views", Kind::FeatureView),
            ("entities", Kind::Entity),
            ("Entity", Kind::Entity),
            ("source", Kind::Source),
            ("feature-service", Kind::FeatureService),
        ] {
            assert_eq!(Kind::parse(text), Some(kind), "{text}");
        }
        assert_eq!(Kind::parse("table"), None);
    }

    #[test]
    fn pins_split() {
        assert_eq!(split_pin("a"), Ok(("a", None)));
        assert_eq!(split_pin("a@3"), Ok(("a", Some(3))));
        assert!(split_pin("a@0").is_err());
        assert!(split_pin("a@x").is_err());
    }

    #[test]
    fn names_validate() {
        assert!(valid_name("driver_stats"));
        assert!(valid_name("_x1"));
        assert!(!valid_name("1x"));
        assert!(!valid_name("a-b"));
        assert!(!valid_name(""));
        assert!(!valid_name("a__b@1"));
    }
}
