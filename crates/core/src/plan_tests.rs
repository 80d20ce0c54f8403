//! Table-driven tests of plan/apply: validation, diff classification, versions and pins.

use crate::error::Error;
use crate::manifest::{ManifestFile, parse_manifests};
use crate::model::Kind;
use crate::plan::{Action, NoSchemaCheck, apply, plan};
use crate::registry::RegistryState;
use crate::testdata::EXAMPLE;

fn declared(text: &str) -> Vec<crate::model::Declared> {
    parse_manifests(&[ManifestFile {
        path: "/repo/m.yaml".into(),
        content: text.into(),
    }])
    .expect("manifest parses")
}

fn applied(state: &RegistryState, text: &str, force: bool) -> crate::Result<RegistryState> {
    apply(
        state,
        declared(text),
        Some(state.version),
        force,
        &NoSchemaCheck,
        1_000,
    )
    .map(|(s, _)| s)
}

fn base() -> RegistryState {
    applied(&RegistryState::default(), EXAMPLE, false).expect("example applies")
}

#[test]
fn first_apply_creates_version_one_of_everything() {
    let state = base();
    assert_eq!(state.version, 1);
    for kind in Kind::ALL {
        let objects: Vec<_> = state.list(kind).collect();
        assert_eq!(objects.len(), 1, "{kind}");
        assert_eq!(objects[0].1.version, 1);
    }
    let service = state.service("driver_model").expect("service");
    assert_eq!(service.items[0].features, ["conv_rate", "vehicle_type"]);
    assert_eq!(service.items[0].view_version, 1);
}

#[test]
fn reapplying_the_same_manifests_changes_nothing() {
    let state = base();
    let again = applied(&state, EXAMPLE, false).expect("apply");
    assert_eq!(again, state);
    let plan = plan(&state, declared(EXAMPLE), &NoSchemaCheck, 2).expect("plan");
    assert!(plan.is_empty());
}

#[test]
fn fingerprints_ignore_metadata_and_document_order() {
    let state = base();
    let mut reordered: Vec<&str> = EXAMPLE.split("---\n").collect();
    reordered.reverse();
    let other = applied(&RegistryState::default(), &reordered.join("---\n"), false).expect("apply");
    for kind in Kind::ALL {
        let a: Vec<_> = state
            .list(kind)
            .map(|(_, v)| v.fingerprint.clone())
            .collect();
        let b: Vec<_> = other
            .list(kind)
            .map(|(_, v)| v.fingerprint.clone())
            .collect();
        assert_eq!(a, b, "{kind}");
    }
    let with_owner = EXAMPLE.replace(
        "name: driver_stats\n",
        "name: driver_stats\nowner: ml-team\ndescription: trips\n",
    );
    let plan = plan(&state, declared(&with_owner), &NoSchemaCheck, 2).expect("plan");
    assert_eq!(plan.changes.len(), 1);
    let change = &plan.changes[0];
    assert_eq!(
        (change.action, change.from_version, change.to_version),
        (Action::Update, Some(1), Some(1))
    );
    assert!(change.properties.iter().all(|p| p.metadata && !p.breaking));
    let next = applied(&state, &with_owner, false).expect("metadata apply");
    assert_eq!(next.version, 2);
    assert_eq!(
        next.history(Kind::FeatureView, "driver_stats")
            .map(|h| h.versions.len()),
        Some(1)
    );
    assert_eq!(
        next.history(Kind::FeatureView, "driver_stats")
            .map(|h| h.metadata.owner.as_str()),
        Some("ml-team")
    );
}

