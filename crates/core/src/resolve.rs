//! Resolution of declared objects into versions: references replaced by the exact
//! definitions they point to, fingerprints computed, version numbers chosen. Problems are
//! collected (all at once) with file, object and field.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Problem;
use crate::fingerprint;
use crate::model::{
    Declared, JoinKey, Kind, Metadata, ResolvedItem, ResolvedService, ResolvedView, SourceSpec,
    Spec, split_pin, valid_name,
};
use crate::registry::{RegistryState, object_key};

/// A declared object after resolution.
pub(crate) struct Desired {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) spec: Spec,
    pub(crate) metadata: Metadata,
    pub(crate) origin: String,
    pub(crate) fingerprint: String,
    pub(crate) view: Option<ResolvedView>,
    pub(crate) service: Option<ResolvedService>,
}

pub(crate) struct Resolver<'a> {
    pub(crate) state: &'a RegistryState,
    pub(crate) declared: &'a BTreeMap<String, Declared>,
    pub(crate) problems: &'a mut Vec<Problem>,
    /// Desired views resolved so far (views resolve before services).
    pub(crate) views: BTreeMap<String, ResolvedView>,
}

impl Resolver<'_> {
    fn problem(&mut self, object: &Declared, field: &str, message: String) {
        self.problems.push(Problem {
            file: object.origin.clone(),
            object: object.label(),
            field: field.to_string(),
            message,
        });
    }

    /// The version number a new fingerprint gets: the live one when unchanged, else next.
    fn version_for(&self, kind: Kind, name: &str, fingerprint: &str) -> u32 {
        match self.state.history(kind, name) {
            Some(h) if h.latest().is_some_and(|v| v.fingerprint == fingerprint) => {
                h.versions.len() as u32
            }
            Some(h) => h.versions.len() as u32 + 1,
            None => 1,
        }
    }

    pub(crate) fn resolve(&mut self, object: &Declared) -> Option<Desired> {
        let (fingerprint, view, service) = match &object.spec {
            Spec::Entity(spec) => {
                let mut seen = BTreeSet::new();
                for (i, key) in spec.join_keys.iter().enumerate() {
                    if !seen.insert(key.name.as_str()) {
                        self.problem(
                            object,
                            &format!("join_keys[{i}].name"),
                            format!("join key `{}` appears twice", key.name),
                        );
                    }
                }
                (fingerprint::entity(spec), None, None)
            }
            Spec::Source(spec) => (fingerprint::source(spec), None, None),
            Spec::FeatureView(spec) => {
                let view = self.resolve_view(object, spec)?;
                (view.fingerprint.clone(), Some(view), None)
            }
            Spec::FeatureService(spec) => {
                let service = self.resolve_service(object, &spec.items)?;
                (service.fingerprint.clone(), None, Some(service))
            }
        };
        Some(Desired {
            kind: object.kind(),
            name: object.name.clone(),
            spec: object.spec.clone(),
            metadata: object.metadata.clone(),
            origin: object.origin.clone(),
            fingerprint,
            view,
            service,
        })
    }

    fn resolve_view(
        &mut self,
        object: &Declared,
        spec: &crate::model::FeatureViewSpec,
    ) -> Option<ResolvedView> {
        let mut join_keys: Vec<JoinKey> = Vec::new();
        let mut ok = true;
        for (i, entity) in spec.entities.iter().enumerate() {
            match self
                .declared
                .get(&object_key(Kind::Entity, entity))
                .map(|o| &o.spec)
            {
                Some(Spec::Entity(e)) => {
                    for key in &e.join_keys {
                        if join_keys.iter().any(|k| k.name == key.name) {
                            self.problem(object, &format!("entities[{i}]"), format!("join key `{}` comes from two entities; each key name may appear once per view", key.name));
                            ok = false;
                        }
                        join_keys.push(key.clone());
                    }
                }
                _ => {
                    self.problem(object, &format!("entities[{i}]"), format!("unknown entity `{entity}`; declare it with `kind: Entity` or fix the name"));
                    ok = false;
                }
            }
        }
        let source: Option<SourceSpec> = match self
            .declared
            .get(&object_key(Kind::Source, &spec.source))
            .map(|o| &o.spec)
        {
            Some(Spec::Source(s)) => Some(s.clone()),
            _ => {
                self.problem(
                    object,
                    "source",
                    format!(
                        "unknown source `{}`; declare it with `kind: Source` or fix the name",
                        spec.source
                    ),
                );
                None
            }
        };
        let mut seen = BTreeSet::new();
        for (i, feature) in spec.features.iter().enumerate() {
            if !seen.insert(feature.name.as_str()) {
                self.problem(
                    object,
                    &format!("features[{i}].name"),
                    format!("feature `{}` appears twice", feature.name),
                );
                ok = false;
            }
            if join_keys.iter().any(|k| k.name == feature.name) {
                self.problem(object, &format!("features[{i}].name"), format!("feature `{}` has the name of a join key; rename it (source `renames:` can map columns)", feature.name));
                ok = false;
            }
        }
        let source = source?;
        for (field, column) in [
            ("event_time", Some(&source.event_time)),
            ("created_time", source.created_time.as_ref()),
        ] {
            if let Some(column) = column
                && spec.features.iter().any(|f| f.name == *column)
            {
                self.problem(object, "features", format!("feature `{column}` is the source's {field} column; time columns cannot be features"));
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        let fingerprint = fingerprint::view(
            &join_keys,
            &spec.entities,
            &source,
            spec.ttl,
            spec.online,
            &spec.features,
        );
        let view = ResolvedView {
            name: object.name.clone(),
            version: self.version_for(Kind::FeatureView, &object.name, &fingerprint),
            fingerprint,
            entities: spec.entities.clone(),
            join_keys,
            source_name: spec.source.clone(),
            source,
            ttl: spec.ttl,
            online: spec.online,
            features: spec.features.clone(),
        };
        self.views.insert(object.name.clone(), view.clone());
        Some(view)
    }

    fn resolve_service(
        &mut self,
        object: &Declared,
        items: &[crate::model::ServiceItem],
    ) -> Option<ResolvedService> {
        let mut resolved = Vec::new();
        let mut ok = true;
        let mut short_names: BTreeMap<String, String> = BTreeMap::new();
        let mut prefixes = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let field = format!("features[{i}]");
            let view = match split_pin(&item.view) {
                Err(message) => {
                    self.problem(object, &format!("{field}.view"), message);
                    ok = false;
                    continue;
                }
                Ok((name, None)) => self.views.get(name).cloned(),
                Ok((name, Some(n))) => match self.views.get(name) {
                    Some(v) if v.version == n => Some(v.clone()),
                    _ => self.state.view_version(name, n).ok().cloned(),
                },
            };
            let Some(view) = view else {
                self.problem(object, &format!("{field}.view"), format!("unknown feature view `{}`; declare it or fix the name (a pin `name@N` must name an existing version)", item.view));
                ok = false;
                continue;
            };
            let features = match &item.features {
                None => view
                    .features
                    .iter()
                    .map(|f| f.name.clone())
                    .collect::<Vec<_>>(),
                Some(list) => {
                    for (j, name) in list.iter().enumerate() {
                        if view.feature(name).is_none() {
                            let known: Vec<&str> =
                                view.features.iter().map(|f| f.name.as_str()).collect();
                            self.problem(
                                object,
                                &format!("{field}.features[{j}]"),
                                format!(
                                    "view `{}` has no feature `{name}`; it has: {}",
                                    view.name,
                                    known.join(", ")
                                ),
                            );
                            ok = false;
                        }
                    }
                    list.clone()
                }
            };
            if let Some(alias) = &item.alias
                && !valid_name(alias)
            {
                self.problem(
                    object,
                    &format!("{field}.alias"),
                    format!("`{alias}` is not a valid alias; use letters, digits and `_`"),
                );
                ok = false;
            }
            let item = ResolvedItem {
                view: view.name.clone(),
                view_version: view.version,
                view_fingerprint: view.fingerprint.clone(),
                features,
                alias: item.alias.clone(),
            };
            if !prefixes.insert(item.prefix().to_string()) {
                self.problem(
                    object,
                    &field,
                    format!(
                        "view `{}` is served twice under the same name; give one item an `alias:`",
                        item.prefix()
                    ),
                );
                ok = false;
            }
            for feature in &item.features {
                if let Some(other) = short_names.insert(feature.clone(), item.prefix().to_string())
                {
                    self.problem(object, &field, format!("feature name `{feature}` collides: served by `{other}` and `{}`; choose features with `features: [...]` so each name is served once", item.prefix()));
                    ok = false;
                }
            }
            resolved.push(item);
        }
        if !ok {
            return None;
        }
        let fingerprint = fingerprint::service(&resolved);
        Some(ResolvedService {
            name: object.name.clone(),
            version: self.version_for(Kind::FeatureService, &object.name, &fingerprint),
            fingerprint,
            items: resolved,
        })
    }
}
