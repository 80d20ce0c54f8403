//! What a request asks for: a feature service (`name`, `name@N`) or `view:feature` refs,
//! resolved against one registry snapshot into exact view versions and feature lists, and the
//! names their output columns get (`feature`, or `prefix__feature` with full names).
//!
//! Every path that serves features uses this one resolution: the online read, the training
//! join and the entity-less range read.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::model::{Feature, JoinKey, split_pin};
use crate::registry::RegistryState;
use crate::{ResolvedService, ResolvedView};

/// The selector of a request, validated on receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    /// A feature service `name` or `name@N`; with a fingerprint, the service must have it.
    Service {
        reference: String,
        expected_fingerprint: Option<String>,
    },
    /// `view:feature` refs (`view@N:feature` pins a version).
    Features(Vec<String>),
}

/// One view of a selection: an exact version and the features asked of it, in request order.
#[derive(Debug, Clone)]
pub struct SelectedView {
    pub view: ResolvedView,
    /// Feature names, in request order, without duplicates.
    pub features: Vec<String>,
    /// Position of each of `features` in `view.features`.
    pub positions: Vec<usize>,
    /// Prefix of full names: the service item's alias or the view name.
    pub prefix: String,
}

impl SelectedView {
    /// The selected features' definitions, in request order.
    pub fn selected_features(&self) -> impl Iterator<Item = &Feature> {
        self.positions.iter().map(|p| &self.view.features[*p])
    }

    /// The output column name of `feature`.
    pub fn output_name(&self, feature: &str, full_names: bool) -> String {
        if full_names {
            format!("{}__{feature}", self.prefix)
        } else {
            feature.to_string()
        }
    }

    fn push_feature(&mut self, feature: &str, position: usize) {
        if !self.features.iter().any(|f| f == feature) {
            self.features.push(feature.to_string());
            self.positions.push(position);
        }
    }
}

/// A resolved selector: the service (if one was asked for) and its views.
#[derive(Debug, Clone)]
pub struct Selection {
    pub service: Option<ResolvedService>,
    pub views: Vec<SelectedView>,
}

impl Selection {
    /// Resolves `selector` against one registry snapshot.
    pub fn resolve(registry: &RegistryState, selector: &Selector) -> Result<Selection> {
        match selector {
            Selector::Service {
                reference,
                expected_fingerprint,
            } => resolve_service(registry, reference, expected_fingerprint.as_deref()),
            Selector::Features(refs) => resolve_refs(registry, refs),
        }
    }

    /// The join keys of every selected view, each name once, in first-seen order (selection
    /// order, then key order): `(view index, key position in that view, key)`. The one order
    /// the served-row log samples, writes and reads keys in.
    pub fn distinct_keys(&self) -> Vec<(usize, usize, &JoinKey)> {
        let mut keys: Vec<(usize, usize, &JoinKey)> = Vec::new();
        for (v, selected) in self.views.iter().enumerate() {
            for (k, key) in selected.view.join_keys.iter().enumerate() {
                if !keys.iter().any(|(_, _, seen)| seen.name == key.name) {
                    keys.push((v, k, key));
                }
            }
        }
        keys
    }

    /// Output names per view and feature; a collision is INVALID_ARGUMENT naming the names.
    pub fn output_names(&self, full_names: bool) -> Result<Vec<Vec<String>>> {
        let names: Vec<Vec<String>> = self
            .views
            .iter()
            .map(|v| {
                v.features
                    .iter()
                    .map(|f| v.output_name(f, full_names))
                    .collect()
            })
            .collect();
        let colliding = collisions(names.iter().flatten().map(String::as_str));
        if !colliding.is_empty() {
            return Err(Error::invalid(
                "features",
                format!(
                    "feature names collide: {}; ask for full names (`view__feature`) or select fewer features",
                    colliding.join(", ")
                ),
            ));
        }
        Ok(names)
    }
}

/// Every name that appears more than once, sorted.
pub fn collisions<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for name in names {
        *counts.entry(name).or_default() += 1;
    }
    counts
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(name, _)| name.to_string())
        .collect()
}

