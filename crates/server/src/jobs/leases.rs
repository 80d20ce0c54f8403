//! Materialization leases: one replica at a time runs a view's materialization, among all the
//! replicas that share an online store. A job takes the lease `materialize/<view>` of each of
//! its views before it plans, renews them at a third of `--lease-ttl` while it runs, and gives
//! them back when it ends (or they expire). A job that loses a lease (it expired before a
//! renewal: the job stalled, or the store could not be reached, for longer than the lease)
//! stops and fails, even when nobody took the lease meanwhile; it may then have written rows
//! already, which the ordering rule keeps only where they are newest.
//!
//! Leases are for efficiency; correctness rests on the watermark's compare-and-set
//! (`OnlineStore::advance_watermark`): a holder stalled past its lease writes rows the
//! ordering rule keeps only where they are newest, and cannot move a watermark backwards or
//! past data it did not write.

use std::sync::Arc;
use std::time::{Duration, Instant};

use quiver_core::ResolvedView;
use quiver_core::online_store::{Lease, OnlineStore};

use super::job::Job;
use crate::error::{Error, Result};

/// The leases of one job's views.
#[derive(Debug)]
pub(super) struct JobLeases {
    online: Arc<dyn OnlineStore>,
    /// The leases held; emptied when they are given back.
    names: std::sync::Mutex<Vec<String>>,
    holder: String,
    ttl: Duration,
}

impl JobLeases {
    /// Takes the lease of every view for `holder`. When another holder has one, gives back
    /// those taken (on drop) and fails FAILED_PRECONDITION naming it.
    pub(super) async fn acquire(
        online: Arc<dyn OnlineStore>,
        views: &[ResolvedView],
        holder: String,
        ttl: Duration,
    ) -> Result<JobLeases> {
        let leases = JobLeases {
            online,
            names: Default::default(),
            holder,
            ttl,
        };
        for view in views {
            let name = lease_name(&view.name);
            match leases
                .online
                .acquire_lease(&name, &leases.holder, ttl)
                .await?
            {
                Lease::Acquired => leases.held().push(name),
                Lease::HeldBy(other) => {
                    return Err(Error::FailedPrecondition(format!(
                        "view `{}` is being materialized by `{other}` (another replica or job holds its lease); one materialization per view runs at a time: wait for it, or for its lease to expire (--lease-ttl)",
                        view.name
                    )));
                }
            }
        }
        Ok(leases)
    }

    /// Renews the leases at a third of their time to live until the returned task is
    /// aborted. When one is lost, records why on `job` and cancels it.
    pub(super) fn keep(self: &Arc<Self>, job: Arc<Job>) -> tokio::task::JoinHandle<()> {
        let leases = Arc::clone(self);
        tokio::spawn(async move {
            let mut renewed = Instant::now();
            loop {
                tokio::time::sleep(leases.ttl / 3).await;
                let lost = match leases.renew().await {
                    Ok(None) => {
                        renewed = Instant::now();
                        continue;
                    }
                    Ok(Some(lost)) => lost,
                    Err(error) if renewed.elapsed() >= leases.ttl => format!(
                        "the materialization leases could not be renewed within --lease-ttl ({} s): {error}",
                        leases.ttl.as_secs_f64()
                    ),
                    Err(error) => {
                        tracing::warn!(%error, job = %job.id, "a lease renewal failed; retrying");
                        continue;
                    }
                };
                tracing::warn!(job = %job.id, reason = %lost, "materialization lease lost: stopping the job");
                let _ = job.lease_lost.set(lost);
                job.cancel();
                return;
            }
        })
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Renews every lease; why one is lost, if it is. A lease that expired is lost even
    /// when nobody took it since: another run may have come and gone meanwhile.
    async fn renew(&self) -> Result<Option<String>> {
        let names = self.held().clone();
        for name in &names {
            if !self
                .online
                .renew_lease(name, &self.holder, self.ttl)
                .await?
            {
                return Ok(Some(format!(
                    "lease `{name}` expired before it was renewed (the job stalled longer than --lease-ttl); another replica may run the view now"
                )));
            }
        }
        Ok(None)
    }

    /// Gives the leases back; the job's next run may start at once.
    pub(super) async fn release(&self) {
        let names = std::mem::take(&mut *self.held());
        for name in &names {
            if let Err(error) = self.online.release_lease(name, &self.holder).await {
                tracing::warn!(%error, lease = %name, "a lease was not released; it expires after --lease-ttl");
            }
        }
    }
}

/// Leases not given back explicitly (a job refused after they were taken) are, by a task
/// when in a runtime (else they expire).
impl Drop for JobLeases {
    fn drop(&mut self) {
        if self.held().is_empty() {
            return;
        }
        let leases = JobLeases {
            online: Arc::clone(&self.online),
            names: std::sync::Mutex::new(std::mem::take(&mut *self.held())),
            holder: self.holder.clone(),
            ttl: self.ttl,
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            drop(runtime.spawn(async move { leases.release().await }));
        }
    }
}

fn lease_name(view: &str) -> String {
    format!("materialize/{view}")
}
