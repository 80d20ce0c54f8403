//! A small keyed store that keeps at most `capacity` entries, dropping the oldest first. It
//! holds in-memory state that clients create and may never collect (uploaded label tables,
//! prepared Flight exports), so it cannot grow without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::error::{Error, Result};

#[derive(Debug)]
struct Entries<V> {
    values: HashMap<String, V>,
    order: VecDeque<String>,
}

#[derive(Debug)]
pub struct BoundedMap<V> {
    capacity: usize,
    entries: Mutex<Entries<V>>,
}

impl<V> BoundedMap<V> {
    pub fn new(capacity: usize) -> Self {
        BoundedMap {
            capacity,
            entries: Mutex::new(Entries {
                values: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Entries<V>>> {
        self.entries
            .lock()
            .map_err(|_| Error::Internal("bounded map poisoned".into()))
    }

    /// Inserts or replaces `key`; evicts the oldest entries beyond the capacity.
    pub fn insert(&self, key: String, value: V) -> Result<()> {
        let mut entries = self.lock()?;
        entries.order.retain(|k| k != &key);
        entries.order.push_back(key.clone());
        entries.values.insert(key, value);
        while entries.order.len() > self.capacity {
            if let Some(oldest) = entries.order.pop_front() {
                entries.values.remove(&oldest);
            }
        }
        Ok(())
    }

    /// Removes and returns `key`'s value.
    pub fn take(&self, key: &str) -> Result<Option<V>> {
        let mut entries = self.lock()?;
        entries.order.retain(|k| k != key);
        Ok(entries.values.remove(key))
    }
}

impl<V: Clone> BoundedMap<V> {
    pub fn get(&self, key: &str) -> Result<Option<V>> {
        Ok(self.lock()?.values.get(key).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_entries() -> Result<()> {
        let map = BoundedMap::new(2);
        map.insert("a".into(), 1)?;
        map.insert("b".into(), 2)?;
        map.insert("a".into(), 3)?;
        map.insert("c".into(), 4)?;
        assert_eq!(map.get("b")?, None, "b was the oldest");
        assert_eq!(map.get("a")?, Some(3));
        assert_eq!(map.take("c")?, Some(4));
        assert_eq!(map.take("c")?, None);
        Ok(())
    }
}
