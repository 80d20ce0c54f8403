//! Served-row logging and the skew report, end to end: serve, log, recompute the join at
//! served_at, compare. On the normal path the report finds nothing; injected skew is found
//! exactly (keys, features, counts).

use std::io::Cursor;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use arrow::ipc::reader::StreamReader;
use quiver_integration_tests::{Clients, TestServer, apply, write_parquet};
use quiver_proto::v1;

use super::consistency::{HOUR, T, TTL_HOURS, generated};
use super::fixture::{MANIFEST, TestRow, batch, materialize};
use super::online::{get_request, push_request};

/// The fixture's project with the service logging every key.
pub(super) async fn setup_logged(
    server: &TestServer,
    clients: &mut Clients,
    rows: &[TestRow],
) -> anyhow::Result<()> {
    let dir = server.path("repo");
    write_parquet(&dir.join("data/stats.parquet"), &[batch(rows)?])?;
    let manifest =
        MANIFEST.replace("TTL", &format!("{TTL_HOURS}h")) + "logging: {sample_rate: 1.0}\n";
    std::fs::write(dir.join("features.yaml"), manifest)?;
    apply(clients, &dir, false).await?;
    Ok(())
}

async fn skew(clients: &mut Clients, lag: Option<i64>) -> anyhow::Result<v1::ComputeSkewResponse> {
    let request = v1::ComputeSkewRequest {
        feature_service: "model".into(),
        start_micros: T - HOUR,
        end_micros: T + HOUR,
        sample: 0,
        expected_lag_micros: lag,
    };
    Ok(clients.monitoring.compute_skew(request).await?.into_inner())
}

fn feature<'a>(report: &'a v1::ComputeSkewResponse, name: &str) -> &'a v1::FeatureSkew {
    report
        .features
        .iter()
        .find(|f| f.feature == name)
        .unwrap_or_else(|| panic!("no feature {name} in {report:?}"))
}

fn ids() -> Vec<i64> {
    (0..300).chain(1_000..1_003).chain([5_000]).collect()
}

pub(super) fn pushed(user_id: i64, a: i64) -> TestRow {
    TestRow {
        user_id,
        event_ts: T - 600_000_000,
        created_ts: T - 1,
        a,
        b: Some(0.5),
        s: "pushed".into(),
    }
}

/// Pushes rows for users 6000 and 6001 to the online store only (the offline data never
/// learns of them; they have no other rows), then serves every test key at `T`.
async fn serve_with_online_only_pushes(
    server: &TestServer,
    clients: &mut Clients,
) -> anyhow::Result<()> {
    let mut online_only = push_request(&[pushed(6_000, 60), pushed(6_001, 61)]);
    online_only.mode = v1::PushMode::Online as i32;
    clients.online.push(online_only).await?;
    server.clock.set(T);
    let mut ids = ids();
    ids.extend([6_000, 6_001]);
    clients.online.get_online_features(get_request(ids)).await?;
    Ok(())
}

