//! Metrics and probes on the HTTP port: every figure checked against what the clients saw
//! (statuses counted from the responses, rows from push and job answers, ages from the manual
//! clock), and the lifecycle (ready, then draining with NOT_SERVING, a bounded drain).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use quiver_integration_tests::{TestServer, export_to_end, raw_unary, write_parquet};
use quiver_proto::v1;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

use super::fixture::{TestRow, labels, materialize, setup};
use super::materialize::incremental;
use super::online::{get_request, push_request};

const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_800_000_000_000_000;

/// The samples of a Prometheus text exposition: (name, labels) -> value.
type Samples = BTreeMap<(String, BTreeMap<String, String>), f64>;

fn parse(text: &str) -> anyhow::Result<Samples> {
    let mut samples = Samples::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| anyhow::anyhow!("no value: {line}"))?;
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect();
        samples.insert((name.to_string(), labels), value.parse()?);
    }
    Ok(samples)
}

/// The value of the one series `name` whose labels include `labels`.
fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|((n, l), _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
        .collect();
    match matching.as_slice() {
        [one] => Some(*one),
        _ => None,
    }
}

fn row(user_id: i64, event_ts: i64, b: Option<f64>) -> TestRow {
    TestRow {
        user_id,
        event_ts,
        created_ts: event_ts,
        a: user_id,
        b,
        s: "s".into(),
    }
}

