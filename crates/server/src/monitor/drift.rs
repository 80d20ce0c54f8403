//! Drift between two profiles of one subject, with the registry's thresholds.

use quiver_core::model::Kind;
use quiver_core::monitoring::band_for;
use quiver_core::types::Micros;
use quiver_monitor::{DriftReport, Profile};

use super::{Monitor, SubjectRef};
use crate::error::{Error, Result};

/// Where one side of a comparison comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ProfileSource {
    Stored(u64),
    Window { start: Micros, end: Micros },
}

impl Monitor {
    /// The reference and current profiles (computed and stored when windows) and the report.
    pub(crate) async fn drift(
        &self,
        subject: &SubjectRef,
        reference: ProfileSource,
        current: ProfileSource,
    ) -> Result<(Profile, Profile, DriftReport)> {
        let reference = self.side(subject, reference, "reference").await?;
        let current = self.side(subject, current, "current").await?;
        let registry = self.registry.snapshot();
        let service = subject.service_monitoring(&registry);
        let report = quiver_monitor::compare(&reference, &current, |view, metric| {
            let name = view.split('@').next().unwrap_or(view);
            let view = registry
                .history(Kind::FeatureView, name)
                .map(|h| &h.metadata.monitoring);
            band_for(metric, service, view)
        })?;
        Ok((reference, current, report))
    }

    async fn side(
        &self,
        subject: &SubjectRef,
        source: ProfileSource,
        field: &str,
    ) -> Result<Profile> {
        match source {
            ProfileSource::Window { start, end } => self.profile_window(subject, start, end).await,
            ProfileSource::Stored(id) => {
                let profile = self.get(id).await?;
                let of = &profile.subject;
                if of.kind != subject.kind() || of.name != subject.name() {
                    return Err(Error::invalid(
                        field,
                        format!(
                            "profile {id} is of {} `{}`, not of {} `{}`; compare profiles of one subject",
                            of.kind,
                            of.name,
                            subject.kind(),
                            subject.name()
                        ),
                    ));
                }
                Ok(profile)
            }
        }
    }
}