#[tokio::test]
async fn the_normal_path_shows_no_skew_across_ties_ttl_bounds_missing_keys_and_pushes()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup_logged(&server, &mut clients, &generated()).await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    server.clock.set(T - 1);
    // Pushed to both paths: the online row and the push log agree.
    clients
        .online
        .push(push_request(&[pushed(7, 70), pushed(6_000, 60)]))
        .await?;
    server.clock.set(T);
    let mut ids = ids();
    ids.extend([7, 6_000]);
    clients
        .online
        .get_online_features(get_request(ids.clone()))
        .await?;
    clients
        .online
        .get_online_features(get_request(vec![7, 1_002, 5_000]))
        .await?;
    let report = skew(&mut clients, None).await?;
    assert_eq!(report.rows, ids.len() as u64 + 3);
    assert_eq!(report.service_versions, [1]);
    let names: Vec<&str> = report.features.iter().map(|f| f.feature.as_str()).collect();
    assert_eq!(names, ["stats__a", "stats__b", "stats__s"]);
    for f in &report.features {
        assert_eq!((f.compared, f.matches), (report.rows, report.rows), "{f:?}");
        assert_eq!((f.mismatches, f.expected), (0, 0), "{f:?}");
        assert!(f.examples.is_empty(), "{f:?}");
    }

    // The log itself: every served row, with statuses, as one Arrow IPC stream.
    let request = v1::ReadServedLogRequest {
        feature_service: "model".into(),
        start_micros: T - HOUR,
        end_micros: T + HOUR,
        version: 0,
    };
    let mut stream = clients
        .monitoring
        .read_served_log(request)
        .await?
        .into_inner();
    let mut ipc = Vec::new();
    while let Some(chunk) = stream.message().await? {
        ipc.extend_from_slice(&chunk.arrow_ipc);
    }
    let batches: Vec<_> =
        StreamReader::try_new(Cursor::new(ipc), None)?.collect::<Result<_, _>>()?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, ids.len() + 3);
    let first = &batches[0];
    let users = first
        .column_by_name("user_id")
        .expect("user_id")
        .as_primitive::<Int64Type>();
    assert_eq!(users.value(0), ids[0]);
    let statuses = first
        .column_by_name("stats__a.status")
        .expect("status")
        .as_string::<i32>();
    let outside = ids.iter().position(|id| *id == 1_002).expect("1002");
    assert_eq!(statuses.value(outside), "OUTSIDE_MAX_AGE");
    let missing = ids.iter().position(|id| *id == 5_000).expect("5000");
    assert_eq!(statuses.value(missing), "NOT_FOUND");
    assert!(
        first
            .column_by_name("stats.event_time")
            .expect("event")
            .is_null(missing)
    );
    let logged_nulls: usize = batches
        .iter()
        .map(|b| b.column_by_name("stats__a").map_or(0, |c| c.null_count()))
        .sum();

    // Quiver reads its own log as a source: a view over it profiles the served values.
    let log_dir = server.path("data/served_log/model");
    let manifest = format!(
        "kind: Source\nname: model_log\nparquet: {}\nevent_time: served_at\n---\n\
         kind: FeatureView\nname: served_stats\nentities: [user]\nsource: model_log\n\
         online: false\nfeatures: [{{name: stats__a, type: int64}}]\n",
        log_dir.display()
    );
    std::fs::write(server.path("repo/log.yaml"), manifest)?;
    apply(&mut clients, &server.path("repo"), false).await?;
    let request = v1::ComputeProfileRequest {
        subject: Some(v1::compute_profile_request::Subject::View(
            "served_stats".into(),
        )),
        start_micros: T - HOUR,
        end_micros: T + HOUR,
    };
    let profile = clients
        .monitoring
        .compute_profile(request)
        .await?
        .into_inner();
    let profile = profile
        .profile
        .ok_or_else(|| anyhow::anyhow!("no profile"))?;
    assert_eq!(profile.rows, rows as u64);
    assert_eq!(profile.features[0].nulls, logged_nulls as u64);
    assert!(logged_nulls > 0);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn injected_skew_is_found_exactly() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let mut rows = generated();
    setup_logged(&server, &mut clients, &rows).await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    server.clock.set(T - 1);
    serve_with_online_only_pushes(&server, &mut clients).await?;

    // Rewrite past source rows after serving: the rows served for users 10, 11 and 12.
    let served = |user: i64| {
        rows.iter()
            .enumerate()
            .filter(|(_, r)| {
                r.user_id == user && r.event_ts <= T && r.event_ts >= T - TTL_HOURS * HOUR
            })
            .max_by_key(|(_, r)| (r.event_ts, r.created_ts))
            .map(|(i, _)| i)
    };
    let rewritten: Vec<(i64, usize)> = (10..40)
        .filter_map(|u| served(u).map(|i| (u, i)))
        .take(3)
        .collect();
    for (_, i) in &rewritten {
        rows[*i].a += 1_000_000;
    }
    write_parquet(&server.path("repo/data/stats.parquet"), &[batch(&rows)?])?;

    let report = skew(&mut clients, None).await?;
    let a = feature(&report, "stats__a");
    assert_eq!(a.value_differs, 3, "{a:?}");
    assert_eq!(a.online_present_offline_null, 2, "{a:?}");
    assert_eq!((a.mismatches, a.expected), (5, 0), "{a:?}");
    assert_eq!(
        a.online_null_offline_present + a.outside_max_age_offline_value,
        0
    );
    let mut keys: Vec<&str> = a
        .examples
        .iter()
        .filter(|e| e.cause == "value_differs")
        .map(|e| e.key.as_str())
        .collect();
    keys.sort_unstable();
    let mut want: Vec<String> = rewritten
        .iter()
        .map(|(u, _)| format!("user_id={u}"))
        .collect();
    want.sort_unstable();
    assert_eq!(keys, want);
    for name in ["stats__b", "stats__s"] {
        let f = feature(&report, name);
        // Only the online-only pushes differ in b and s (the rewrite changed a alone).
        assert_eq!(
            (f.mismatches, f.online_present_offline_null),
            (2, 2),
            "{f:?}"
        );
        let mut keys: Vec<&str> = f.examples.iter().map(|e| e.key.as_str()).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["user_id=6000", "user_id=6001"]);
    }

    // Pushed 10 minutes before serving: expected within a lag of 1 hour, real within 5 min.
    let lagged = skew(&mut clients, Some(HOUR)).await?;
    let a = feature(&lagged, "stats__a");
    assert_eq!(
        (a.mismatches, a.expected, a.value_differs),
        (3, 2, 3),
        "{a:?}"
    );
    let tight = skew(&mut clients, Some(300_000_000)).await?;
    assert_eq!(feature(&tight, "stats__a").expected, 0);
    server.stop().await?;
    Ok(())
}

