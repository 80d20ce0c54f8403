//! Stored feature profiles (quiver-monitor's JSON, opaque here), in the `meta` column family
//! as `profile/<id:020>`. Ids grow; a profile is written once and never changes.

use crate::error::{Error, Result};
use crate::store::{CF_META, RocksStore, synced};

const PROFILE_PREFIX: &str = "profile/";

fn profile_key(id: u64) -> String {
    format!("{PROFILE_PREFIX}{id:020}")
}

impl RocksStore {
    /// Stores profile `id` (durably).
    pub fn save_profile(&self, id: u64, json: &[u8]) -> Result<()> {
        let cf = self.cf(CF_META)?;
        self.db
            .put_cf_opt(cf, profile_key(id), json, &synced())
            .map_err(Error::storage("write a profile"))
    }

    pub fn profile(&self, id: u64) -> Result<Option<Vec<u8>>> {
        let cf = self.cf(CF_META)?;
        self.db
            .get_cf(cf, profile_key(id))
            .map_err(Error::storage("read a profile"))
    }

    /// The highest stored id, 0 when there is none.
    pub fn last_profile_id(&self) -> Result<u64> {
        let cf = self.cf(CF_META)?;
        let mut iter = self.db.raw_iterator_cf(cf);
        iter.seek_for_prev(profile_key(u64::MAX));
        iter.status()
            .map_err(Error::storage("find the last profile"))?;
        Ok(iter
            .key()
            .and_then(|key| key.strip_prefix(PROFILE_PREFIX.as_bytes()))
            .and_then(|id| std::str::from_utf8(id).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// Removes profiles `ids` (durably, in one batch); ids not stored are ignored.
    pub fn delete_profiles(&self, ids: &[u64]) -> Result<()> {
        let cf = self.cf(CF_META)?;
        let mut batch = rocksdb::WriteBatch::default();
        for id in ids {
            batch.delete_cf(cf, profile_key(*id));
        }
        self.db
            .write_opt(batch, &synced())
            .map_err(Error::storage("delete profiles"))
    }

    /// Stored profiles, newest first, that `keep` accepts, at most `limit`.
    pub fn profiles(
        &self,
        limit: usize,
        mut keep: impl FnMut(&[u8]) -> bool,
    ) -> Result<Vec<Vec<u8>>> {
        let cf = self.cf(CF_META)?;
        let mut iter = self.db.raw_iterator_cf(cf);
        iter.seek_for_prev(profile_key(u64::MAX));
        let mut out = Vec::new();
        while out.len() < limit {
            let (Some(key), Some(value)) = (iter.key(), iter.value()) else {
                break;
            };
            if !key.starts_with(PROFILE_PREFIX.as_bytes()) {
                break;
            }
            if keep(value) {
                out.push(value.to_vec());
            }
            iter.prev();
        }
        iter.status().map_err(Error::storage("list profiles"))?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_listed_newest_first_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RocksStore::open(dir.path()).expect("open");
            assert_eq!(store.last_profile_id().expect("last"), 0);
            for id in [1, 2, 10] {
                store
                    .save_profile(id, format!("p{id}").as_bytes())
                    .expect("save");
            }
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(store.last_profile_id().expect("last"), 10);
        assert_eq!(store.profile(2).expect("get"), Some(b"p2".to_vec()));
        assert_eq!(store.profile(3).expect("get"), None);
        let all = store.profiles(10, |_| true).expect("list");
        assert_eq!(all, vec![b"p10".to_vec(), b"p2".to_vec(), b"p1".to_vec()]);
        let some = store.profiles(1, |v| v != b"p10").expect("list");
        assert_eq!(some, vec![b"p2".to_vec()]);
        store.delete_profiles(&[2, 3]).expect("delete");
        let left = store.profiles(10, |_| true).expect("list");
        assert_eq!(left, vec![b"p10".to_vec(), b"p1".to_vec()]);
        assert_eq!(store.last_profile_id().expect("last"), 10);
    }
}
