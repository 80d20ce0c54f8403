//! The offline memory budget: one DataFusion `MemoryPool` shared by every join of the store
//! (and by DataFusion's own label reads), so concurrent exports together stay under the
//! operator's limit. A join reserves the bytes of the view rows it reads, unit by unit, and
//! then what its index keeps; the reservation lives as long as the index (until the output
//! stream is dropped). A reservation the pool cannot grant fails the join with
//! RESOURCE_EXHAUSTED naming the setting, before the memory is taken: the server refuses
//! rather than being killed. A join whose view rows would not fit partitions them and spills
//! to disk (`crate::spill`); only a partition that still does not fit is refused.

use std::sync::{Arc, Mutex};

use datafusion::execution::memory_pool::{
    GreedyMemoryPool, MemoryConsumer, MemoryPool, MemoryReservation, UnboundedMemoryPool,
};

use crate::error::{Error, Result};

/// The pool and how to name its limit.
#[derive(Debug, Clone)]
pub(crate) struct Budget {
    pub(crate) pool: Arc<dyn MemoryPool>,
    /// `(bytes, setting)` when bounded.
    limit: Option<(usize, &'static str)>,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            pool: Arc::new(UnboundedMemoryPool::default()),
            limit: None,
        }
    }
}

impl Budget {
    /// A pool of `bytes`; `setting` is the option that raises it (`--offline-memory-limit`).
    pub(crate) fn limited(bytes: usize, setting: &'static str) -> Budget {
        Budget {
            pool: Arc::new(GreedyMemoryPool::new(bytes)),
            limit: Some((bytes, setting)),
        }
    }

    /// Bytes not reserved now (`usize::MAX` when unbounded).
    pub(crate) fn available(&self) -> usize {
        match self.limit {
            Some((limit, _)) => limit.saturating_sub(self.pool.reserved()),
            None => usize::MAX,
        }
    }

    /// The refusal of `wanted` bytes for `what`, naming the limit and its setting.
    pub(crate) fn refused(&self, what: &str, wanted: usize) -> Error {
        refusal(what, wanted, self.limit)
    }

    /// An empty reservation for `what` ("the join's index of view `driver_stats`").
    pub(crate) fn reserve(&self, what: String) -> Held {
        Held {
            reservation: Mutex::new(MemoryConsumer::new(what.clone()).register(&self.pool)),
            what,
            limit: self.limit,
        }
    }
}

/// Memory held by one consumer; given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    reservation: Mutex<MemoryReservation>,
    what: String,
    limit: Option<(usize, &'static str)>,
}

impl Held {
    /// Takes `bytes` more, or fails without taking any.
    pub(crate) fn grow(&self, bytes: usize) -> Result<()> {
        let reservation = self.lock();
        reservation
            .try_grow(bytes)
            .map_err(|_| self.refused(reservation.size() + bytes))
    }

    /// Gives back up to `bytes`.
    pub(crate) fn shrink(&self, bytes: usize) {
        let reservation = self.lock();
        let bytes = bytes.min(reservation.size());
        reservation.shrink(bytes);
    }

    /// Holds exactly `bytes` from now on.
    pub(crate) fn resize(&self, bytes: usize) -> Result<()> {
        self.lock()
            .try_resize(bytes)
            .map_err(|_| self.refused(bytes))
    }

    #[cfg(test)]
    fn size(&self) -> usize {
        self.lock().size()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryReservation> {
        self.reservation
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn refused(&self, wanted: usize) -> Error {
        refusal(&self.what, wanted, self.limit)
    }
}

fn refusal(what: &str, wanted: usize, limit: Option<(usize, &'static str)>) -> Error {
    let (limit, setting) = limit.unwrap_or((usize::MAX, "the offline memory limit"));
    Error::OverBudget(format!(
        "{what} needs {wanted} bytes, more than is left of the offline memory limit of {limit} bytes, which concurrent exports share ({setting}); narrow the labels' time range, select fewer features, wait for other exports, or raise the limit"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_pool_and_give_back_when_dropped() {
        let budget = Budget::limited(1000, "--offline-memory-limit");
        let a = budget.reserve("join a".into());
        a.grow(600).expect("fits");
        let b = budget.reserve("join b".into());
        let refused = b.grow(500).expect_err("over the shared limit");
        assert_eq!(refused.code(), quiver_core::ErrorCode::ResourceExhausted);
        let text = refused.to_string();
        assert!(
            text.contains("join b needs 500 bytes") && text.contains("--offline-memory-limit"),
            "{text}"
        );
        assert_eq!(b.size(), 0, "a refused grow takes nothing");
        a.resize(100).expect("shrinks");
        b.grow(500).expect("fits now");
        drop(a);
        drop(b);
        assert_eq!(budget.pool.reserved(), 0);
    }
}