/// The value of the series `name{labels}` in a Prometheus exposition (0 when absent).
fn series(text: &str, name: &str, labels: &str) -> u64 {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Reads `ids` in `requests` concurrent calls; returns the rows now in the log.
async fn load(server: &TestServer, requests: usize, per_request: i64) -> anyhow::Result<u64> {
    let mut calls = Vec::new();
    for r in 0..requests {
        let mut clients = server.clients().await?;
        let ids: Vec<i64> = (0..per_request)
            .map(|i| (r as i64 * per_request + i) % 300)
            .collect();
        calls.push(tokio::spawn(async move {
            clients.online.get_online_features(get_request(ids)).await
        }));
    }
    for call in calls {
        call.await??;
    }
    let mut clients = server.clients().await?;
    Ok(skew(&mut clients, None).await?.rows)
}

#[tokio::test]
async fn the_log_loses_nothing_while_the_queue_has_room_and_counts_every_drop() -> anyhow::Result<()>
{
    let rows = generated();
    let served = 64 * 20;
    for (queue_rows, bytes_per_second) in [(100_000, 0), (30, 0), (0, 0), (100_000, 1)] {
        let server = TestServer::start_with(
            tempfile::tempdir()?,
            quiver_integration_tests::ManualClock::new(T),
            |o| {
                o.served_log.queue_rows = queue_rows;
                o.served_log.max_bytes_per_second = bytes_per_second;
            },
        )
        .await?;
        let mut clients = server.clients().await?;
        setup_logged(&server, &mut clients, &rows).await?;
        materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
        let logged = load(&server, 64, 20).await?;
        let (_, metrics) = server.http_get("/metrics").await?;
        let written = series(
            &metrics,
            "quiver_served_log_rows_total",
            "service=\"model\"",
        );
        let dropped: u64 = ["queue_full", "rate_limit", "error"]
            .iter()
            .map(|r| {
                let labels = format!("reason=\"{r}\",service=\"model\"");
                series(&metrics, "quiver_served_log_dropped_rows_total", &labels)
            })
            .sum();
        let case = format!("queue {queue_rows}, rate {bytes_per_second}");
        assert_eq!(written, logged, "{case}: rows written = rows in the files");
        assert_eq!(
            logged + dropped,
            served,
            "{case}: every sampled row is logged or counted"
        );
        match (queue_rows, bytes_per_second) {
            (100_000, 0) => assert_eq!(dropped, 0, "{case}: room in the queue, nothing dropped"),
            (30, 0) => assert!(logged > 0, "{case}"),
            _ => assert_eq!(logged, 0, "{case}: nothing fits"),
        }
        server.stop().await?;
    }
    Ok(())
}

/// The value of the series `name{labels}` as a float, if exported.
fn gauge(text: &str, name: &str, labels: &str) -> Option<f64> {
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

#[tokio::test]
async fn a_scheduled_skew_check_exports_the_rate_of_the_report() -> anyhow::Result<()> {
    let server = TestServer::start_with(
        tempfile::tempdir()?,
        quiver_integration_tests::ManualClock::new(T - 1),
        |o| o.monitoring_interval = std::time::Duration::from_millis(50),
    )
    .await?;
    let mut clients = server.clients().await?;
    let dir = server.path("repo");
    write_parquet(&dir.join("data/stats.parquet"), &[batch(&generated())?])?;
    let manifest = MANIFEST.replace("TTL", &format!("{TTL_HOURS}h"))
        + "logging: {sample_rate: 1.0, skew_check: {every: 1m, window: 1h}}\n";
    std::fs::write(dir.join("features.yaml"), manifest)?;
    apply(&mut clients, &dir, false).await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    serve_with_online_only_pushes(&server, &mut clients).await?;
    // The next check is due a minute after the first (which ran at apply, before any read).
    let now = T + 61_000_000;
    server.clock.set(now);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let metrics = loop {
        let (_, text) = server.http_get("/metrics").await?;
        let at = gauge(
            &text,
            "quiver_skew_check_timestamp_seconds",
            "service=\"model\"",
        );
        if at.is_some_and(|at| (at - now as f64 / 1e6).abs() < 1e-3) {
            break text;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no check at {now}: {text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let report = clients
        .monitoring
        .compute_skew(v1::ComputeSkewRequest {
            feature_service: "model".into(),
            start_micros: now - HOUR,
            end_micros: now + 1,
            sample: 0,
            expected_lag_micros: None,
        })
        .await?
        .into_inner();
    let compared: u64 = report.features.iter().map(|f| f.compared).sum();
    let mismatched: u64 = report.features.iter().map(|f| f.mismatches).sum();
    assert_eq!(mismatched, 6, "2 online-only keys x 3 features: {report:?}");
    let rate = gauge(&metrics, "quiver_skew_rate", "service=\"model\"");
    assert_eq!(rate, Some(mismatched as f64 / compared as f64));
    let compared_gauge = gauge(&metrics, "quiver_skew_compared_values", "service=\"model\"");
    assert_eq!(compared_gauge, Some(compared as f64));
    let labels = "cause=\"online_present_offline_null\",feature=\"stats__a\",service=\"model\"";
    assert_eq!(gauge(&metrics, "quiver_skew_mismatches", labels), Some(2.0));
    let labels = "outcome=\"ok\",service=\"model\"";
    let checks = gauge(&metrics, "quiver_skew_checks_total", labels);
    assert!(checks.is_some_and(|n| n >= 1.0), "{metrics}");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn an_online_store_materialized_over_another_window_is_skew_by_cause() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let rows = generated();
    setup_logged(&server, &mut clients, &rows).await?;
    // The online store stops 2 hours before serving time; training sees everything.
    let cut = T - 2 * HOUR;
    materialize(&mut clients, T - 100 * HOUR, cut).await?;
    server.clock.set(T);
    let ids = ids();
    clients
        .online
        .get_online_features(get_request(ids.clone()))
        .await?;

    // Reference, written out from the raw rows: what online served and what the join at T,
    // as known at T, finds; then the verdict per key for feature `a`.
    let ttl = TTL_HOURS * HOUR;
    let greatest = |keep: &dyn Fn(&TestRow) -> bool| {
        rows.iter()
            .filter(|r| keep(r))
            .max_by_key(|r| (r.event_ts, r.created_ts))
            .map(|r| (r.event_ts, r.a))
    };
    let mut want = std::collections::BTreeMap::new();
    for id in &ids {
        let online = greatest(&|r| r.user_id == *id && r.event_ts < cut);
        let offline = greatest(&|r| {
            r.user_id == *id && r.event_ts <= T && r.event_ts >= T - ttl && r.created_ts <= T
        })
        .map(|(_, a)| a);
        let cause = match (online, offline) {
            (None, Some(_)) => "online_null_offline_present",
            (Some((event, _)), Some(_)) if event < T - ttl => "outside_max_age_offline_value",
            (Some((event, _)), None) if event >= T - ttl => "online_present_offline_null",
            (Some((event, a)), Some(b)) if event >= T - ttl && a != b => "value_differs",
            _ => "match",
        };
        *want.entry(cause).or_insert(0u64) += 1;
    }
    let report = skew(&mut clients, None).await?;
    let a = feature(&report, "stats__a");
    let got = [
        ("match", a.matches),
        ("value_differs", a.value_differs),
        ("online_present_offline_null", a.online_present_offline_null),
        ("online_null_offline_present", a.online_null_offline_present),
        (
            "outside_max_age_offline_value",
            a.outside_max_age_offline_value,
        ),
    ];
    for (cause, n) in got {
        assert_eq!(n, want.get(cause).copied().unwrap_or(0), "{cause}: {a:?}");
    }
    assert!(a.mismatches > 10, "the cut must cause skew: {a:?}");
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_source_rewritten_at_another_float_width_is_value_skew_exactly() -> anyhow::Result<()> {
    use quiver_core::types::{ScalarType, ValueType};
    use quiver_core::value::Value;
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    // `b` (float64) with values a float32 cannot hold exactly, and some it can.
    let mut rows = generated();
    for (i, row) in rows.iter_mut().enumerate() {
        row.b = Some(i as f64 * 0.25 + if i % 3 == 0 { 0.0 } else { 0.1 });
    }
    setup_logged(&server, &mut clients, &rows).await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    server.clock.set(T);
    let response = clients
        .online
        .get_online_features(get_request(ids()))
        .await?
        .into_inner();
    // The source's producer now writes `b` through float32: same column type, other values.
    for row in &mut rows {
        row.b = row.b.map(|b| f64::from(b as f32));
    }
    write_parquet(&server.path("repo/data/stats.parquet"), &[batch(&rows)?])?;

    let b = response
        .features
        .iter()
        .find(|f| f.name == "b")
        .ok_or_else(|| anyhow::anyhow!("no feature b"))?;
    let column = b
        .values
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no values"))?;
    let served = quiver_proto::convert::column_to_values(
        column,
        ValueType::scalar(ScalarType::Float64),
        "b",
    )?;
    let changed = served
        .iter()
        .filter(|v| matches!(v, Value::Float64(x) if f64::from(*x as f32) != *x))
        .count() as u64;
    let report = skew(&mut clients, None).await?;
    let b = feature(&report, "stats__b");
    assert_eq!((b.value_differs, b.mismatches), (changed, changed), "{b:?}");
    assert!(changed > 10 && changed < served.len() as u64, "{changed}");
    for name in ["stats__a", "stats__s"] {
        assert_eq!(feature(&report, name).mismatches, 0, "{name}");
    }
    server.stop().await?;
    Ok(())
}
