//! Limits, black-box: each request over a limit is refused with the code and the setting
//! named, and the server keeps serving others afterwards.

use arrow_flight::{FlightClient, FlightDescriptor};
use futures::TryStreamExt;
use quiver_integration_tests::{Clients, TestServer, raw_unary};
use quiver_proto::v1;
use quiver_server::Limits;

use super::fixture::{TestRow, setup};
use super::online::{get_request, push_request, read_a};

const T0: i64 = 1_800_000_000_000_000;

fn rows(n: i64) -> Vec<TestRow> {
    (0..n)
        .map(|i| TestRow {
            user_id: i,
            event_ts: T0,
            created_ts: T0,
            a: i,
            b: None,
            s: String::new(),
        })
        .collect()
}

fn assert_refused(status: &tonic::Status, code: tonic::Code, needle: &str) {
    assert_eq!(status.code(), code, "{needle}: {}", status.message());
    assert!(
        status.message().contains(needle),
        "{needle}: {}",
        status.message()
    );
}

async fn started(limits: Limits) -> anyhow::Result<(TestServer, Clients)> {
    let server = TestServer::start_limited(limits).await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(1), "0").await?;
    Ok((server, clients))
}

#[tokio::test]
async fn pushes_and_reads_over_their_limits_are_refused() -> anyhow::Result<()> {
    let (_server, mut clients) = started(Limits {
        max_push_rows: 10,
        max_push_bytes: 4_000,
        max_online_entities: 5,
        max_online_request_bytes: 2_000,
        ..Limits::default()
    })
    .await?;
    let too_many = clients.online.push(push_request(&rows(11))).await;
    let status = too_many.expect_err("11 rows");
    assert_refused(&status, tonic::Code::ResourceExhausted, "(--max-push-rows)");
    assert!(status.message().contains("11 rows"), "{}", status.message());
    let mut wide = rows(2);
    wide[0].s = "x".repeat(5_000);
    let too_large = clients.online.push(push_request(&wide)).await;
    assert_refused(
        &too_large.expect_err("5 kB"),
        tonic::Code::ResourceExhausted,
        "(--max-push-bytes)",
    );
    let entities = clients
        .online
        .get_online_features(get_request((0..6).collect()))
        .await;
    assert_refused(
        &entities.expect_err("6 entities"),
        tonic::Code::ResourceExhausted,
        "(--max-online-entities)",
    );
    let mut large = get_request(vec![1]);
    large.expected_fingerprint = "f".repeat(3_000);
    let large = clients.online.get_online_features(large).await;
    assert_refused(
        &large.expect_err("3 kB"),
        tonic::Code::ResourceExhausted,
        "(--max-online-request-bytes)",
    );
    // Nothing of the refused pushes was written, and requests within the limits are served.
    assert_eq!(read_a(&mut clients, vec![7]).await?[0].1, None);
    clients.online.push(push_request(&rows(10))).await?;
    let read = read_a(&mut clients, (0..5).collect()).await?;
    assert_eq!(
        read.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        (0..5).map(Some).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn a_large_push_is_written_in_chunks_and_reads_back() -> anyhow::Result<()> {
    let (_server, mut clients) = started(Limits::default()).await?;
    let n = quiver_server::push::CHUNK_ROWS as i64 * 2 + 3;
    let response = clients
        .online
        .push(push_request(&rows(n)))
        .await?
        .into_inner();
    assert_eq!(response.rows, n as u64);
    assert_eq!(response.views[0].written_online, n as u64);
    assert_eq!(response.views[0].written_offline, n as u64);
    let ids = vec![0, n / 2, n - 1];
    let read = read_a(&mut clients, ids.clone()).await?;
    assert_eq!(
        read.iter().map(|(_, a)| *a).collect::<Vec<_>>(),
        ids.into_iter().map(Some).collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn times_outside_the_valid_range_are_refused_on_push() -> anyhow::Result<()> {
    let (_server, mut clients) = started(Limits::default()).await?;
    for bad in [i64::MAX, i64::MIN, quiver_core::semantics::MAX_TIME + 1] {
        let mut event = rows(3);
        event[2].event_ts = bad;
        let refused = clients.online.push(push_request(&event)).await;
        assert_refused(
            &refused.expect_err("out of range"),
            tonic::Code::InvalidArgument,
            "columns.event_timestamp[2]",
        );
        let mut created = rows(3);
        created[1].created_ts = bad;
        let refused = clients.online.push(push_request(&created)).await;
        assert_refused(
            &refused.expect_err("out of range"),
            tonic::Code::InvalidArgument,
            "valid time range",
        );
    }
    assert_eq!(read_a(&mut clients, vec![2]).await?[0].1, None);
    Ok(())
}

#[tokio::test]
async fn oversized_and_malformed_messages_are_the_clients_errors() -> anyhow::Result<()> {
    let (_server, mut clients) = started(Limits {
        max_control_message_bytes: 64 * 1024,
        ..Limits::default()
    })
    .await?;
    let huge = v1::PlanRequest {
        manifests: vec![v1::ManifestFile {
            path: "big.yaml".into(),
            content: "#".repeat(100 * 1024),
        }],
    };
    let refused = clients.registry.plan(huge).await;
    assert_refused(
        &refused.expect_err("100 KiB"),
        tonic::Code::ResourceExhausted,
        "(--max-control-message-bytes)",
    );
    // Field 1 (string) holding invalid UTF-8; then a truncated varint.
    let bad_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    let bad_varint = vec![0x08, 0xff, 0xff];
    for (body, what) in [(bad_utf8, "utf-8"), (bad_varint, "varint")] {
        let status = raw_unary(
            clients.plain.clone(),
            "/quiver.v1.OnlineService/GetOnlineFeatures",
            body,
        )
        .await
        .expect_err(what);
        assert_refused(
            &status,
            tonic::Code::InvalidArgument,
            "malformed request message",
        );
    }
    clients.online.push(push_request(&rows(1))).await?;
    let read = read_a(&mut clients, vec![0]).await?;
    assert_eq!(read[0].1, Some(0), "the server still serves");
    Ok(())
}

#[tokio::test]
async fn materialization_is_bounded_by_running_jobs() -> anyhow::Result<()> {
    let (_server, mut clients) = started(Limits {
        max_concurrent_jobs: 0,
        ..Limits::default()
    })
    .await?;
    let refused = clients
        .jobs
        .start_materialization(v1::StartMaterializationRequest {
            views: vec![],
            start_micros: 0,
            end_micros: T0 + 1,
            incremental: false,
        })
        .await;
    assert_refused(
        &refused.expect_err("no job may run"),
        tonic::Code::ResourceExhausted,
        "(--max-concurrent-jobs)",
    );
    Ok(())
}

async fn upload(client: &mut FlightClient, name: &str, rows: i64) -> Result<(), tonic::Status> {
    let descriptor = FlightDescriptor::new_path(vec!["labels".into(), name.into()]);
    let batch =
        super::fixture::labels(rows, T0).map_err(|e| tonic::Status::internal(e.to_string()))?;
    let data = arrow_flight::encode::FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter([Ok(batch)]));
    let results = client.do_put(data).await.map_err(to_status)?;
    results.try_collect::<Vec<_>>().await.map_err(to_status)?;
    Ok(())
}

fn to_status(error: arrow_flight::error::FlightError) -> tonic::Status {
    match error {
        arrow_flight::error::FlightError::Tonic(status) => *status,
        other => tonic::Status::unknown(other.to_string()),
    }
}

#[tokio::test]
async fn uploads_are_bounded_while_they_stream() -> anyhow::Result<()> {
    let (_server, clients) = started(Limits {
        max_upload_bytes: 64 * 1024,
        max_uploads_total_bytes: 80 * 1024,
        max_uploads: 2,
        ..Limits::default()
    })
    .await?;
    let mut client = FlightClient::new(clients.plain.clone());
    // 100k rows (1.6 MB): over the per-upload limit.
    let status = upload(&mut client, "big", 100_000)
        .await
        .expect_err("1.6 MB");
    assert_refused(
        &status,
        tonic::Code::ResourceExhausted,
        "(--max-upload-bytes)",
    );
    // 3000 rows (48 kB) fit one upload; two of them do not fit the total.
    upload(&mut client, "a", 3_000).await?;
    let status = upload(&mut client, "b", 3_000)
        .await
        .expect_err("96 kB kept");
    assert_refused(
        &status,
        tonic::Code::ResourceExhausted,
        "(--max-uploads-total-bytes)",
    );
    upload(&mut client, "b", 10).await?;
    let status = upload(&mut client, "c", 10)
        .await
        .expect_err("a third table");
    assert_refused(&status, tonic::Code::ResourceExhausted, "(--max-uploads)");
    // Replacing a kept table gives its bytes back.
    upload(&mut client, "a", 10).await?;
    upload(&mut client, "b", 3_000).await?;
    Ok(())
}

#[tokio::test]
async fn exports_are_bounded_by_the_offline_memory_limit() -> anyhow::Result<()> {
    let (server, mut clients) = started(Limits {
        offline_memory_limit: 256,
        ..Limits::default()
    })
    .await?;
    quiver_integration_tests::write_parquet(
        &server.path("labels.parquet"),
        &[super::fixture::labels(3, T0 + 1)?],
    )?;
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: server.path("labels.parquet").to_string_lossy().into_owned(),
        output_path: "train.parquet".into(),
        ..Default::default()
    };
    let refused = quiver_integration_tests::export_to_end(&mut clients, request).await;
    assert_refused(
        &refused.expect_err("the view's rows do not fit in 256 bytes"),
        tonic::Code::ResourceExhausted,
        "(--offline-memory-limit)",
    );
    assert!(!server.path("data/exports/train.parquet").exists());
    Ok(())
}
