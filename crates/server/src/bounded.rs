//! A small keyed store of what clients park on the server and may never collect (uploaded
//! label tables, prepared Flight exports): at most `capacity` entries, each kept at most
//! `ttl`. Expired entries are dropped on every access; a new entry beyond the capacity is
//! refused with `RESOURCE_EXHAUSTED` naming the setting, never evicting another client's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// What a map holds and the settings that bound it, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub capacity: u64,
    pub ttl: Duration,
    /// What the entries are ("uploaded label tables").
    pub what: &'static str,
    /// The flag of the capacity (`--max-uploads`).
    pub capacity_setting: &'static str,
    /// The flag of the age (`--upload-ttl`).
    pub ttl_setting: &'static str,
}

#[derive(Debug)]
pub struct BoundedMap<V> {
    bounds: Bounds,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V> BoundedMap<V> {
    pub fn new(bounds: Bounds) -> Self {
        BoundedMap {
            bounds,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The entries younger than the ttl at `now` (older ones are dropped here).
    fn live(
        &self,
        now: Instant,
    ) -> Result<std::sync::MutexGuard<'_, HashMap<String, (Instant, V)>>> {
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| Error::Internal("bounded map poisoned".into()))?;
        let ttl = self.bounds.ttl;
        entries.retain(|_, (added, _)| now.saturating_duration_since(*added) < ttl);
        Ok(entries)
    }

    /// Inserts or replaces `key`; a new key beyond the capacity is `RESOURCE_EXHAUSTED`.
    pub fn insert(&self, key: String, value: V) -> Result<()> {
        self.insert_at(key, value, Instant::now())
    }

    fn insert_at(&self, key: String, value: V, now: Instant) -> Result<()> {
        let mut entries = self.live(now)?;
        let b = &self.bounds;
        if !entries.contains_key(&key) && entries.len() as u64 >= b.capacity {
            return Err(Error::ResourceExhausted {
                what: format!(
                    "the server keeps {} {} (each for at most {}s, {})",
                    entries.len(),
                    b.what,
                    b.ttl.as_secs(),
                    b.ttl_setting
                ),
                limit: b.capacity.to_string(),
                setting: b.capacity_setting,
            });
        }
        entries.insert(key, (now, value));
        Ok(())
    }

    /// Removes and returns `key`'s value.
    pub fn take(&self, key: &str) -> Result<Option<V>> {
        Ok(self.live(Instant::now())?.remove(key).map(|(_, v)| v))
    }

    /// How many entries are kept.
    pub fn len(&self) -> Result<usize> {
        Ok(self.live(Instant::now())?.len())
    }

    /// Whether no entry is kept.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}

impl<V: Clone> BoundedMap<V> {
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &str, now: Instant) -> Result<Option<V>> {
        Ok(self.live(now)?.get(key).map(|(_, v)| v.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(capacity: u64) -> BoundedMap<i32> {
        BoundedMap::new(Bounds {
            capacity,
            ttl: Duration::from_secs(60),
            what: "things",
            capacity_setting: "--max-things",
            ttl_setting: "--thing-ttl",
        })
    }

    #[test]
    fn a_full_map_refuses_new_keys_and_keeps_the_old_ones() -> Result<()> {
        let map = map(2);
        map.insert("a".into(), 1)?;
        map.insert("b".into(), 2)?;
        map.insert("a".into(), 3)?;
        let refused = map.insert("c".into(), 4);
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("(--max-things)"), "{message}");
        assert_eq!(map.get("a")?, Some(3));
        assert_eq!(map.get("b")?, Some(2));
        assert_eq!(map.take("b")?, Some(2));
        assert_eq!(map.take("b")?, None);
        map.insert("c".into(), 4)?;
        Ok(())
    }

    #[test]
    fn entries_expire_after_the_ttl() -> Result<()> {
        let map = map(1);
        let start = Instant::now();
        map.insert_at("a".into(), 1, start)?;
        let almost = start + Duration::from_secs(59);
        assert_eq!(map.get_at("a", almost)?, Some(1));
        let expired = start + Duration::from_secs(60);
        assert_eq!(map.get_at("a", expired)?, None);
        // The expired entry no longer counts against the capacity.
        map.insert_at("b".into(), 2, expired)?;
        Ok(())
    }
}
