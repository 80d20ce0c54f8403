//! Profile retention (`--profile-retention-days`): profiles older than the retention are
//! removed, except those drift checks still compare against: each view's and service's newest
//! training-export profile (`reference: latest_export`), every profile a schedule names
//! (`reference: profile:ID`), and the newest profile of all (so that ids are never reused
//! after a restart).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use quiver_core::Kind;
use quiver_core::monitoring::ScheduleReference;
use quiver_core::types::Micros;
use quiver_monitor::{Origin, Subject};
use serde::Deserialize;

use super::Monitor;
use crate::error::Result;
use crate::run_blocking;

/// The fields of a stored profile that retention needs (the sketches are skipped).
#[derive(Debug, Deserialize)]
struct Head {
    id: u64,
    created_at: Micros,
    subject: Subject,
    origin: Origin,
}

impl Monitor {
    /// Removes the profiles created before `now - retention` that no drift check needs;
    /// returns how many were removed (blocking work runs on the blocking pool).
    pub(crate) async fn prune_profiles(&self, retention: Micros) -> Result<usize> {
        let cutoff = self.clock.now().saturating_sub(retention);
        let pinned = self.pinned_profiles();
        let store = Arc::clone(&self.store);
        run_blocking(move || {
            let mut heads = Vec::new();
            store.profiles(usize::MAX, |json| {
                // A profile this version cannot read is left alone.
                if let Ok(head) = serde_json::from_slice::<Head>(json) {
                    heads.push(head);
                }
                false
            })?;
            let doomed = doomed(&heads, cutoff, &pinned);
            if !doomed.is_empty() {
                store.delete_profiles(&doomed)?;
            }
            Ok(doomed.len())
        })
        .await
    }

    /// The profiles the registry's schedules name.
    fn pinned_profiles(&self) -> BTreeSet<u64> {
        let registry = self.registry.snapshot();
        [Kind::FeatureView, Kind::FeatureService]
            .into_iter()
            .flat_map(|kind| registry.list(kind).map(|(history, _)| history))
            .filter_map(|history| match &history.metadata.monitoring.schedule {
                Some(schedule) => match schedule.reference {
                    ScheduleReference::Profile(id) => Some(id),
                    ScheduleReference::LatestExport => None,
                },
                None => None,
            })
            .collect()
    }
}

/// The ids to remove among `heads` (newest first).
fn doomed(heads: &[Head], cutoff: Micros, pinned: &BTreeSet<u64>) -> Vec<u64> {
    let mut newest_export: HashMap<(&str, &str), u64> = HashMap::new();
    for head in heads {
        if matches!(head.origin, Origin::Export { .. }) {
            let subject = (head.subject.kind.as_str(), head.subject.name.as_str());
            let id = newest_export.entry(subject).or_insert(head.id);
            *id = (*id).max(head.id);
        }
    }
    let kept: BTreeSet<u64> = newest_export.into_values().collect();
    let newest = heads.iter().map(|h| h.id).max();
    heads
        .iter()
        .filter(|h| h.created_at < cutoff)
        .filter(|h| !kept.contains(&h.id) && !pinned.contains(&h.id))
        .filter(|h| Some(h.id) != newest)
        .map(|h| h.id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(id: u64, created_at: Micros, name: &str, export: bool) -> Head {
        Head {
            id,
            created_at,
            subject: Subject {
                kind: "service".into(),
                name: name.into(),
                version: 1,
                fingerprint: String::new(),
                views: Vec::new(),
            },
            origin: match export {
                true => Origin::Export { path: "x".into() },
                false => Origin::OnDemand,
            },
        }
    }

    #[test]
    fn old_profiles_go_unless_a_drift_check_needs_them() {
        let heads = vec![
            head(9, 90, "a", false),
            head(8, 80, "b", false),
            head(7, 10, "a", true),
            head(6, 10, "a", true),
            head(5, 10, "a", false),
            head(4, 10, "b", true),
            head(3, 10, "c", false),
            head(2, 10, "c", false),
        ];
        let pinned = BTreeSet::from([3]);
        let mut gone = doomed(&heads, 50, &pinned);
        gone.sort();
        // 9, 8: young. 7: a's newest export. 4: b's newest export. 3: pinned.
        assert_eq!(gone, vec![2, 5, 6]);
        // The newest profile stays even when it is old.
        assert_eq!(
            doomed(&heads[..1], 100, &BTreeSet::new()),
            Vec::<u64>::new()
        );
    }
}
