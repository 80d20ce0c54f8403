//! Plan and apply: validate declared objects, resolve them into versions, diff them against
//! the current state property by property, and build the next state.
//!
//! Manifests are the whole desired state (like Terraform): a live object that no manifest
//! declares any more is deleted. Deletions and breaking changes need `force`.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Problem, Result};
use crate::model::{Declared, Kind, Metadata, ResolvedView};
use crate::properties::{Properties, classify, properties};
use crate::registry::{ObjectHistory, ObjectVersion, RegistryState, object_key};
use crate::resolve::{Desired, Resolver};
use crate::types::Micros;

/// Checks a view's source data (Parquet schema) against the view. Implemented by the offline
/// crate; core stays free of Parquet.
pub trait SourceSchemaCheck {
    /// Returns `(field, message)` pairs, empty when the source fits the view.
    fn check(&self, view: &ResolvedView) -> Vec<(String, String)>;
}

/// A check that accepts everything (for tests of the model alone).
#[derive(Debug)]
pub struct NoSchemaCheck;

impl SourceSchemaCheck for NoSchemaCheck {
    fn check(&self, _view: &ResolvedView) -> Vec<(String, String)> {
        Vec::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropertyChange {
    pub property: String,
    pub old: Option<String>,
    pub new: Option<String>,
    pub breaking: bool,
    /// Description, owner or tags: never creates a version.
    pub metadata: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub action: Action,
    pub from_version: Option<u32>,
    /// The version live after the apply (equal to `from_version` for metadata-only updates).
    pub to_version: Option<u32>,
    pub fingerprint: Option<String>,
    pub properties: Vec<PropertyChange>,
    pub breaking: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub base_version: u64,
    pub changes: Vec<Change>,
    next: RegistryState,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn breaking(&self) -> Vec<String> {
        let mut out = Vec::new();
        for change in self.changes.iter().filter(|c| c.breaking) {
            let label = format!("{}/{}", change.kind, change.name);
            if change.action == Action::Delete {
                out.push(format!("  - {label}: deleted"));
            }
            for p in change.properties.iter().filter(|p| p.breaking) {
                out.push(format!(
                    "  - {label}: {} {} -> {}",
                    p.property,
                    p.old.as_deref().unwrap_or("(none)"),
                    p.new.as_deref().unwrap_or("(removed)")
                ));
            }
        }
        out
    }
}

/// Validates and resolves `declared` against `state` and computes the changes.
pub fn plan(
    state: &RegistryState,
    declared: Vec<Declared>,
    schema_check: &dyn SourceSchemaCheck,
    now: Micros,
) -> Result<Plan> {
    let mut problems = Vec::new();
    let mut by_key: BTreeMap<String, Declared> = BTreeMap::new();
    for object in declared {
        let key = object_key(object.kind(), &object.name);
        if let Some(first) = by_key.get(&key) {
            problems.push(Problem {
                file: object.origin.clone(),
                object: key.clone(),
                field: "name".into(),
                message: format!(
                    "declared twice (also in {}); names are unique per kind",
                    first.origin
                ),
            });
            continue;
        }
        by_key.insert(key, object);
    }
    let mut resolver = Resolver {
        state,
        declared: &by_key,
        problems: &mut problems,
        views: BTreeMap::new(),
    };
    let mut desired: Vec<Desired> = Vec::new();
    for kind in Kind::ALL {
        for object in by_key.values().filter(|o| o.kind() == kind) {
            if let Some(d) = resolver.resolve(object) {
                desired.push(d);
            }
        }
    }
    for d in &desired {
        let Some(view) = &d.view else { continue };
        let unchanged = state
            .history(Kind::FeatureView, &d.name)
            .and_then(|h| h.live())
            .is_some_and(|v| v.fingerprint == d.fingerprint);
        if unchanged || view.source.parquet.is_none() {
            continue;
        }
        for (field, message) in schema_check.check(view) {
            problems.push(Problem {
                file: d.origin.clone(),
                object: object_key(Kind::FeatureView, &d.name),
                field,
                message,
            });
        }
    }
    if !problems.is_empty() {
        return Err(Error::Invalid(problems));
    }
    Ok(diff(state, desired, now))
}

/// Plans and, unless refused, returns the next state. `expected` is the registry version the
/// caller planned against; a different current version is refused (`StaleRegistry`).
pub fn apply(
    state: &RegistryState,
    declared: Vec<Declared>,
    expected: Option<u64>,
    force: bool,
    schema_check: &dyn SourceSchemaCheck,
    now: Micros,
) -> Result<(RegistryState, Plan)> {
    if let Some(expected) = expected
        && expected != state.version
    {
        return Err(Error::StaleRegistry {
            expected,
            actual: state.version,
        });
    }
    let plan = plan(state, declared, schema_check, now)?;
    let breaking = plan.breaking();
    if !breaking.is_empty() && !force {
        return Err(Error::Breaking(breaking));
    }
    let next = if plan.is_empty() {
        state.clone()
    } else {
        plan.next.clone()
    };
    Ok((next, plan))
}

fn desired_properties(d: &Desired) -> Properties {
    properties(&d.spec, d.view.as_ref(), d.service.as_ref(), &d.metadata)
}

fn live_properties(h: &ObjectHistory, v: &ObjectVersion) -> Properties {
    properties(&v.spec, v.view.as_ref(), v.service.as_ref(), &h.metadata)
}

fn diff(state: &RegistryState, desired: Vec<Desired>, now: Micros) -> Plan {
    let mut next = state.clone();
    let mut changes = Vec::new();
    let registry_version = state.version + 1;
    let mut declared_keys = BTreeSet::new();
    for d in desired {
        let key = object_key(d.kind, &d.name);
        declared_keys.insert(key.clone());
        let Some(change) = declared_change(state, &d) else {
            continue;
        };
        let history = next.objects.entry(key).or_insert_with(|| ObjectHistory {
            kind: d.kind,
            name: d.name.clone(),
            versions: Vec::new(),
            metadata: Metadata::default(),
            deleted: false,
            origin: String::new(),
        });
        let version = change.to_version.unwrap_or_default();
        if version as usize > history.versions.len() {
            history.versions.push(ObjectVersion {
                version,
                fingerprint: d.fingerprint.clone(),
                registry_version,
                created_at: now,
                applied_by: String::new(),
                spec: d.spec.clone(),
                view: d.view.clone(),
                service: d.service.clone(),
            });
        }
        history.metadata = d.metadata.clone();
        history.deleted = false;
        history.origin = d.origin.clone();
        changes.push(change);
    }
    for (key, history) in &state.objects {
        if declared_keys.contains(key) {
            continue;
        }
        if let Some(change) = deletion(state, history) {
            if let Some(h) = next.objects.get_mut(key) {
                h.deleted = true;
            }
            changes.push(change);
        }
    }
    changes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    if !changes.is_empty() {
        next.version = registry_version;
        next.updated_at = now;
    }
    Plan {
        base_version: state.version,
        changes,
        next,
    }
}

/// The change a declared object makes: a create, an update with the properties that differ,
/// or `None` when nothing differs. `to_version` is the version the object ends at.
fn declared_change(state: &RegistryState, d: &Desired) -> Option<Change> {
    let history = state.history(d.kind, &d.name);
    let live = history.and_then(|h| h.live().map(|v| (h, v)));
    let new_props = desired_properties(d);
    let (action, from_version, props) = match live {
        None => (
            Action::Create,
            None,
            compare(state, d.kind, &d.name, &Properties::new(), &new_props),
        ),
        Some((h, v)) => (
            Action::Update,
            Some(v.version),
            compare(state, d.kind, &d.name, &live_properties(h, v), &new_props),
        ),
    };
    if action == Action::Update && props.is_empty() {
        return None;
    }
    // Views and services were versioned by resolution; the rest by fingerprint.
    let version = d
        .view
        .as_ref()
        .map(|v| v.version)
        .or(d.service.as_ref().map(|s| s.version))
        .unwrap_or_else(|| match history {
            Some(h) if h.latest().is_some_and(|v| v.fingerprint == d.fingerprint) => {
                h.versions.len() as u32
            }
            Some(h) => h.versions.len() as u32 + 1,
            None => 1,
        });
    Some(Change {
        kind: d.kind,
        name: d.name.clone(),
        action,
        from_version,
        to_version: Some(version),
        fingerprint: Some(d.fingerprint.clone()),
        breaking: props.iter().any(|p| p.breaking),
        properties: props,
    })
}

/// The deletion of a live object that is no longer declared (`None` if it is not live).
fn deletion(state: &RegistryState, history: &ObjectHistory) -> Option<Change> {
    let live = history.live()?;
    let props = compare(
        state,
        history.kind,
        &history.name,
        &live_properties(history, live),
        &Properties::new(),
    );
    Some(Change {
        kind: history.kind,
        name: history.name.clone(),
        action: Action::Delete,
        from_version: Some(live.version),
        to_version: None,
        fingerprint: None,
        properties: props,
        breaking: true,
    })
}

fn compare(
    state: &RegistryState,
    kind: Kind,
    name: &str,
    old: &Properties,
    new: &Properties,
) -> Vec<PropertyChange> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let (old_value, new_value) = (old.get(key), new.get(key));
            if old_value == new_value {
                return None;
            }
            let (old_value, new_value) = (old_value.cloned(), new_value.cloned());
            let is_create = old.is_empty();
            let breaking = !is_create
                && classify(
                    state,
                    kind,
                    name,
                    key,
                    old_value.as_deref(),
                    new_value.as_deref(),
                );
            Some(PropertyChange {
                metadata: crate::properties::is_metadata(key),
                property: key.clone(),
                old: old_value,
                new: new_value,
                breaking,
            })
        })
        .collect()
}
