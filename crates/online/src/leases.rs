//! Leases and records of the embedded store. One process holds a data directory (RocksDB's
//! lock file), so they live in that process's memory: they order and describe the process's
//! own tasks, and a restart forgets them with the tasks.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use quiver_core::online_store::Lease;

/// Named leases, each held by one holder until it expires or is released, and named records
/// until they expire.
#[derive(Debug, Default)]
pub(crate) struct LocalLeases {
    held: Mutex<HashMap<String, (String, Instant)>>,
    records: Mutex<HashMap<String, (Vec<u8>, Instant)>>,
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

    /// Extends `name` while `holder` has it (not expired); false otherwise.
    pub(crate) fn renew(&self, name: &str, holder: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        match held.get_mut(name) {
            Some((h, expires)) if h == holder && *expires > now => {
                *expires = now + ttl;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn put_record(&self, name: &str, bytes: &[u8], ttl: Duration) {
        let now = Instant::now();
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records.retain(|_, (_, expires)| *expires > now);
        records.insert(name.to_string(), (bytes.to_vec(), now + ttl));
    }

    pub(crate) fn record(&self, name: &str) -> Option<Vec<u8>> {
        let records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        records
            .get(name)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(bytes, _)| bytes.clone())
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
        // An expired lease is free, and its old holder cannot renew it.
        assert_eq!(leases.acquire("m/c", "r1", Duration::ZERO), Lease::Acquired);
        assert!(!leases.renew("m/c", "r1", long));
        assert_eq!(leases.acquire("m/c", "r2", long), Lease::Acquired);
        assert!(leases.renew("m/c", "r2", long));
        assert!(!leases.renew("m/c", "r1", long));
    }

    #[test]
    fn records_are_replaced_and_expire() {
        let records = LocalLeases::default();
        records.put_record("job/1", b"a", Duration::from_secs(60));
        records.put_record("job/1", b"b", Duration::from_secs(60));
        records.put_record("job/2", b"c", Duration::ZERO);
        assert_eq!(records.record("job/1"), Some(b"b".to_vec()));
        assert_eq!(records.record("job/2"), None);
        assert_eq!(records.record("job/3"), None);
    }
}
