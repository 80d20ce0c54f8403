//! Resolution of declared objects into versions: references replaced by the exact
//! definitions they point to, fingerprints computed, version numbers chosen. Problems are
//! collected (all at once) with file, object and field.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::Problem;
use crate::fingerprint;
use crate::lineage;
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
        let (join_keys, keys_ok) = self.view_join_keys(object, spec);
        let source = self.view_source(object, spec);
        let features_ok = self.check_view_features(object, spec, &join_keys);
        let source = source?;
        let time_ok = self.check_time_columns(object, spec, &source);
        if !(keys_ok && features_ok && time_ok) {
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
            generation: 0,
        };
        let history = self.state.history(Kind::FeatureView, &object.name);
        let view = ResolvedView {
            generation: lineage::generation_for(history, &view),
            ..view
        };
        self.views.insert(object.name.clone(), view.clone());
        Some(view)
    }

    /// The view's join keys: its entities' keys in declared order; each name may appear once.
    /// Problems are recorded, and the flag is false if there was any.
    fn view_join_keys(
        &mut self,
        object: &Declared,
        spec: &crate::model::FeatureViewSpec,
    ) -> (Vec<JoinKey>, bool) {
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
        (join_keys, ok)
    }

    fn view_source(
        &mut self,
        object: &Declared,
        spec: &crate::model::FeatureViewSpec,
    ) -> Option<SourceSpec> {
        match self
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
        }
    }

    /// Feature names are unique and none is a join key.
    fn check_view_features(
        &mut self,
        object: &Declared,
        spec: &crate::model::FeatureViewSpec,
        join_keys: &[JoinKey],
    ) -> bool {
        let mut ok = true;
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
        ok
    }

    /// No feature is one of the source's time columns.
    fn check_time_columns(
        &mut self,
        object: &Declared,
        spec: &crate::model::FeatureViewSpec,
        source: &SourceSpec,
    ) -> bool {
        let mut ok = true;
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
        ok
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
            let Some((item, item_ok)) = self.resolve_item(object, item, &field) else {
                ok = false;
                continue;
            };
            ok &= item_ok;
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

    /// One service item fixed to an exact view version and feature list (`None` if the view
    /// is unknown). Problems are recorded, and the flag is false if there was any.
    fn resolve_item(
        &mut self,
        object: &Declared,
        item: &crate::model::ServiceItem,
        field: &str,
    ) -> Option<(ResolvedItem, bool)> {
        let view = match split_pin(&item.view) {
            Err(message) => {
                self.problem(object, &format!("{field}.view"), message);
                return None;
            }
            Ok((name, None)) => self.views.get(name).cloned(),
            Ok((name, Some(n))) => match self.views.get(name) {
                Some(v) if v.version == n => Some(v.clone()),
                _ => self.state.view_version(name, n).ok().cloned(),
            },
        };
        let Some(view) = view else {
            self.problem(object, &format!("{field}.view"), format!("unknown feature view `{}`; declare it or fix the name (a pin `name@N` must name an existing version)", item.view));
            return None;
        };
        let mut ok = true;
        let features = match &item.features {
            None => view.features.iter().map(|f| f.name.clone()).collect(),
            Some(list) => {
                for (j, name) in list.iter().enumerate() {
                    if let Err(message) = view.feature_position(name) {
                        self.problem(object, &format!("{field}.features[{j}]"), message);
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
        let resolved = ResolvedItem {
            view: view.name.clone(),
            view_version: view.version,
            view_fingerprint: view.fingerprint.clone(),
            features,
            alias: item.alias.clone(),
        };
        Some((resolved, ok))
    }
}
