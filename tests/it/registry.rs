//! Registry over gRPC: apply, read back, versions, validation, stale applies, restart.

use quiver_core::testdata::EXAMPLE;
use quiver_integration_tests::{TestServer, apply, manifests};
use quiver_proto::v1;

fn write_example(server: &TestServer, manifest: &str) -> anyhow::Result<std::path::PathBuf> {
    let dir = server.path("repo/features");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("driver.yaml"), manifest)?;
    let shape = quiver_cli::demo::DemoShape {
        drivers: 5,
        hours: 4,
        end: 1_000 * quiver_cli::demo::HOUR,
        labels: 10,
    };
    quiver_cli::demo::write_parquet(
        &server.path("repo/features/data/driver_stats.parquet"),
        &quiver_cli::demo::driver_stats(shape)?,
    )?;
    Ok(dir)
}

fn kind(k: v1::ObjectKind) -> i32 {
    k as i32
}

#[tokio::test]
async fn apply_list_get_versions_and_restart() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let dir = write_example(&server, EXAMPLE)?;
    let applied = apply(&mut clients, &dir, false).await?;
    assert_eq!(applied.registry_version, 1);
    assert_eq!(applied.changes.len(), 4);
    let list = clients
        .registry
        .list_objects(v1::ListObjectsRequest { kind: 0 })
        .await?
        .into_inner();
    assert_eq!(list.objects.len(), 4);

    let edited = EXAMPLE.replace("ttl: 2h", "ttl: 3h");
    std::fs::write(dir.join("driver.yaml"), &edited)?;
    let applied = apply(&mut clients, &dir, false).await?;
    assert_eq!(applied.registry_version, 2);
    let get = |name: &str| v1::GetObjectRequest {
        kind: kind(v1::ObjectKind::FeatureView),
        name: name.into(),
    };
    let v1_obj = clients
        .registry
        .get_object(get("driver_stats@1"))
        .await?
        .into_inner()
        .object
        .expect("object");
    let latest = clients
        .registry
        .get_object(get("driver_stats"))
        .await?
        .into_inner()
        .object
        .expect("object");
    assert_eq!(
        (v1_obj.version, latest.version, latest.latest_version),
        (1, 2, 2)
    );
    assert_ne!(v1_obj.fingerprint, latest.fingerprint);
    assert!(
        v1_obj.spec_json.contains("7200000000"),
        "{}",
        v1_obj.spec_json
    );
    let missing = clients
        .registry
        .get_object(get("driver_stats@9"))
        .await
        .expect_err("no v9");
    assert_eq!(missing.code(), tonic::Code::NotFound);

    let (dir_handle, clock) = server.stop().await?;
    let server = TestServer::start_in(dir_handle, clock).await?;
    let mut clients = server.clients().await?;
    let again = clients
        .registry
        .get_object(get("driver_stats"))
        .await?
        .into_inner()
        .object
        .expect("object");
    assert_eq!(
        again, latest,
        "the registry reads back identically after a restart"
    );
    let versions = clients
        .registry
        .list_versions(v1::ListVersionsRequest {
            kind: kind(v1::ObjectKind::FeatureService),
            name: "driver_model".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        versions.versions.len(),
        2,
        "the service followed its view to a new version"
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn invalid_manifests_and_stale_applies_change_nothing() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let dir = write_example(&server, EXAMPLE)?;
    apply(&mut clients, &dir, false).await?;

    // Stale: planned against version 0, the registry is at 1.
    let stale = clients
        .registry
        .apply(v1::ApplyRequest {
            manifests: manifests(&dir)?,
            expected_version: Some(0),
            force: false,
            tag: String::new(),
        })
        .await
        .expect_err("stale apply");
    assert_eq!(stale.code(), tonic::Code::FailedPrecondition);
    assert!(
        stale.message().contains("plan again"),
        "{}",
        stale.message()
    );

    // Table of bad edits: (edit, code, words the message must contain).
    let table = [
        (
            EXAMPLE.replace("type: float32", "type: float64"),
            tonic::Code::InvalidArgument,
            vec!["conv_rate", "Float32", "float64"],
        ),
        (
            EXAMPLE.replace("event_time: event_timestamp", "event_time: ts"),
            tonic::Code::InvalidArgument,
            vec!["ts"],
        ),
        (
            EXAMPLE.replace("entities: [driver]", "entities: [rider]"),
            tonic::Code::InvalidArgument,
            vec![
                "driver.yaml",
                "FeatureView/driver_stats",
                "entities[0]",
                "rider",
            ],
        ),
        (
            EXAMPLE.replace("ttl: 2h", "ttl: two hours"),
            tonic::Code::InvalidArgument,
            vec!["ttl", "two hours"],
        ),
        (
            EXAMPLE.replace(
                "{name: vehicle_type, type: string}",
                "{name: vehicle_type, type: int64}",
            ),
            tonic::Code::InvalidArgument,
            vec!["vehicle_type"],
        ),
    ];
    for (text, code, words) in table {
        std::fs::write(dir.join("driver.yaml"), &text)?;
        let error = clients
            .registry
            .apply(v1::ApplyRequest {
                manifests: manifests(&dir)?,
                expected_version: Some(1),
                force: true,
                tag: String::new(),
            })
            .await
            .expect_err("invalid manifest");
        assert_eq!(error.code(), code, "{}", error.message());
        for word in words {
            assert!(
                error.message().contains(word),
                "`{word}` missing from: {}",
                error.message()
            );
        }
    }
    let list = clients
        .registry
        .list_objects(v1::ListObjectsRequest { kind: 0 })
        .await?
        .into_inner();
    assert_eq!(list.registry_version, 1, "nothing was applied");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn concurrent_applies_never_lose_an_update() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let dir = write_example(&server, EXAMPLE)?;
    apply(&mut clients, &dir, false).await?;
    // Eight clients plan against version 1 and apply different TTLs at once: exactly one wins.
    let files: Vec<_> = (0..8)
        .map(|i| {
            let text = EXAMPLE.replace("ttl: 2h", &format!("ttl: {}h", i + 3));
            vec![v1::ManifestFile {
                path: dir.join("driver.yaml").to_string_lossy().into_owned(),
                content: text,
            }]
        })
        .collect();
    let mut tasks = Vec::new();
    for manifests in files {
        let mut registry = clients.registry.clone();
        tasks.push(tokio::spawn(async move {
            registry
                .apply(v1::ApplyRequest {
                    manifests,
                    expected_version: Some(1),
                    force: false,
                    tag: String::new(),
                })
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => ok += 1,
            Err(status) => assert_eq!(
                status.code(),
                tonic::Code::FailedPrecondition,
                "{}",
                status.message()
            ),
        }
    }
    assert_eq!(ok, 1);
    let list = clients
        .registry
        .list_objects(v1::ListObjectsRequest { kind: 0 })
        .await?
        .into_inner();
    assert_eq!(list.registry_version, 2);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn health_is_served() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let clients = server.clients().await?;
    let mut health = tonic_health::pb::health_client::HealthClient::new(clients.channel.clone());
    let response = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "quiver.v1.OnlineService".into(),
        })
        .await?
        .into_inner();
    assert_eq!(
        response.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn reflection_lists_and_describes_every_service() -> anyhow::Result<()> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let server = TestServer::start().await?;
    let clients = server.clients().await?;
    let mut reflection = ServerReflectionClient::new(clients.channel.clone());
    let requests = vec![
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "quiver.v1.OnlineService".into(),
            )),
        },
    ];
    let mut responses = reflection
        .server_reflection_info(futures::stream::iter(requests))
        .await?
        .into_inner();
    let mut services = Vec::new();
    let mut described = false;
    while let Some(response) = futures::StreamExt::next(&mut responses).await {
        match response?.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                services = list.service.into_iter().map(|s| s.name).collect()
            }
            Some(MessageResponse::FileDescriptorResponse(files)) => {
                described = !files.file_descriptor_proto.is_empty()
            }
            other => anyhow::bail!("unexpected reflection answer {other:?}"),
        }
    }
    for name in [
        "quiver.v1.RegistryService",
        "quiver.v1.OnlineService",
        "quiver.v1.JobService",
        "quiver.v1.OfflineService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == name),
            "{name} not listed: {services:?}"
        );
    }
    assert!(described, "no descriptor for quiver.v1.OnlineService");
    server.stop().await?;
    Ok(())
}

