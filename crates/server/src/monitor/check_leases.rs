//! Scheduled drift checks across replicas that share an online store: a due check runs on
//! one replica, which holds the lease `drift/<kind>:<name>` while it runs and then leaves
//! the record `drift-ran/<kind>:<name>` for the schedule's `every`; another replica skips a
//! check that is leased or recorded, so one webhook POST and one set of gauges come from
//! each interval. The lease is renewed at a third of `--lease-ttl` while the check runs; one
//! that expires anyway (the store unreachable, the replica stalled) lets another replica run
//! the check too (a duplicate, never a missed check). With the embedded store the lease and the record are
//! in-process and always this replica's (its record expires when the check is due again).

use std::sync::Arc;
use std::time::Duration;

use quiver_core::online_store::{Lease, OnlineStore};
use quiver_core::types::Micros;

use crate::error::Result;

/// The answer to [`CheckLeases::take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// This replica runs the check now.
    Taken,
    /// Another replica runs it or ran it within `every`: its results are the current ones.
    Elsewhere,
    /// This replica ran it within `every` (its own record has not expired yet).
    NotYet,
}

#[derive(Debug)]
pub(crate) struct CheckLeases {
    store: Arc<dyn OnlineStore>,
    /// This replica (`--replica-id`).
    holder: String,
    /// How long a lease outlives the check that took it (`--lease-ttl`).
    ttl: Duration,
}

impl CheckLeases {
    pub(crate) fn new(store: Arc<dyn OnlineStore>, holder: String, ttl: Duration) -> Self {
        CheckLeases { store, holder, ttl }
    }

    /// Takes the check `subject` (`<kind>:<name>`) for this replica, unless a replica holds
    /// it or ran it within the schedule's `every` (the record names which one).
    pub(crate) async fn take(&self, subject: &str) -> Result<Take> {
        let (store, holder) = (&self.store, &self.holder);
        let (lease, ran) = (lease_name(subject), ran_name(subject));
        let recorded = |by: Vec<u8>| {
            if by == holder.as_bytes() {
                Take::NotYet
            } else {
                Take::Elsewhere
            }
        };
        if let Some(by) = store.record(&ran).await? {
            return Ok(recorded(by));
        }
        if let Lease::HeldBy(other) = store.acquire_lease(&lease, holder, self.ttl).await? {
            tracing::debug!(%lease, %other, "a scheduled check runs on another replica");
            return Ok(Take::Elsewhere);
        }
        // Another replica may have finished it between the two looks.
        if let Some(by) = store.record(&ran).await? {
            store.release_lease(&lease, holder).await?;
            return Ok(recorded(by));
        }
        Ok(Take::Taken)
    }

    /// Runs `work` while renewing the lease of `subject` at a third of its TTL; a renewal that
    /// fails is logged and not tried again (the check goes on).
    pub(crate) async fn while_held<T>(
        &self,
        subject: &str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let renewals = async {
            loop {
                tokio::time::sleep(self.ttl / 3).await;
                let lease = lease_name(subject);
                let renewed = self.store.renew_lease(&lease, &self.holder, self.ttl).await;
                if !matches!(renewed, Ok(true)) {
                    tracing::warn!(%subject, ?renewed, "lost the lease of a scheduled check while it ran");
                    break;
                }
            }
            std::future::pending::<()>().await;
        };
        tokio::pin!(work);
        tokio::select! {
            out = &mut work => out,
            // Renewals never end (they wait forever once one failed).
            () = renewals => work.await,
        }
    }

    /// Gives the check back. A check completed at `ran_at` (it started then) is recorded,
    /// naming this replica, until `ran_at + every` (`now` is the time of the call): when it
    /// is due again here, the record is gone.
    pub(crate) async fn finish(
        &self,
        subject: &str,
        ran_at: Option<Micros>,
        every: Micros,
        now: Micros,
    ) {
        let (store, holder) = (&self.store, &self.holder);
        let (lease, ran) = (lease_name(subject), ran_name(subject));
        let left = ran_at.map(|at| at.saturating_add(every).saturating_sub(now));
        let left = left
            .and_then(|micros| u64::try_from(micros).ok())
            .map(Duration::from_micros)
            .filter(|left| !left.is_zero());
        let done = async {
            if let Some(left) = left {
                store.put_record(&ran, holder.as_bytes(), left).await?;
            }
            store.release_lease(&lease, holder).await
        }
        .await;
        if let Err(error) = done {
            // The lease expires and the record is missing: another replica may check again.
            tracing::warn!(%subject, %error, "could not give a scheduled check back");
        }
    }
}

fn lease_name(subject: &str) -> String {
    format!("drift/{subject}")
}

fn ran_name(subject: &str) -> String {
    format!("drift-ran/{subject}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two replicas on one store (the embedded store's in-process leases stand in for a
    /// shared one): the second skips a check the first holds or ran, and takes it once the
    /// record expired.
    #[tokio::test]
    async fn a_check_runs_on_one_replica_per_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn OnlineStore> =
            Arc::new(quiver_online::RocksStore::open(dir.path()).expect("store"));
        let ttl = Duration::from_secs(30);
        let a = CheckLeases::new(Arc::clone(&store), "a".into(), ttl);
        let b = CheckLeases::new(Arc::clone(&store), "b".into(), ttl);
        let take =
            async |leases: &CheckLeases, subject: &str| leases.take(subject).await.expect("take");
        assert_eq!(take(&a, "service:model").await, Take::Taken);
        assert_eq!(
            take(&b, "service:model").await,
            Take::Elsewhere,
            "held by a"
        );
        assert_eq!(take(&b, "view:other").await, Take::Taken, "another subject");
        // A ran it (started at 1 000 µs, every 200 ms, now 1 000 µs later): B skips it until
        // the run's start + every, then takes it; A itself is told it is not due yet.
        a.finish("service:model", Some(1_000), 200_000, 2_000).await;
        assert_eq!(take(&b, "service:model").await, Take::Elsewhere, "ran on a");
        assert_eq!(take(&a, "service:model").await, Take::NotYet, "a ran it");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(take(&b, "service:model").await, Take::Taken, "due again");
        // A check that did not complete leaves no record: the next replica may run it.
        b.finish("service:model", None, 200_000, 0).await;
        assert_eq!(take(&a, "service:model").await, Take::Taken, "not recorded");
        // A run that took longer than `every` leaves no record either.
        a.finish("service:model", Some(0), 100, 200).await;
        assert_eq!(take(&b, "service:model").await, Take::Taken, "overdue");
    }
}
