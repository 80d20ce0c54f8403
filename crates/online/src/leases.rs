//! Leases of the embedded store. One process holds a data directory (RocksDB's lock file), so
//! its leases live in that process's memory: they order the process's own tasks, and a
//! restart forgets them with the tasks that held them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::online_store::Lease;

/// Named leases, each held by one holder until it expires or is released.
#[derive(Debug, Default)]
pub(crate) struct LocalLeases {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

impl LocalLeases {
    /// Takes `name` for `holder` for `ttl`, or renews it when `holder` has it.
    pub(crate) fn acquire(&self, name: &str, holder: &str, ttl: Duration) -> Lease {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (_, expires)| *expires > now);
        match held.get(name) {
            Some((other, _)) if other != holder => Lease::HeldBy(other.clone()),
            _ => {
                held.insert(name.to_string(), (holder.to_string(), now + ttl));
                Lease::Acquired
            }
        }
    }

    /// Gives `name` up if `holder` has it.
    pub(crate) fn release(&self, name: &str, holder: &str) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held.get(name).is_some_and(|(h, _)| h == holder) {
            held.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_until_release_or_expiry() {
        let leases = LocalLeases::default();
        let long = Duration::from_secs(60);
        assert_eq!(leases.acquire("m/a", "r1", long), Lease::Acquired);
        assert_eq!(
            leases.acquire("m/a", "r2", long),
            Lease::HeldBy("r1".into())
        );
        assert_eq!(leases.acquire("m/b", "r2", long), Lease::Acquired);
        // Renewal by the holder; a release by another holder does nothing.
        assert_eq!(leases.acquire("m/a", "r1", long), Lease::Acquired);
        leases.release("m/a", "r2");
        assert_eq!(
            leases.acquire("m/a", "r2", long),
            Lease::HeldBy("r1".into())
        );
        leases.release("m/a", "r1");
        assert_eq!(leases.acquire("m/a", "r2", long), Lease::Acquired);
        // An expired lease is free.
        assert_eq!(leases.acquire("m/c", "r1", Duration::ZERO), Lease::Acquired);
        assert_eq!(leases.acquire("m/c", "r2", long), Lease::Acquired);
    }
}
