//! Continuous delivery of definitions: release tags on applies and rollbacks to a tagged or
//! numbered registry version, as new versions (history is never rewritten).

use quiver_integration_tests::{Clients, TestServer, manifests};
use quiver_proto::v1;

use super::fixture::{MANIFEST, TestRow, setup};

fn row() -> TestRow {
    TestRow {
        user_id: 1,
        event_ts: 0,
        created_ts: 0,
        a: 1,
        b: None,
        s: String::new(),
    }
}

/// Applies the fixture's manifest with `ttl`, tagged `tag` (empty: untagged).
async fn apply_tagged(
    server: &TestServer,
    clients: &mut Clients,
    ttl: &str,
    tag: &str,
) -> Result<v1::ApplyResponse, tonic::Status> {
    let dir = server.path("repo");
    std::fs::write(dir.join("features.yaml"), MANIFEST.replace("TTL", ttl))
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let manifests = manifests(&dir).map_err(|e| tonic::Status::internal(e.to_string()))?;
    clients
        .registry
        .apply(v1::ApplyRequest {
            manifests,
            expected_version: None,
            force: false,
            tag: tag.into(),
        })
        .await
        .map(tonic::Response::into_inner)
}

async fn view_fingerprint(clients: &mut Clients, name: &str) -> anyhow::Result<(u32, String)> {
    let object = clients
        .registry
        .get_object(v1::GetObjectRequest {
            kind: v1::ObjectKind::FeatureView as i32,
            name: name.into(),
        })
        .await?
        .into_inner()
        .object
        .ok_or_else(|| anyhow::anyhow!("no object"))?;
    Ok((object.version, object.fingerprint))
}

#[tokio::test]
async fn tags_name_versions_and_rollbacks_return_to_them() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row()], "1h").await?;
    // Re-applying unchanged manifests with a tag names the current version.
    let first = apply_tagged(&server, &mut clients, "1h", "r1").await?;
    assert_eq!((first.registry_version, first.changes.len()), (1, 0));
    let (_, fingerprint_v1) = view_fingerprint(&mut clients, "stats").await?;
    let second = apply_tagged(&server, &mut clients, "2h", "r2").await?;
    assert_eq!(second.registry_version, 2);
    // Again with the same tag and no change: idempotent (a re-run pipeline).
    assert_eq!(
        apply_tagged(&server, &mut clients, "2h", "r2")
            .await?
            .registry_version,
        2
    );
    // Tags never move; numbers are versions, not tags.
    let moved = apply_tagged(&server, &mut clients, "3h", "r1").await;
    assert_eq!(
        moved.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::FailedPrecondition)
    );
    let numeric = apply_tagged(&server, &mut clients, "2h", "42").await;
    let status = numeric.map(|_| ()).expect_err("a number is not a tag");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("tag"), "{}", status.message());

    let tags = clients
        .registry
        .list_tags(v1::ListTagsRequest {})
        .await?
        .into_inner()
        .tags;
    let named: Vec<(&str, u64)> = tags
        .iter()
        .map(|t| (t.name.as_str(), t.registry_version))
        .collect();
    assert_eq!(named, [("r1", 1), ("r2", 2)]);
    assert!(tags.iter().all(|t| t.applied_at_micros > 0));

    // Back to r1's definitions: a new registry version and object version, r1's fingerprint.
    let rollback = |to: &str, tag: &str| v1::RollbackRequest {
        to: to.into(),
        expected_version: None,
        force: false,
        tag: tag.into(),
    };
    let rolled = clients
        .registry
        .rollback(rollback("r1", "back"))
        .await?
        .into_inner();
    assert_eq!(rolled.registry_version, 3);
    assert!(!rolled.changes.is_empty());
    let (version, fingerprint) = view_fingerprint(&mut clients, "stats").await?;
    assert_eq!((version, &fingerprint), (3, &fingerprint_v1));
    assert!(
        view_fingerprint(&mut clients, "stats@2").await.is_ok(),
        "history kept"
    );
    // By number, to where it already is: nothing changes.
    let again = clients
        .registry
        .rollback(rollback("3", ""))
        .await?
        .into_inner();
    assert_eq!((again.registry_version, again.changes.len()), (3, 0));
    for (to, code) in [
        ("nope", tonic::Code::NotFound),
        ("99", tonic::Code::NotFound),
        ("", tonic::Code::InvalidArgument),
    ] {
        let status = clients
            .registry
            .rollback(rollback(to, ""))
            .await
            .expect_err(to);
        assert_eq!(status.code(), code, "{to}: {}", status.message());
    }
    server.stop().await?;
    Ok(())
}
