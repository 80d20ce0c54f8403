//! What a request asks for: a feature service (`name`, `name@N`) or `view:feature` refs,
//! resolved against one registry snapshot into exact view versions and feature lists.

use std::collections::BTreeMap;

use quiver_core::model::split_pin;
use quiver_core::{RegistryState, ResolvedService, ResolvedView};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct SelectedView {
    pub view: ResolvedView,
    pub features: Vec<String>,
    /// Prefix of full names: the service item's alias or the view name.
    pub prefix: String,
}

#[derive(Debug, Clone)]
pub struct Selection {
    pub service: Option<ResolvedService>,
    pub views: Vec<SelectedView>,
}

impl Selection {
    /// Output names per view and feature; a collision is INVALID_ARGUMENT naming the names.
    pub fn output_names(&self, full_names: bool) -> Result<Vec<Vec<String>>> {
        let names: Vec<Vec<String>> = self
            .views
            .iter()
            .map(|v| {
                v.features
                    .iter()
                    .map(|f| {
                        if full_names {
                            format!("{}__{f}", v.prefix)
                        } else {
                            f.clone()
                        }
                    })
                    .collect()
            })
            .collect();
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for name in names.iter().flatten() {
            *seen.entry(name).or_default() += 1;
        }
        let colliding: Vec<&str> = seen
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(name, _)| name)
            .collect();
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

/// Resolves a service or refs. `expected_fingerprint`, when non-empty, must equal the
/// service's fingerprint.
pub fn resolve(
    registry: &RegistryState,
    service: Option<&str>,
    refs: Option<&[String]>,
    expected_fingerprint: &str,
) -> Result<Selection> {
    match (service, refs) {
        (Some(name), None) => resolve_service(registry, name, expected_fingerprint),
        (None, Some(refs)) => {
            if !expected_fingerprint.is_empty() {
                return Err(Error::invalid(
                    "expected_fingerprint",
                    "only feature services have fingerprints; drop it or ask by `feature_service`",
                ));
            }
            resolve_refs(registry, refs)
        }
        _ => Err(Error::invalid(
            "selector",
            "set either `feature_service` (name or name@N) or `features` (view:feature refs)",
        )),
    }
}

fn resolve_service(registry: &RegistryState, name: &str, expected: &str) -> Result<Selection> {
    let service = registry.service(name)?.clone();
    if !expected.is_empty() && expected != service.fingerprint {
        return Err(quiver_core::Error::FingerprintMismatch {
            object: format!("feature service `{}@{}`", service.name, service.version),
            expected: expected.to_string(),
            actual: service.fingerprint.clone(),
        }
        .into());
    }
    let views = service
        .items
        .iter()
        .map(|item| {
            Ok(SelectedView {
                view: registry
                    .view_version(&item.view, item.view_version)?
                    .clone(),
                features: item.features.clone(),
                prefix: item.prefix().to_string(),
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
        if view.feature(feature).is_none() {
            let known: Vec<&str> = view.features.iter().map(|f| f.name.as_str()).collect();
            return Err(Error::invalid(
                field,
                format!(
                    "view `{}` has no feature `{feature}`; it has: {}",
                    view.pinned_name(),
                    known.join(", ")
                ),
            ));
        }
        match views.iter_mut().find(|v| v.view.name == view.name) {
            Some(selected) if selected.view.version != view.version => {
                return Err(Error::invalid(
                    field,
                    format!("view `{}` is asked for at two versions", view.name),
                ));
            }
            Some(selected) => {
                if !selected.features.iter().any(|f| f == feature) {
                    selected.features.push(feature.to_string());
                }
            }
            None => views.push(SelectedView {
                view: view.clone(),
                features: vec![feature.to_string()],
                prefix: view.name.clone(),
            }),
        }
    }
    Ok(Selection {
        service: None,
        views,
    })
}
