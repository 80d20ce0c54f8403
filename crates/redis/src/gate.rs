//! A bound on the cluster connections in use at once (`max_connections` in the
//! `--online-store` URL, default [`DEFAULT_MAX_CONNECTIONS`]; each holds a socket per node).
//! A call beyond it waits for a connection to be given back, at most the URL's timeout, and
//! then fails RESOURCE_EXHAUSTED naming the setting.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The default of `max_connections`.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 64;

#[derive(Debug)]
pub(crate) struct Gate {
    limit: usize,
    in_use: Mutex<usize>,
    freed: Condvar,
}

/// One connection's place in the gate, given back when dropped.
#[derive(Debug)]
pub(crate) struct Pass<'a>(&'a Gate);

impl Gate {
    pub(crate) fn new(limit: usize) -> Gate {
        Gate {
            limit,
            in_use: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// A place, waiting at most `wait` for one.
    pub(crate) fn enter(&self, wait: Duration) -> Result<Pass<'_>> {
        let deadline = Instant::now() + wait;
        let mut in_use = self.in_use.lock().unwrap_or_else(|p| p.into_inner());
        while *in_use >= self.limit {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Busy { limit: self.limit });
            }
            in_use = match self.freed.wait_timeout(in_use, left) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        *in_use += 1;
        Ok(Pass(self))
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut in_use = self.0.in_use.lock().unwrap_or_else(|p| p.into_inner());
        *in_use = in_use.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_waits_for_a_place_then_fails_naming_the_setting() {
        let gate = Gate::new(2);
        let short = Duration::from_millis(50);
        let (first, _second) = (gate.enter(short), gate.enter(short));
        let full = gate.enter(short).map(|_| ()).expect_err("a third place");
        assert_eq!(full.code(), quiver_core::ErrorCode::ResourceExhausted);
        assert!(full.to_string().contains("max_connections"), "{full}");
        drop(first);
        assert!(gate.enter(short).is_ok(), "a place was given back");
        // A waiter gets the place another thread gives back.
        std::thread::scope(|scope| {
            let held = gate.enter(short).expect("a place");
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                drop(held);
            });
            assert!(gate.enter(Duration::from_secs(5)).is_ok());
        });
    }
}