fn resolve_service(
    registry: &RegistryState,
    reference: &str,
    expected: Option<&str>,
) -> Result<Selection> {
    let service = registry.service(reference)?.clone();
    if let Some(expected) = expected
        && expected != service.fingerprint
    {
        return Err(Error::FingerprintMismatch {
            object: format!("feature service `{}@{}`", service.name, service.version),
            expected: expected.to_string(),
            actual: service.fingerprint.clone(),
        });
    }
    let views = service
        .items
        .iter()
        .map(|item| {
            let view = registry
                .view_version(&item.view, item.view_version)?
                .clone();
            let positions = item
                .features
                .iter()
                .map(|f| view.feature_position(f))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|m| {
                    Error::Corrupt(format!(
                        "service `{}@{}`: {m}",
                        service.name, service.version
                    ))
                })?;
            Ok(SelectedView {
                features: item.features.clone(),
                positions,
                prefix: item.prefix().to_string(),
                view,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Selection {
        service: Some(service),
        views,
    })
}

fn resolve_refs(registry: &RegistryState, refs: &[String]) -> Result<Selection> {
    if refs.is_empty() {
        return Err(Error::invalid(
            "features.refs",
            "no feature refs given; use `view:feature`",
        ));
    }
    let mut views: Vec<SelectedView> = Vec::new();
    for (i, reference) in refs.iter().enumerate() {
        let field = format!("features.refs[{i}]");
        let Some((view_ref, feature)) = reference.split_once(':') else {
            return Err(Error::invalid(
                field,
                format!("`{reference}` is not `view:feature`"),
            ));
        };
        split_pin(view_ref).map_err(|m| Error::invalid(&field, m))?;
        let view = registry.view(view_ref)?;
        let position = view
            .feature_position(feature)
            .map_err(|m| Error::invalid(&field, m))?;
        match views.iter_mut().find(|v| v.view.name == view.name) {
            Some(selected) if selected.view.version != view.version => {
                return Err(Error::invalid(
                    field,
                    format!("view `{}` is asked for at two versions", view.name),
                ));
            }
            Some(selected) => selected.push_feature(feature, position),
            None => views.push(SelectedView {
                view: view.clone(),
                features: vec![feature.to_string()],
                positions: vec![position],
                prefix: view.name.clone(),
            }),
        }
    }
    Ok(Selection {
        service: None,
        views,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ManifestFile, parse_manifests};
    use crate::plan::{NoSchemaCheck, apply};

    fn registry() -> RegistryState {
        let declared = parse_manifests(&[ManifestFile {
            path: "/repo/m.yaml".into(),
            content: crate::testdata::EXAMPLE.into(),
        }])
        .expect("the example parses");
        apply(
            &RegistryState::default(),
            declared,
            Some(0),
            false,
            &NoSchemaCheck,
            1,
        )
        .expect("the example applies")
        .0
    }

    fn refs(refs: &[&str]) -> Selector {
        Selector::Features(refs.iter().map(|r| r.to_string()).collect())
    }

    #[test]
    fn a_service_resolves_to_its_pinned_views() -> Result<()> {
        let registry = registry();
        let selector = Selector::Service {
            reference: "driver_model".into(),
            expected_fingerprint: None,
        };
        let selection = Selection::resolve(&registry, &selector)?;
        let [view] = selection.views.as_slice() else {
            panic!("one view expected: {selection:?}");
        };
        assert_eq!(view.view.pinned_name(), "driver_stats@1");
        assert_eq!(view.features, ["conv_rate", "vehicle_type"]);
        assert_eq!(view.positions, [0, 1]);
        assert_eq!(
            selection.output_names(true)?,
            [["driver_stats__conv_rate", "driver_stats__vehicle_type"]]
        );
        let wrong = Selector::Service {
            reference: "driver_model".into(),
            expected_fingerprint: Some("nope".into()),
        };
        let error = Selection::resolve(&registry, &wrong)
            .map(|_| ())
            .expect_err("a wrong fingerprint is refused");
        assert!(
            matches!(error, Error::FingerprintMismatch { .. }),
            "{error}"
        );
        Ok(())
    }

    #[test]
    fn refs_keep_request_order_and_drop_repeats() -> Result<()> {
        let registry = registry();
        let selector = refs(&[
            "driver_stats:vehicle_type",
            "driver_stats@1:conv_rate",
            "driver_stats:vehicle_type",
        ]);
        let selection = Selection::resolve(&registry, &selector)?;
        assert_eq!(selection.views.len(), 1);
        assert_eq!(selection.views[0].features, ["vehicle_type", "conv_rate"]);
        assert_eq!(selection.views[0].positions, [1, 0]);
        let names: Vec<&str> = selection.views[0]
            .selected_features()
            .map(|f| f.name.as_str())
            .collect();
        assert_eq!(names, ["vehicle_type", "conv_rate"]);
        Ok(())
    }

    #[test]
    fn bad_refs_name_the_field_and_the_fix() {
        let registry = registry();
        for (refs_given, field, message) in [
            (
                vec!["driver_stats"],
                "features.refs[0]",
                "is not `view:feature`",
            ),
            (
                vec!["driver_stats:speed"],
                "features.refs[0]",
                "view `driver_stats@1` has no feature `speed`; it has: conv_rate, vehicle_type",
            ),
            (
                vec!["driver_stats:conv_rate", "driver_stats@x:conv_rate"],
                "features.refs[1]",
                "must be a version number",
            ),
            (vec![], "features.refs", "no feature refs given"),
        ] {
            match Selection::resolve(&registry, &refs(&refs_given)) {
                Err(Error::InvalidArgument {
                    field: f,
                    message: m,
                }) => {
                    assert_eq!(f, field, "{refs_given:?}");
                    assert!(m.contains(message), "{refs_given:?}: {m}");
                }
                other => panic!("{refs_given:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn collisions_are_found_and_listed_once() {
        assert_eq!(collisions(["a", "b", "a", "c", "a", "b"]), ["a", "b"]);
        assert!(collisions(["a", "b"]).is_empty());
    }
}
