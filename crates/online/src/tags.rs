//! Release tags: names of registry versions (`quiver apply --tag`), in the `registry` column
//! family as `tag/<name>` -> the version as 20-digit decimal text. A tag is written in the
//! same batch as the version it names ([`RocksStore::save_registry_tagged`]) or on its own for
//! an existing version, and never moves.

use crate::error::{Error, Result};
use crate::store::{CF_REGISTRY, RocksStore, synced};

const TAG_PREFIX: &str = "tag/";

pub(crate) fn tag_key(name: &str) -> Vec<u8> {
    format!("{TAG_PREFIX}{name}").into_bytes()
}

impl RocksStore {
    /// The registry version tagged `name`, None if there is no such tag.
    pub fn tag(&self, name: &str) -> Result<Option<u64>> {
        let cf = self.cf(CF_REGISTRY)?;
        self.db
            .get_pinned_cf(cf, tag_key(name))
            .map_err(Error::storage("read a tag"))?
            .map(|bytes| parse_version(name, &bytes))
            .transpose()
    }

    /// Tags an existing registry `version` `name` (durably).
    pub fn set_tag(&self, name: &str, version: u64) -> Result<()> {
        let cf = self.cf(CF_REGISTRY)?;
        self.db
            .put_cf_opt(cf, tag_key(name), format!("{version:020}"), &synced())
            .map_err(Error::storage("write a tag"))
    }

    /// Every tag and its registry version, by name.
    pub fn tags(&self) -> Result<Vec<(String, u64)>> {
        let cf = self.cf(CF_REGISTRY)?;
        let mut tags = Vec::new();
        for item in self.db.prefix_iterator_cf(cf, TAG_PREFIX) {
            let (key, value) = item.map_err(Error::storage("list tags"))?;
            let Some(name) = key.strip_prefix(TAG_PREFIX.as_bytes()) else {
                break; // past the prefix: the iterator runs on in key order
            };
            let name = String::from_utf8_lossy(name).into_owned();
            let version = parse_version(&name, &value)?;
            tags.push((name, version));
        }
        Ok(tags)
    }
}

fn parse_version(name: &str, bytes: &[u8]) -> Result<u64> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| Error::corrupt(format!("tag `{name}`"), "not a version"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use quiver_core::RegistryState;

    #[test]
    fn tags_name_versions_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let store = RocksStore::open(dir.path()).expect("open");
            assert_eq!(store.tags().expect("tags"), vec![]);
            let state = |version| RegistryState {
                version,
                ..RegistryState::default()
            };
            store
                .save_registry_tagged(&state(1), Some("v1.0"))
                .expect("save");
            store.save_registry(&state(2)).expect("save");
            store.set_tag("hotfix", 2).expect("tag");
            assert_eq!(store.tag("v1.0").expect("tag"), Some(1));
            assert_eq!(store.tag("nope").expect("tag"), None);
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        assert_eq!(
            store.tags().expect("tags"),
            vec![("hotfix".to_string(), 2), ("v1.0".to_string(), 1)]
        );
        assert_eq!(
            store.registry_state(1).expect("state").map(|s| s.version),
            Some(1)
        );
        assert_eq!(store.registry_state(3).expect("state"), None);
    }
}