#[test]
fn diff_classifies_compatible_and_breaking_changes() {
    // (description, edit of EXAMPLE, changed objects, breaking?)
    type Case<'a> = (&'a str, (&'a str, &'a str), &'a [&'a str], bool);
    let table: [Case<'_>; 6] = [
        (
            "add a feature",
            (
                "{name: vehicle_type, type: string}]",
                "{name: vehicle_type, type: string}, {name: trips, type: int64}]",
            ),
            &["FeatureView/driver_stats", "FeatureService/driver_model"],
            false,
        ),
        (
            "change the ttl",
            ("ttl: 2h", "ttl: 3h"),
            &["FeatureView/driver_stats", "FeatureService/driver_model"],
            false,
        ),
        (
            "change a feature type",
            (
                "{name: conv_rate, type: float32}",
                "{name: conv_rate, type: float64}",
            ),
            &["FeatureView/driver_stats", "FeatureService/driver_model"],
            true,
        ),
        (
            "change a key type",
            (
                "type: int64}]\n---\nkind: Source",
                "type: string}]\n---\nkind: Source",
            ),
            &[
                "Entity/driver",
                "FeatureView/driver_stats",
                "FeatureService/driver_model",
            ],
            true,
        ),
        (
            "remove a served feature",
            (", {name: vehicle_type, type: string}]", "]"),
            &["FeatureView/driver_stats", "FeatureService/driver_model"],
            true,
        ),
        (
            "move the source file",
            ("data/driver_stats.parquet", "data/v2.parquet"),
            &[
                "Source/driver_stats_source",
                "FeatureView/driver_stats",
                "FeatureService/driver_model",
            ],
            false,
        ),
    ];
    let state = base();
    for (what, (from, to), objects, breaking) in table {
        assert!(EXAMPLE.contains(from), "{what}: edit does not apply");
        let edited = EXAMPLE.replace(from, to);
        let plan = plan(&state, declared(&edited), &NoSchemaCheck, 2).expect(what);
        let changed: Vec<String> = plan
            .changes
            .iter()
            .map(|c| format!("{}/{}", c.kind, c.name))
            .collect();
        assert_eq!(changed, objects, "{what}");
        assert_eq!(
            !plan.breaking().is_empty(),
            breaking,
            "{what}: {:?}",
            plan.changes
        );
        let result = applied(&state, &edited, false);
        assert_eq!(result.is_ok(), !breaking, "{what}");
        if breaking {
            assert!(matches!(result, Err(Error::Breaking(_))), "{what}");
            let forced = applied(&state, &edited, true).expect(what);
            assert_eq!(
                forced.view("driver_stats").map(|v| v.version).ok(),
                Some(2),
                "{what}"
            );
        }
    }
}

#[test]
fn versions_are_immutable_and_pins_resolve() {
    let state = base();
    let v2 = applied(&state, &EXAMPLE.replace("ttl: 2h", "ttl: 3h"), false).expect("apply");
    assert_eq!(
        v2.view("driver_stats").map(|v| v.ttl).ok(),
        Some(10_800_000_000)
    );
    assert_eq!(
        v2.view("driver_stats@1").map(|v| v.ttl).ok(),
        Some(7_200_000_000)
    );
    assert_eq!(
        v2.view("driver_stats@1").ok(),
        state.view("driver_stats").ok()
    );
    assert_eq!(v2.service("driver_model").map(|s| s.version).ok(), Some(2));
    assert_eq!(
        v2.service("driver_model@1")
            .map(|s| s.items[0].view_version)
            .ok(),
        Some(1)
    );
    assert!(matches!(
        v2.view("driver_stats@3"),
        Err(Error::VersionNotFound { latest: 2, .. })
    ));
    assert!(matches!(v2.view("nope"), Err(Error::NotFound { .. })));
    // A service may pin an older view version.
    let pinned = EXAMPLE
        .replace("ttl: 2h", "ttl: 3h")
        .replace("[{view: driver_stats}]", "[{view: driver_stats@1}]");
    let v3 = applied(&v2, &pinned, false).expect("pin apply");
    assert_eq!(
        v3.service("driver_model")
            .map(|s| s.items[0].view_version)
            .ok(),
        Some(1)
    );
    assert_eq!(v3.service("driver_model").map(|s| s.version).ok(), Some(3));
}

#[test]
fn stale_applies_are_refused() {
    let state = base();
    let result = apply(&state, declared(EXAMPLE), Some(0), false, &NoSchemaCheck, 2);
    assert!(matches!(
        result,
        Err(Error::StaleRegistry {
            expected: 0,
            actual: 1
        })
    ));
}

#[test]
fn deleting_is_breaking_and_history_stays_readable() {
    let state = base();
    let without_service = EXAMPLE
        .split("---\nkind: FeatureService")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(matches!(
        applied(&state, &without_service, false),
        Err(Error::Breaking(_))
    ));
    let next = applied(&state, &without_service, true).expect("forced delete");
    assert!(next.service("driver_model").is_err());
    assert!(next.service("driver_model@1").is_ok());
    let back = applied(&next, EXAMPLE, false).expect("re-create");
    assert_eq!(
        back.service("driver_model").map(|s| s.version).ok(),
        Some(1)
    );
}

