//! Fingerprints: SHA-256 of the canonical JSON of an object's meaning.
//!
//! Canonical = serde_json of the spec types, whose field order is fixed by the struct
//! definitions and whose maps are `BTreeMap`s, prefixed by a domain tag and the kind. The
//! result is stable across processes; `tests::fingerprints_are_pinned` fails if a change to the
//! model would silently change existing fingerprints.

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{EntitySpec, Feature, JoinKey, Kind, ResolvedItem, SourceSpec};
use crate::types::Micros;

const DOMAIN: &str = "quiver.fingerprint.v1";

fn hash<T: Serialize>(kind: Kind, meaning: &T) -> String {
    let mut hasher = Sha256::new();
    hasher.update(DOMAIN.as_bytes());
    hasher.update([0]);
    hasher.update(kind.name().as_bytes());
    hasher.update([0]);
    // Serializing plain structs, strings, integers and BTreeMaps cannot fail.
    let json = serde_json::to_vec(meaning).unwrap_or_default();
    hasher.update(&json);
    let digest = hasher.finalize();
    hex(&digest[..16])
}

/// Lower-case hex of `bytes` (digests, tokens, fingerprints).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

pub fn entity(spec: &EntitySpec) -> String {
    hash(Kind::Entity, spec)
}

pub fn source(spec: &SourceSpec) -> String {
    hash(Kind::Source, spec)
}

#[derive(Serialize)]
struct ViewMeaning<'a> {
    join_keys: &'a [JoinKey],
    entities: &'a [String],
    source: &'a SourceSpec,
    ttl: Micros,
    online: bool,
    features: &'a [Feature],
}

pub fn view(
    join_keys: &[JoinKey],
    entities: &[String],
    source: &SourceSpec,
    ttl: Micros,
    online: bool,
    features: &[Feature],
) -> String {
    hash(
        Kind::FeatureView,
        &ViewMeaning {
            join_keys,
            entities,
            source,
            ttl,
            online,
            features,
        },
    )
}

#[derive(Serialize)]
struct ItemMeaning<'a> {
    view: &'a str,
    view_fingerprint: &'a str,
    features: &'a [String],
    alias: &'a Option<String>,
}

pub fn service(items: &[ResolvedItem]) -> String {
    let meaning: Vec<ItemMeaning<'_>> = items
        .iter()
        .map(|item| ItemMeaning {
            view: &item.view,
            view_fingerprint: &item.view_fingerprint,
            features: &item.features,
            alias: &item.alias,
        })
        .collect();
    hash(Kind::FeatureService, &meaning)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{KeyType, ScalarType, ValueType};

    #[test]
    fn hex_is_two_lower_case_digits_per_byte() {
        let bytes: Vec<u8> = (0..=255).collect();
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&bytes), expected);
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn fingerprints_are_pinned() {
        // These literals pin the canonical encoding: if this test fails, existing
        // fingerprints would change for users. Bump DOMAIN deliberately instead.
        let keys = vec![JoinKey {
            name: "driver_id".into(),
            key_type: KeyType::Int64,
        }];
        let entity_fp = entity(&EntitySpec {
            join_keys: keys.clone(),
        });
        assert_eq!(entity_fp, "603370357d4254e8f6b613b410bc4155");
        let src = SourceSpec {
            parquet: Some("/data/driver.parquet".into()),
            push: false,
            event_time: "event_timestamp".into(),
            created_time: Some("created".into()),
            renames: Default::default(),
        };
        let features = vec![Feature {
            name: "conv_rate".into(),
            value_type: ValueType::scalar(ScalarType::Float32),
        }];
        let view_fp = view(
            &keys,
            &["driver".into()],
            &src,
            7_200_000_000,
            true,
            &features,
        );
        assert_eq!(view_fp, "a1c7199bf28b839a5416b5ae13f67763");
        assert_ne!(
            view_fp,
            view(
                &keys,
                &["driver".into()],
                &src,
                3_600_000_000,
                true,
                &features
            )
        );
    }
}
