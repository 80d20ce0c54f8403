//! Scheduled drift checks across replicas that share an online store: a due check runs on
//! one replica, which holds the lease `drift/<kind>:<name>` while it runs and then leaves
//! the record `drift-ran/<kind>:<name>` for the schedule's `every`; another replica skips a
//! check that is leased or recorded, so one webhook POST and one set of gauges come from
//! each interval. The lease is renewed at a third of `--lease-ttl` while the check runs; one
//! that expires anyway (the store unreachable, the replica stalled) lets another replica run
//! the check too (a duplicate, never a missed check). With the embedded store the lease and the record are
//! in-process and always this replica's.

use std::sync::Arc;
use std::time::Duration;

use quiver_core::types::Micros;
use quiver_online::{Lease, OnlineStore};

use crate::error::Result;

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

    /// Takes the check `subject` (`<kind>:<name>`) for this replica: false when another
    /// replica holds it or ran it within the schedule's `every`.
    pub(crate) async fn take(&self, subject: &str) -> Result<bool> {
        let (store, holder, ttl) = (Arc::clone(&self.store), self.holder.clone(), self.ttl);
        let (lease, ran) = (lease_name(subject), ran_name(subject));
        crate::run_blocking(move || {
            if store.record(&ran)?.is_some() {
                return Ok(false);
            }
            if let Lease::HeldBy(other) = store.acquire_lease(&lease, &holder, ttl)? {
                tracing::debug!(%lease, %other, "a scheduled check runs on another replica");
                return Ok(false);
            }
            // Another replica may have finished it between the two looks.
            if store.record(&ran)?.is_some() {
                store.release_lease(&lease, &holder)?;
                return Ok(false);
            }
            Ok(true)
        })
        .await
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
                let (store, holder, ttl) = (Arc::clone(&self.store), self.holder.clone(), self.ttl);
                let lease = lease_name(subject);
                let renewed =
                    crate::run_blocking(move || Ok(store.renew_lease(&lease, &holder, ttl)?)).await;
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

    /// Gives the check back; `ran_at` records a completed check for `every`.
    pub(crate) async fn finish(&self, subject: &str, ran_at: Option<Micros>, every: Micros) {
        let (store, holder) = (Arc::clone(&self.store), self.holder.clone());
        let (lease, ran) = (lease_name(subject), ran_name(subject));
        let every = Duration::from_micros(u64::try_from(every).unwrap_or(0));
        let done = crate::run_blocking(move || {
            if let Some(at) = ran_at.filter(|_| !every.is_zero()) {
                store.put_record(&ran, &at.to_le_bytes(), every)?;
            }
            store.release_lease(&lease, &holder)?;
            Ok(())
        })
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
        assert!(a.take("service:model").await.expect("take"));
        assert!(!b.take("service:model").await.expect("held by a"));
        assert!(b.take("view:other").await.expect("another subject"));
        // A ran it: B skips it for `every` (200 ms here), then takes it.
        a.finish("service:model", Some(1), 200_000).await;
        assert!(!b.take("service:model").await.expect("ran"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(b.take("service:model").await.expect("due again"));
        // A check that did not complete leaves no record: the next replica may run it.
        b.finish("service:model", None, 200_000).await;
        assert!(a.take("service:model").await.expect("not recorded"));
    }
}