#[test]
fn invalid_references_name_object_and_field() {
    let table = [
        (
            EXAMPLE.replace("entities: [driver]", "entities: [rider]"),
            "FeatureView/driver_stats",
            "entities[0]",
            "unknown entity `rider`",
        ),
        (
            EXAMPLE.replace("source: driver_stats_source", "source: nowhere"),
            "FeatureView/driver_stats",
            "source",
            "unknown source `nowhere`",
        ),
        (
            EXAMPLE.replace("[{view: driver_stats}]", "[{view: driver_statz}]"),
            "FeatureService/driver_model",
            "features[0].view",
            "unknown feature view",
        ),
        (
            EXAMPLE.replace(
                "[{view: driver_stats}]",
                "[{view: driver_stats, features: [speed]}]",
            ),
            "FeatureService/driver_model",
            "features[0].features[0]",
            "has no feature `speed`",
        ),
        (
            EXAMPLE.replace(
                "[{view: driver_stats}]",
                "[{view: driver_stats}, {view: driver_stats, alias: again}]",
            ),
            "FeatureService/driver_model",
            "features[1]",
            "collides",
        ),
        (
            EXAMPLE.replace("[{view: driver_stats}]", "[{view: driver_stats@7}]"),
            "FeatureService/driver_model",
            "features[0].view",
            "unknown feature view",
        ),
        (
            format!(
                "{EXAMPLE}---\nkind: Entity\nname: driver\njoin_keys: [{{name: id, type: int64}}]\n"
            ),
            "Entity/driver",
            "name",
            "declared twice",
        ),
        (
            EXAMPLE.replace(
                "{name: conv_rate, type: float32}",
                "{name: driver_id, type: float32}",
            ),
            "FeatureView/driver_stats",
            "features[0].name",
            "name of a join key",
        ),
    ];
    for (text, object, field, needle) in table {
        let result = plan(
            &RegistryState::default(),
            declared(&text),
            &NoSchemaCheck,
            1,
        );
        let Err(Error::Invalid(problems)) = result else {
            panic!("expected invalid for {object} {field}")
        };
        let found = problems.iter().any(|p| {
            p.object == object
                && p.field == field
                && p.message.contains(needle)
                && p.file == "/repo/m.yaml"
        });
        assert!(found, "{object} {field} {needle}: {problems:?}");
    }
}

#[test]
fn applies_record_each_view_versions_data_generation() {
    let generation = |state: &RegistryState, reference: &str| {
        state.view(reference).map(|v| v.generation).expect("view")
    };
    let state = base();
    assert_eq!(generation(&state, "driver_stats"), 1);
    let ttl = applied(&state, &EXAMPLE.replace("ttl: 2h", "ttl: 3h"), false).expect("ttl");
    assert_eq!(
        generation(&ttl, "driver_stats@2"),
        1,
        "compatible: same push log"
    );
    let typed = EXAMPLE.replace("ttl: 2h", "ttl: 3h").replace(
        "{name: conv_rate, type: float32}",
        "{name: conv_rate, type: float64}",
    );
    let broken = applied(&ttl, &typed, true).expect("forced type change");
    assert_eq!(
        generation(&broken, "driver_stats@3"),
        3,
        "breaking: a new push log"
    );
    assert_eq!(
        generation(&broken, "driver_stats@1"),
        1,
        "history unchanged"
    );
    let again = applied(&broken, &typed, false).expect("same manifests");
    assert_eq!(again, broken);
}

#[test]
fn declaring_an_old_state_again_returns_to_its_definitions() {
    let v1 = base();
    assert!(
        plan(&v1, v1.declared(), &NoSchemaCheck, 2)
            .expect("plan")
            .is_empty()
    );
    let v2 = applied(&v1, &EXAMPLE.replace("ttl: 2h", "ttl: 3h"), false).expect("apply");
    assert_eq!(
        v2.view("driver_stats").expect("view").ttl,
        3 * 3_600_000_000
    );
    // Rolling back: v1's definitions as a new registry version, history kept.
    let (v3, changes) =
        apply(&v2, v1.declared(), Some(2), false, &NoSchemaCheck, 3).expect("roll back");
    assert_eq!(v3.version, 3);
    assert!(!changes.is_empty());
    let view = v3.view("driver_stats").expect("view");
    let old = v1.view("driver_stats").expect("view");
    assert_eq!((view.ttl, &view.fingerprint), (old.ttl, &old.fingerprint));
    assert_eq!(view.version, 3, "a new object version, not a rewrite");
    assert_eq!(
        v3.view("driver_stats@2").expect("v2 stays").ttl,
        3 * 3_600_000_000
    );
}
