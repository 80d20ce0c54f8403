//! The registry state: every object's full version history, and lookups on it.
//!
//! A [`RegistryState`] is a value: servers hold one behind an `Arc` and swap it atomically on
//! apply, so request paths resolve definitions from memory and never read storage.
//! Invariants: versions of an object are numbered 1, 2, ... without gaps and never change once
//! written; `version` (the registry version) grows by one per apply that changed anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Declared, Kind, Metadata, ResolvedService, ResolvedView, Spec, split_pin};
use crate::types::Micros;

/// One immutable version of an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectVersion {
    pub version: u32,
    pub fingerprint: String,
    /// The registry version of the apply that created it.
    pub registry_version: u64,
    pub created_at: Micros,
    /// The principal whose apply created it (empty before auth recorded it).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applied_by: String,
    pub spec: Spec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view: Option<ResolvedView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ResolvedService>,
}

/// Every version of one object, its current metadata and whether it is deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectHistory {
    pub kind: Kind,
    pub name: String,
    pub versions: Vec<ObjectVersion>,
    pub metadata: Metadata,
    pub deleted: bool,
    /// Manifest file of the last apply that declared it.
    pub origin: String,
}

impl ObjectHistory {
    pub fn latest(&self) -> Option<&ObjectVersion> {
        self.versions.last()
    }

    /// The latest version unless the object is deleted.
    pub fn live(&self) -> Option<&ObjectVersion> {
        if self.deleted { None } else { self.latest() }
    }

    pub fn version(&self, version: u32) -> Option<&ObjectVersion> {
        self.versions.get((version as usize).checked_sub(1)?)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryState {
    /// Registry version: 0 when empty, +1 per apply that changed something.
    pub version: u64,
    pub updated_at: Micros,
    /// Keyed by `Kind/name`.
    pub objects: BTreeMap<String, ObjectHistory>,
}

pub fn object_key(kind: Kind, name: &str) -> String {
    format!("{kind}/{name}")
}

impl RegistryState {
    /// Records `principal` as the author of the versions this registry version created.
    pub fn record_applier(&mut self, principal: &str) {
        let registry_version = self.version;
        for history in self.objects.values_mut() {
            for version in &mut history.versions {
                if version.registry_version == registry_version && version.applied_by.is_empty() {
                    version.applied_by = principal.to_string();
                }
            }
        }
    }

    pub fn history(&self, kind: Kind, name: &str) -> Option<&ObjectHistory> {
        self.objects.get(&object_key(kind, name))
    }

    /// Resolves `name` (latest live version) or `name@N` (any version, even of a deleted
    /// object: versions are immutable and stay readable).
    pub fn get(&self, kind: Kind, reference: &str) -> Result<(&ObjectHistory, &ObjectVersion)> {
        let (name, pin) =
            split_pin(reference).map_err(|message| Error::invalid("name", message))?;
        let not_found = || Error::NotFound {
            kind: kind.name(),
            name: name.to_string(),
        };
        let history = self.history(kind, name).ok_or_else(not_found)?;
        let version = match pin {
            None => history.live().ok_or_else(not_found)?,
            Some(n) => history.version(n).ok_or_else(|| Error::VersionNotFound {
                kind: kind.name(),
                name: name.to_string(),
                version: n,
                latest: history.versions.len() as u32,
            })?,
        };
        Ok((history, version))
    }

    /// Live objects of one kind, by name.
    pub fn list(&self, kind: Kind) -> impl Iterator<Item = (&ObjectHistory, &ObjectVersion)> {
        self.objects
            .values()
            .filter(move |h| h.kind == kind)
            .filter_map(|h| h.live().map(|v| (h, v)))
    }

    pub fn view(&self, reference: &str) -> Result<&ResolvedView> {
        let (_, version) = self.get(Kind::FeatureView, reference)?;
        version
            .view
            .as_ref()
            .ok_or_else(|| Error::Corrupt(format!("view `{reference}` has no resolved form")))
    }

    pub fn service(&self, reference: &str) -> Result<&ResolvedService> {
        let (_, version) = self.get(Kind::FeatureService, reference)?;
        version
            .service
            .as_ref()
            .ok_or_else(|| Error::Corrupt(format!("service `{reference}` has no resolved form")))
    }

    /// The definitions live in this state, as if declared again: applying them to a later
    /// state returns to this state's definitions (a rollback), through the same plan.
    pub fn declared(&self) -> Vec<Declared> {
        self.objects
            .values()
            .filter_map(|history| {
                history.live().map(|version| Declared {
                    name: history.name.clone(),
                    spec: version.spec.clone(),
                    metadata: history.metadata.clone(),
                    origin: history.origin.clone(),
                })
            })
            .collect()
    }

    /// The exact view version a service item was fixed to.
    pub fn view_version(&self, name: &str, version: u32) -> Result<&ResolvedView> {
        self.view(&format!("{name}@{version}"))
    }
}
