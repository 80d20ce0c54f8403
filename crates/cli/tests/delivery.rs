//! Continuous delivery through the binary: `plan --detailed-exitcode --format json` for
//! pipelines, `apply --tag`, `tags` and `rollback --to`.

mod support;

use std::path::Path;

use support::{ServerProcess, ok, project, text};

/// Rewrites the demo manifests' TTL.
fn set_ttl(features: &Path, ttl: &str) {
    for entry in std::fs::read_dir(features).expect("features dir") {
        let path = entry.expect("entry").path();
        let content = std::fs::read_to_string(&path).expect("manifest");
        let changed: Vec<String> = content
            .lines()
            .map(|l| {
                if l.starts_with("ttl: ") {
                    format!("ttl: {ttl}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        std::fs::write(&path, changed.join("\n") + "\n").expect("write");
    }
}

#[test]
fn plan_exit_codes_json_tags_and_rollback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let f = features.to_str().expect("path");
    let server = ServerProcess::start(&dir.path().join("data"));
    let plan = |extra: &[&str]| {
        let mut args = vec!["plan", "-f", f, "--detailed-exitcode"];
        args.extend(extra);
        server.quiver(&args)
    };
    // Changes pending: 2, with the plan as JSON.
    let pending = plan(&["--format", "json"]);
    assert_eq!(pending.status.code(), Some(2), "{}", text(&pending));
    let json: serde_json::Value = serde_json::from_slice(&pending.stdout).expect("one JSON object");
    assert_eq!(json["base_version"], 0);
    assert_eq!(json["breaking"], false);
    let changes = json["changes"].as_array().expect("changes");
    assert!(
        changes
            .iter()
            .any(|c| c["kind"] == "FeatureView" && c["action"] == "create"),
        "{json}"
    );
    ok(server.quiver(&["apply", "-f", f, "--tag", "release-1"]));
    // Nothing to do: 0.
    assert_eq!(plan(&[]).status.code(), Some(0));
    // An error: 1.
    let missing = server.quiver(&["plan", "-f", "/nonexistent", "--detailed-exitcode"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));

    set_ttl(&features, "3h");
    let changed = plan(&["--format", "json"]);
    assert_eq!(changed.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_slice(&changed.stdout).expect("json");
    let ttl = json["changes"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["kind"] == "FeatureView"))
        .and_then(|c| c["properties"].as_array())
        .and_then(|p| p.iter().find(|p| p["property"] == "ttl"))
        .cloned()
        .expect("a ttl change");
    assert_eq!(
        (ttl["old"].as_str(), ttl["new"].as_str()),
        (Some("2h"), Some("3h")),
        "{ttl}"
    );
    let applied = ok(server.quiver(&["apply", "-f", f, "--tag", "release-2"]));
    assert!(
        applied.contains("Tagged it (registry version 2) `release-2`"),
        "{applied}"
    );
    let moved = server.quiver(&["apply", "-f", f, "--tag", "release-1"]);
    assert!(
        !moved.status.success() && text(&moved).contains("never move"),
        "{}",
        text(&moved)
    );

    let tags = ok(server.quiver(&["tags"]));
    assert!(
        tags.contains("release-1") && tags.contains("release-2"),
        "{tags}"
    );
    let rolled = ok(server.quiver(&["rollback", "--to", "release-1"]));
    assert!(rolled.contains("registry version 3"), "{rolled}");
    // The manifests (3h) now differ from the served definitions (2h) again.
    assert_eq!(plan(&[]).status.code(), Some(2));
    set_ttl(&features, "2h");
    assert_eq!(plan(&[]).status.code(), Some(0));
    server.stop();
}
