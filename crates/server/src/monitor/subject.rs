//! What a monitoring request names (a view or a service) resolved against one snapshot.

use quiver_core::RegistryState;
use quiver_core::model::Kind;
use quiver_core::monitoring::MonitoringSpec;
use quiver_core::selection::{Selection, Selector};
use quiver_monitor::Subject;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub(crate) enum SubjectRef {
    View(String),
    Service(String),
}

/// A subject at an exact version, all its features selected.
#[derive(Debug)]
pub(crate) struct Resolved {
    pub(crate) selection: Selection,
    pub(crate) subject: Subject,
}

impl SubjectRef {
    pub(crate) fn from_wire(view: Option<&str>, service: Option<&str>) -> Result<SubjectRef> {
        match (view, service) {
            (Some(v), None) if !v.is_empty() => Ok(SubjectRef::View(v.to_string())),
            (None, Some(s)) if !s.is_empty() => Ok(SubjectRef::Service(s.to_string())),
            _ => Err(Error::invalid(
                "subject",
                "name a `view` or a `service` (`name` or `name@N`)",
            )),
        }
    }

    pub(crate) fn name(&self) -> &str {
        let reference = match self {
            SubjectRef::View(r) | SubjectRef::Service(r) => r,
        };
        reference.split('@').next().unwrap_or(reference)
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            SubjectRef::View(_) => "view",
            SubjectRef::Service(_) => "service",
        }
    }

    pub(crate) fn resolve(&self, registry: &RegistryState) -> Result<Resolved> {
        let selector = match self {
            SubjectRef::Service(reference) => Selector::Service {
                reference: reference.clone(),
                expected_fingerprint: None,
            },
            SubjectRef::View(reference) => {
                let view = registry.view(reference)?;
                let refs = view
                    .features
                    .iter()
                    .map(|f| format!("{}:{}", view.pinned_name(), f.name))
                    .collect();
                Selector::Features(refs)
            }
        };
        let selection = Selection::resolve(registry, &selector)?;
        let subject = subject_of(&selection);
        Ok(Resolved { selection, subject })
    }

    /// The `monitoring:` block of the subject (a service's), if it is a service.
    pub(crate) fn service_monitoring<'a>(
        &self,
        registry: &'a RegistryState,
    ) -> Option<&'a MonitoringSpec> {
        match self {
            SubjectRef::Service(_) => registry
                .history(Kind::FeatureService, self.name())
                .map(|h| &h.metadata.monitoring),
            SubjectRef::View(_) => None,
        }
    }
}

/// The profile subject of a selection: its service, or its one view.
pub(crate) fn subject_of(selection: &Selection) -> Subject {
    let views = selection
        .views
        .iter()
        .map(|v| v.view.pinned_name())
        .collect();
    match (&selection.service, selection.views.as_slice()) {
        (Some(service), _) => Subject {
            kind: "service".into(),
            name: service.name.clone(),
            version: service.version,
            fingerprint: service.fingerprint.clone(),
            views,
        },
        (None, [one]) => Subject {
            kind: "view".into(),
            name: one.view.name.clone(),
            version: one.view.version,
            fingerprint: one.view.fingerprint.clone(),
            views,
        },
        (None, _) => Subject {
            kind: "features".into(),
            name: String::new(),
            version: 0,
            fingerprint: String::new(),
            views,
        },
    }
}