#[tokio::test]
async fn metrics_count_what_the_clients_saw() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    // TTL 2h at now = T0: user 1 is stale, user 2 fresh with a null `b`, user 3 fresh.
    let rows = [
        row(1, T0 - 3 * HOUR, Some(1.0)),
        row(2, T0 - HOUR, None),
        row(3, T0 - HOUR / 2, Some(3.0)),
    ];
    setup(&server, &mut clients, &rows, "2h").await?;
    server.clock.set(T0);
    let job = incremental(&mut clients, T0).await?;
    assert_eq!(job.state, v1::JobState::Succeeded as i32);
    let materialized: u64 = job.views.iter().map(|v| v.keys_written).sum();

    // Reads: statuses counted here from the responses, independently of the server.
    let mut statuses = [0u64; 5];
    let mut entities = 0u64;
    for ids in [vec![1, 2, 3], vec![3, 99], vec![2]] {
        entities += ids.len() as u64;
        let response = clients
            .online
            .get_online_features(get_request(ids))
            .await?
            .into_inner();
        for column in &response.features {
            for status in &column.statuses {
                statuses[*status as usize] += 1;
            }
        }
    }
    let bad = clients
        .online
        .get_online_features(v1::GetOnlineFeaturesRequest {
            entities: vec![],
            ..get_request(vec![1])
        })
        .await;
    assert_eq!(
        bad.map(|_| ()).map_err(|s| s.code()),
        Err(tonic::Code::InvalidArgument)
    );
    let unknown = raw_unary(
        server.clients().await?.plain,
        "/quiver.v1.OnlineService/Nope",
        vec![],
    )
    .await;
    assert_eq!(
        unknown.map_err(|s| s.code()),
        Err(tonic::Code::Unimplemented)
    );

    // A push: one row newer than stored, one older (skipped online, kept offline).
    let pushed = clients
        .online
        .push(push_request(&[
            row(3, T0 - HOUR / 4, None),
            row(2, T0 - 2 * HOUR, None),
        ]))
        .await?
        .into_inner();
    let pushed = &pushed.views[0];
    assert_eq!((pushed.written_online, pushed.skipped_older), (1, 1));

    // A file export of 4 label rows.
    write_parquet(&server.path("labels.parquet"), &[labels(4, T0)?])?;
    let exported = export_to_end(
        &mut clients,
        v1::ExportRequest {
            selector: Some(v1::export_request::Selector::FeatureService("model".into())),
            labels_path: "labels.parquet".into(),
            output_path: "out.parquet".into(),
            ..Default::default()
        },
    )
    .await?;

    server.clock.set(T0 + HOUR);
    let (status, text) = server.http_get("/metrics").await?;
    assert_eq!(status, 200, "{text}");
    let samples = parse(&text)?;
    let view = [("view", "stats")];
    for (status, name) in [
        (1, "PRESENT"),
        (2, "NULL_VALUE"),
        (3, "NOT_FOUND"),
        (4, "OUTSIDE_MAX_AGE"),
    ] {
        assert_eq!(
            value(
                &samples,
                "quiver_online_values_total",
                &[("view", "stats"), ("status", name)]
            ),
            Some(statuses[status] as f64),
            "{name}"
        );
    }
    assert!(
        statuses[1..].iter().all(|n| *n > 0),
        "every status occurs: {statuses:?}"
    );
    assert_eq!(
        value(&samples, "quiver_online_entities_total", &view),
        Some(entities as f64)
    );
    let rpc = |method: &str, code: &str| {
        value(
            &samples,
            "quiver_rpc_requests_total",
            &[
                ("service", "quiver.v1.OnlineService"),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(rpc("GetOnlineFeatures", "OK"), Some(3.0));
    assert_eq!(rpc("GetOnlineFeatures", "INVALID_ARGUMENT"), Some(1.0));
    assert_eq!(rpc("Push", "OK"), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "quiver_rpc_requests_total",
            &[("method", "unknown"), ("code", "UNIMPLEMENTED")]
        ),
        Some(1.0),
        "a path nobody serves is never a label"
    );
    assert!(!text.contains("Nope"));
    assert_eq!(
        value(
            &samples,
            "quiver_rpc_duration_seconds_count",
            &[("method", "GetOnlineFeatures"), ("code", "OK")]
        ),
        Some(3.0)
    );
    // Server streams are counted at their end, with their final status.
    assert_eq!(
        value(
            &samples,
            "quiver_rpc_requests_total",
            &[("method", "WatchJob"), ("code", "OK")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "quiver_push_rows_total",
            &[("view", "stats"), ("store", "online")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "quiver_push_rows_total",
            &[("view", "stats"), ("store", "offline")]
        ),
        Some(pushed.written_offline as f64)
    );
    assert_eq!(
        value(&samples, "quiver_push_skipped_older_rows_total", &view),
        Some(1.0)
    );
    assert!(value(&samples, "quiver_push_bytes_total", &[]).is_some_and(|b| b > 0.0));
    let runs = |outcome| {
        value(
            &samples,
            "quiver_materialization_runs_total",
            &[("view", "stats"), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("succeeded"), Some(1.0));
    // Outcomes that never happened exist from 0, so that their first increase shows.
    assert_eq!((runs("failed"), runs("cancelled")), (Some(0.0), Some(0.0)));
    assert_eq!(
        value(&samples, "quiver_materialization_rows_total", &view),
        Some(materialized as f64)
    );
    assert_eq!(
        value(
            &samples,
            "quiver_materialization_last_success_timestamp_seconds",
            &view
        ),
        Some(T0 as f64 / 1e6)
    );
    assert_eq!(
        value(&samples, "quiver_export_rows_total", &[("sink", "file")]),
        Some(exported.rows as f64)
    );
    // Ages at now = T0 + 1h: the newest event written online is the push's (T0 - 15 min);
    // the watermark is the incremental run's end (T0).
    assert_eq!(
        value(&samples, "quiver_view_newest_event_age_seconds", &view),
        Some(4_500.0)
    );
    assert_eq!(
        value(&samples, "quiver_view_watermark_age_seconds", &view),
        Some(3_600.0)
    );
    assert_eq!(
        value(&samples, "quiver_view_ttl_seconds", &view),
        Some(7_200.0)
    );
    assert_eq!(value(&samples, "quiver_registry_version", &[]), Some(1.0));
    assert_eq!(value(&samples, "quiver_ready", &[]), Some(1.0));
    for name in [
        "quiver_rocksdb_live_data_bytes",
        "quiver_rocksdb_memtable_bytes",
        "quiver_rocksdb_pending_compaction_bytes",
        "quiver_rocksdb_block_cache_hit_ratio",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(value(&samples, name, &[]).is_some(), "{name} missing");
    }
    assert!(value(&samples, "quiver_rocksdb_memtable_bytes", &[]).is_some_and(|b| b > 0.0));
    // Every key read went through the row cache: a miss, then filled.
    let row_cache = |name| value(&samples, name, &[]).unwrap_or_default();
    assert!(row_cache("quiver_online_row_cache_misses_total") > 0.0);
    assert!(row_cache("quiver_online_row_cache_bytes") > 0.0);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn probes_follow_the_lifecycle_and_the_drain_is_bounded() -> anyhow::Result<()> {
    let server = TestServer::start_with(
        tempfile::tempdir()?,
        quiver_integration_tests::ManualClock::new(T0),
        |options| options.shutdown_grace = Duration::from_millis(500),
    )
    .await?;
    let clients = server.clients().await?;
    assert_eq!(server.http_get("/healthz").await?, (200, "ok\n".into()));
    assert_eq!(server.http_get("/readyz").await?, (200, "ready\n".into()));
    assert_eq!(server.http_get("/nothing").await?.0, 404);
    // A health watch is a call that never ends on its own: the drain must cut it.
    let mut watch = HealthClient::new(clients.plain.clone())
        .watch(HealthCheckRequest {
            service: "quiver.v1.OnlineService".into(),
        })
        .await?
        .into_inner();
    let first = watch.next().await.transpose()?.map(|r| r.status);
    assert_eq!(first, Some(ServingStatus::Serving as i32));

    server.begin_shutdown();
    let next = tokio::time::timeout(Duration::from_secs(30), watch.next()).await?;
    assert_eq!(
        next.transpose()?.map(|r| r.status),
        Some(ServingStatus::NotServing as i32)
    );
    assert_eq!(
        server.http_get("/readyz").await?,
        (503, "draining\n".into())
    );
    let (_, text) = server.http_get("/metrics").await?;
    assert_eq!(value(&parse(&text)?, "quiver_ready", &[]), Some(0.0));
    // Bounded: the open watch is cut at the grace deadline.
    tokio::time::timeout(Duration::from_secs(60), server.stop()).await??;
    Ok(())
}

#[tokio::test]
async fn materialization_failures_are_counted() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row(1, T0, None)], "0").await?;
    std::fs::write(server.path("repo/data/stats.parquet"), b"not parquet")?;
    assert!(materialize(&mut clients, 0, T0 + 1).await.is_err());
    let (_, text) = server.http_get("/metrics").await?;
    let samples = parse(&text)?;
    assert_eq!(
        value(
            &samples,
            "quiver_materialization_runs_total",
            &[("view", "stats"), ("outcome", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "quiver_materialization_last_success_timestamp_seconds",
            &[("view", "stats")]
        ),
        None
    );
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn every_call_gets_a_request_id_back() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let list = || v1::ListObjectsRequest { kind: 0 };
    // The client's id, when short and printable, is kept.
    let mut request = tonic::Request::new(list());
    request
        .metadata_mut()
        .insert("x-request-id", "trace-42".parse()?);
    let response = clients.registry.list_objects(request).await?;
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str())
            .transpose()?,
        Some("trace-42")
    );
    // Otherwise (none, or too long) the server makes one: 16 hex digits, new per call.
    let mut ids = Vec::new();
    for given in [None, Some("x".repeat(65))] {
        let mut request = tonic::Request::new(list());
        if let Some(given) = given {
            request
                .metadata_mut()
                .insert("x-request-id", given.parse()?);
        }
        let response = clients.registry.list_objects(request).await?;
        let id = response
            .metadata()
            .get("x-request-id")
            .map(|v| v.to_str())
            .transpose()?;
        let id = id
            .ok_or_else(|| anyhow::anyhow!("no request id"))?
            .to_string();
        assert!(
            id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{id}"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
    // Errors carry it too.
    let refused = clients
        .online
        .get_online_features(v1::GetOnlineFeaturesRequest::default())
        .await
        .expect_err("no selector");
    assert!(refused.metadata().get("x-request-id").is_some());
    server.stop().await?;
    Ok(())
}