/// The served registry version, as a plan reports it.
async fn served_version(
    clients: &mut quiver_integration_tests::Clients,
    dir: &std::path::Path,
) -> anyhow::Result<u64> {
    Ok(clients
        .registry
        .plan(v1::PlanRequest {
            manifests: manifests(dir)?,
        })
        .await?
        .into_inner()
        .base_version)
}

#[tokio::test]
async fn an_apply_whose_client_gives_up_still_agrees_with_storage() -> anyhow::Result<()> {
    let mut server = TestServer::start().await?;
    let dir = write_example(&server, EXAMPLE)?;
    // Clients that give up after 0.05 to 3.2 ms: each apply lands whole or not at all, and
    // what a restart loads from storage is what was served before it.
    for (attempt, micros) in [50u64, 200, 800, 3_200].into_iter().enumerate() {
        let mut clients = server.clients().await?;
        let manifest = EXAMPLE.replace("ttl: 2h", &format!("ttl: {}h", attempt + 3));
        std::fs::write(dir.join("driver.yaml"), manifest)?;
        let request = v1::ApplyRequest {
            manifests: manifests(&dir)?,
            expected_version: None,
            force: false,
            tag: String::new(),
        };
        let mut apply_client = clients.registry.clone();
        let call = apply_client.apply(request);
        let _ = tokio::time::timeout(std::time::Duration::from_micros(micros), call).await;
        // The same apply again, waited for: applies run one at a time, so it answers after
        // the abandoned one ended (or never arrived), with the version being served.
        let again = v1::ApplyRequest {
            manifests: manifests(&dir)?,
            expected_version: None,
            force: false,
            tag: String::new(),
        };
        let served = clients
            .registry
            .apply(again)
            .await?
            .into_inner()
            .registry_version;
        assert_eq!(served, served_version(&mut clients, &dir).await?);
        let (data, clock) = server.stop().await?;
        server = TestServer::start_in(data, clock).await?;
        let mut clients = server.clients().await?;
        let stored = served_version(&mut clients, &dir).await?;
        assert_eq!(
            stored, served,
            "attempt {attempt}: storage and the served snapshot disagree"
        );
    }
    server.stop().await?;
    Ok(())
}
