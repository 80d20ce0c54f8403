//! Profiles and drift through the server: figures against a slow reference over the same rows,
//! known shifts found with the right status and none on the unshifted feature, thresholds from
//! the manifest, the export's reference profile, and the errors.

use quiver_integration_tests::{Clients, TestServer, apply, export_to_end};
use quiver_proto::v1;
use v1::feature_profile::Summary;

use super::fixture::{MANIFEST, TestRow, setup};

const T0: i64 = 1_800_000_000_000_000;
const SECOND: i64 = 1_000_000;
/// Window A is [T0, T0 + N s), window B the N seconds after it.
const N: i64 = 2_000;

/// A: a = i % 100, b = i % 100 (every 7th null), s alternates x, y. B: the same a; b shifted
/// by 50; s cycles x, y, z (a new category).
fn rows() -> Vec<TestRow> {
    let a = (0..N).map(|i| TestRow {
        user_id: i % 10,
        event_ts: T0 + i * SECOND,
        created_ts: T0 + i * SECOND,
        a: i % 100,
        b: (i % 7 != 0).then_some((i % 100) as f64),
        s: ["x", "y"][(i % 2) as usize].into(),
    });
    let b = (0..N).map(|i| TestRow {
        user_id: i % 10,
        event_ts: T0 + (N + i) * SECOND,
        created_ts: T0 + (N + i) * SECOND,
        a: i % 100,
        b: (i % 7 != 0).then_some((i % 100) as f64 + 50.0),
        s: ["x", "y", "z"][(i % 3) as usize].into(),
    });
    a.chain(b).collect()
}

fn window(start: i64, end: i64) -> Option<v1::ProfileSource> {
    Some(v1::ProfileSource {
        source: Some(v1::profile_source::Source::Window(v1::TimeWindow {
            start_micros: start,
            end_micros: end,
        })),
    })
}

fn stored(id: u64) -> Option<v1::ProfileSource> {
    Some(v1::ProfileSource {
        source: Some(v1::profile_source::Source::ProfileId(id)),
    })
}

async fn drift(
    clients: &mut Clients,
    reference: Option<v1::ProfileSource>,
    current: Option<v1::ProfileSource>,
) -> Result<v1::ComputeDriftResponse, tonic::Status> {
    let request = v1::ComputeDriftRequest {
        subject: Some(v1::compute_drift_request::Subject::Service("model".into())),
        reference,
        current,
    };
    Ok(clients
        .monitoring
        .compute_drift(request)
        .await?
        .into_inner())
}

/// A stored profile of `subject` over `[start, end)`, computed by the server.
async fn profile_of(
    clients: &mut Clients,
    subject: v1::compute_profile_request::Subject,
    start: i64,
    end: i64,
) -> anyhow::Result<v1::Profile> {
    let request = v1::ComputeProfileRequest {
        subject: Some(subject),
        start_micros: start,
        end_micros: end,
    };
    let response = clients.monitoring.compute_profile(request).await?;
    response
        .into_inner()
        .profile
        .ok_or_else(|| anyhow::anyhow!("no profile"))
}

/// (feature, metric) -> status name.
fn statuses(report: &v1::ComputeDriftResponse) -> Vec<(String, String, v1::DriftStatus)> {
    report
        .scores
        .iter()
        .map(|s| {
            let status = v1::DriftStatus::try_from(s.status).unwrap_or_default();
            (s.feature.clone(), s.metric.clone(), status)
        })
        .collect()
}

#[tokio::test]
async fn a_window_profile_matches_a_slow_reference() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let rows = rows();
    setup(&server, &mut clients, &rows, "0").await?;
    let stats = v1::compute_profile_request::Subject::View("stats".into());
    let profile = profile_of(&mut clients, stats, T0, T0 + N * SECOND).await?;
    assert_eq!(
        (profile.subject_kind.as_str(), profile.rows),
        ("view", N as u64)
    );
    let in_window: Vec<&TestRow> = rows
        .iter()
        .filter(|r| r.event_ts < T0 + N * SECOND)
        .collect();
    let values: Vec<f64> = in_window.iter().filter_map(|r| r.b).collect();
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    let b = profile.features.iter().find(|f| f.feature == "stats__b");
    let b = b.ok_or_else(|| anyhow::anyhow!("no stats__b"))?;
    assert_eq!((b.count, b.nulls), (N as u64, (N as u64).div_ceil(7)));
    let Some(Summary::Numeric(n)) = &b.summary else {
        anyhow::bail!("b is numeric: {b:?}")
    };
    assert_eq!((n.min, n.max), (Some(0.0), Some(99.0)));
    assert!((n.mean.unwrap_or(0.0) - mean).abs() < 1e-9);
    assert!((n.stddev.unwrap_or(0.0) - var.sqrt()).abs() < 1e-9);
    let s = profile.features.iter().find(|f| f.feature == "stats__s");
    let Some(Summary::Categorical(c)) = s.and_then(|s| s.summary.as_ref()) else {
        anyhow::bail!("s is categorical")
    };
    let top: Vec<(&str, u64)> = c.top.iter().map(|i| (i.value.as_str(), i.count)).collect();
    assert_eq!(top, vec![("x", N as u64 / 2), ("y", N as u64 / 2)]);
    assert_eq!(c.distinct, 2.0);
    // Stored: the same profile comes back by id.
    let again = clients
        .monitoring
        .get_profile(v1::GetProfileRequest { id: profile.id })
        .await?;
    assert_eq!(again.into_inner().profile, Some(profile));
    Ok(())
}

#[tokio::test]
async fn drift_finds_the_injected_shifts_and_follows_the_manifest() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let (a, b) = (T0, T0 + N * SECOND);
    let report = drift(&mut clients, window(a, b), window(b, b + N * SECOND)).await?;
    use v1::DriftStatus::{Alert, Ok as Fine};
    let got = statuses(&report);
    for (feature, metric, status) in [
        ("stats__a", "psi", Fine),
        ("stats__a", "ks", Fine),
        ("stats__a", "null_rate", Fine),
        ("stats__b", "psi", Alert),
        ("stats__b", "ks", Alert),
        ("stats__b", "null_rate", Fine),
        ("stats__s", "js", Alert),
        ("stats__s", "null_rate", Fine),
    ] {
        let found = got.iter().find(|(f, m, _)| f == feature && m == metric);
        assert_eq!(
            found.map(|g| g.2),
            Some(status),
            "{feature} {metric}: {got:?}"
        );
    }
    assert_eq!(report.status, Alert as i32);
    // The same window against itself (stored profile vs a fresh one): nothing drifts.
    let same = drift(
        &mut clients,
        stored(report.reference_profile_id),
        window(a, b),
    )
    .await?;
    assert!(statuses(&same).iter().all(|s| s.2 == Fine), "{same:?}");

    // Thresholds declared on the view apply without a new version.
    let with = MANIFEST.replace("TTL", "0").replace(
        "{name: s, type: string}]\n",
        "{name: s, type: string}]\nmonitoring: {drift: {psi: {warn: 100, alert: 200}}}\n",
    );
    std::fs::write(server.path("repo/features.yaml"), with)?;
    apply(&mut clients, &server.path("repo"), false).await?;
    let relaxed = drift(
        &mut clients,
        stored(report.reference_profile_id),
        stored(report.current_profile_id),
    )
    .await?;
    let psi = relaxed
        .scores
        .iter()
        .find(|s| s.feature == "stats__b" && s.metric == "psi");
    let psi = psi.ok_or_else(|| anyhow::anyhow!("no psi"))?;
    assert_eq!((psi.warn, psi.status), (100.0, Fine as i32), "{psi:?}");
    Ok(())
}

#[tokio::test]
async fn an_export_stores_its_reference_profile() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let labels = server.path("repo/labels.parquet");
    let label_rows = super::fixture::labels(10, T0 + N * SECOND - 1)?;
    quiver_integration_tests::write_parquet(&labels, &[label_rows])?;
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels.to_string_lossy().into_owned(),
        output_path: "train.parquet".into(),
        ..Default::default()
    };
    let done = export_to_end(&mut clients, request).await?;
    let id: u64 = done
        .metadata
        .get("quiver.profile_id")
        .map_or(Ok(0), |v| v.parse())?;
    let profile = clients
        .monitoring
        .get_profile(v1::GetProfileRequest { id })
        .await?;
    let profile = profile
        .into_inner()
        .profile
        .ok_or_else(|| anyhow::anyhow!("none"))?;
    assert_eq!((profile.origin.as_str(), profile.rows), ("export", 10));
    assert_eq!(
        (profile.subject_kind.as_str(), profile.subject_name.as_str()),
        ("service", "model")
    );
    // The last row before the label time of user u is row N - 10 + u: a = (N - 10 + u) % 100.
    let a = profile.features.iter().find(|f| f.feature == "stats__a");
    let Some(Summary::Numeric(n)) = a.and_then(|f| f.summary.as_ref()) else {
        anyhow::bail!("a is numeric")
    };
    assert_eq!((n.min, n.max), (Some(90.0), Some(99.0)));
    let listed = clients
        .monitoring
        .list_profiles(v1::ListProfilesRequest {
            name: "model".into(),
            limit: 0,
        })
        .await?
        .into_inner()
        .profiles;
    assert_eq!(listed.iter().map(|p| p.id).collect::<Vec<_>>(), vec![id]);
    assert!(listed[0].features.is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_requests_name_the_field() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let none = clients
        .monitoring
        .compute_profile(v1::ComputeProfileRequest::default())
        .await;
    let status = none.err().ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("subject"), "{}", status.message());
    let missing = clients
        .monitoring
        .get_profile(v1::GetProfileRequest { id: 999 })
        .await;
    assert_eq!(missing.err().map(|s| s.code()), Some(tonic::Code::NotFound));
    let empty = drift(&mut clients, window(T0, T0), window(T0, T0 + 1)).await;
    let status = empty.err().ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("reference"),
        "{}",
        status.message()
    );
    // A profile of the view is not a profile of the service.
    let stats = v1::compute_profile_request::Subject::View("stats".into());
    let id = profile_of(&mut clients, stats, T0, T0 + SECOND).await?.id;
    let other = drift(&mut clients, stored(id), window(T0, T0 + SECOND)).await;
    let status = other.err().ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("not of service `model`"),
        "{}",
        status.message()
    );
    Ok(())
}

/// One HTTP request's body, answered 200 (the alert webhook's receiver).
async fn receive_one(listener: tokio::net::TcpListener) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut socket, _) = listener.accept().await?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = socket.read(&mut buf).await?;
        anyhow::ensure!(n > 0, "connection closed early");
        data.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&data);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_string)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await?;
                return Ok(body.to_string());
            }
        }
    }
}

#[tokio::test]
async fn a_scheduled_check_exports_gauges_and_posts_the_alert() -> anyhow::Result<()> {
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", hook.local_addr()?);
    let received = tokio::spawn(receive_one(hook));
    let clock = quiver_integration_tests::ManualClock::new(T0 + 2 * N * SECOND);
    let server = TestServer::start_with(tempfile::tempdir()?, clock, |o| {
        o.monitoring_interval = std::time::Duration::from_millis(100);
        o.alert_webhook = Some(url);
    })
    .await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let scheduled = MANIFEST.replace("TTL", "0").replace(
        "features: [{view: stats}]\n",
        "features: [{view: stats}]\nmonitoring: {schedule: {every: 1h, window: 2000s}}\n",
    );
    std::fs::write(server.path("repo/features.yaml"), scheduled)?;
    apply(&mut clients, &server.path("repo"), false).await?;
    // The reference: a training export over window A.
    let labels = server.path("repo/labels.parquet");
    quiver_integration_tests::write_parquet(
        &labels,
        &[super::fixture::labels(10, T0 + N * SECOND - 1)?],
    )?;
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels.to_string_lossy().into_owned(),
        output_path: "train.parquet".into(),
        ..Default::default()
    };
    export_to_end(&mut clients, request).await?;
    let series =
        r#"quiver_drift_status{feature="stats__s",kind="service",metric="js",name="model"} 2"#;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (_, metrics) = server.http_get("/metrics").await?;
        if metrics.contains(series) {
            assert!(
                metrics.contains(
                    r#"quiver_drift_checks_total{kind="service",name="model",outcome="ok"} 1"#
                ),
                "{metrics}"
            );
            assert!(
                metrics.contains(
                    "quiver_drift_check_timestamp_seconds{kind=\"service\",name=\"model\"}"
                ),
                "{metrics}"
            );
            break;
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no drift gauge: {metrics}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let body = tokio::time::timeout(std::time::Duration::from_secs(30), received).await???;
    let alert: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        (alert["status"].as_str(), alert["name"].as_str()),
        (Some("ALERT"), Some("model"))
    );
    // The reference is 10 label rows (a and b in 90..99, s in x, y): window B's a, b and s
    // all differ from it; its null rate (1 in 10 against 1 in 7) stays under the WARN bound.
    let alerted: Vec<(&str, &str)> = alert["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| Some((x["feature"].as_str()?, x["metric"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    assert!(
        alerted.contains(&("stats__s", "js")) && alerted.contains(&("stats__b", "psi")),
        "{alert}"
    );
    assert!(
        alerted.iter().all(|(_, metric)| *metric != "null_rate"),
        "{alert}"
    );
    Ok(())
}

#[tokio::test]
async fn pushes_are_checked_against_the_views_expectations() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows()[..10], "0").await?;
    let declare = |policy: &str| {
        MANIFEST.replace("TTL", "0").replace(
            "{name: s, type: string}]\n",
            &format!(
                "{{name: s, type: string}}]\nmonitoring: {{on_violation: {policy}, expectations: {{b: {{max: 100}}, s: {{allowed: [x, y]}}}}}}\n"
            ),
        )
    };
    std::fs::write(server.path("repo/features.yaml"), declare("reject"))?;
    apply(&mut clients, &server.path("repo"), false).await?;
    let mut pushed: Vec<TestRow> = rows()[..3].to_vec();
    pushed[1].b = Some(150.0);
    let refused = clients
        .online
        .push(super::online::push_request(&pushed))
        .await;
    let status = refused.err().ok_or_else(|| anyhow::anyhow!("accepted"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("columns.b[1]") && status.message().contains("`max`"),
        "{}",
        status.message()
    );
    // Under `warn` the same push is written and its violation counted.
    std::fs::write(server.path("repo/features.yaml"), declare("warn"))?;
    apply(&mut clients, &server.path("repo"), false).await?;
    pushed[2].s = "q".into();
    clients
        .online
        .push(super::online::push_request(&pushed))
        .await?;
    let (_, metrics) = server.http_get("/metrics").await?;
    for line in [
        r#"quiver_validation_violations_total{feature="b",policy="reject",rule="max",view="stats"} 1"#,
        r#"quiver_validation_violations_total{feature="b",policy="warn",rule="max",view="stats"} 1"#,
        r#"quiver_validation_violations_total{feature="s",policy="warn",rule="allowed",view="stats"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    Ok(())
}

/// The expectations of the next test, and an independent count of what they catch in `rows`:
/// (feature, rule) -> values that break it (each value once, for its first broken rule).
const EXPECTATIONS: &str = "monitoring: {expectations: {a: {min: 1}, b: {not_null: true, max: 120, max_null_fraction: 0.1}, s: {allowed: [x, y]}}}\n";

fn expected_violations(rows: &[TestRow]) -> Vec<(String, String, u64)> {
    let count = |pred: &dyn Fn(&TestRow) -> bool| rows.iter().filter(|r| pred(r)).count() as u64;
    let nulls = count(&|r| r.b.is_none());
    vec![
        ("a".into(), "min".into(), count(&|r| r.a < 1)),
        (
            "b".into(),
            "max".into(),
            count(&|r| r.b.is_some_and(|b| b > 120.0)),
        ),
        (
            "b".into(),
            "max_null_fraction".into(),
            u64::from(nulls as f64 / rows.len() as f64 > 0.1),
        ),
        ("b".into(), "not_null".into(), nulls),
        (
            "s".into(),
            "allowed".into(),
            count(&|r| r.s != "x" && r.s != "y"),
        ),
    ]
}

#[tokio::test]
async fn materialization_and_profiles_count_expectation_violations() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let rows = rows();
    setup(&server, &mut clients, &rows, "0").await?;
    let manifest = MANIFEST.replace("TTL", "0").replace(
        "{name: s, type: string}]\n",
        &format!("{{name: s, type: string}}]\n{EXPECTATIONS}"),
    );
    std::fs::write(server.path("repo/features.yaml"), manifest)?;
    apply(&mut clients, &server.path("repo"), false).await?;
    let expected = expected_violations(&rows);
    assert!(
        expected.iter().all(|(_, _, n)| *n > 0),
        "every rule is broken somewhere: {expected:?}"
    );

    // Before any run, each declared rule's series exists at 0 (so `increase()` sees the
    // first run's violations).
    let metrics = server.http_get("/metrics").await?.1;
    let line = r#"quiver_materialization_violations_total{feature="a",rule="min",view="stats"} 0"#;
    assert!(metrics.contains(line), "{line} missing");

    // A run over every row: its report and its stored profile count what was scanned.
    let job = super::fixture::materialize(&mut clients, T0, T0 + 2 * N * SECOND).await?;
    let view = &job.views[0];
    assert_eq!(view.rows_scanned, 2 * N as u64);
    let mut got: Vec<(String, String, u64)> = view
        .violations
        .iter()
        .map(|v| (v.feature.clone(), v.rule.clone(), v.count))
        .collect();
    got.sort();
    assert_eq!(got, expected);
    assert_ne!(view.profile_id, 0);
    let profile = clients
        .monitoring
        .get_profile(v1::GetProfileRequest {
            id: view.profile_id,
        })
        .await?
        .into_inner()
        .profile
        .ok_or_else(|| anyhow::anyhow!("no profile"))?;
    assert_eq!(
        (profile.origin.as_str(), profile.rows, profile.has_window),
        ("materialization", 2 * N as u64, true)
    );
    assert_eq!(
        (profile.window_start_micros, profile.window_end_micros),
        (T0, T0 + 2 * N * SECOND)
    );
    assert_eq!(profile.origin_detail, job.id);
    let b = profile.features.iter().find(|f| f.feature == "stats__b");
    let b = b.ok_or_else(|| anyhow::anyhow!("no stats__b"))?;
    assert_eq!(b.nulls, expected[3].2);
    assert_eq!(b.violations.get("max"), Some(&expected[1].2));
    // A feature without expectations has no violation counts.
    let metrics = server.http_get("/metrics").await?.1;
    for (feature, rule, n) in &expected {
        let line = format!(
            r#"quiver_materialization_violations_total{{feature="{feature}",rule="{rule}",view="stats"}} {n}"#
        );
        assert!(metrics.contains(&line), "{line} missing");
    }

    // An on-demand profile of window A counts A's rows only.
    let model = v1::compute_profile_request::Subject::Service("model".into());
    let profile = profile_of(&mut clients, model, T0, T0 + N * SECOND).await?;
    let in_a: Vec<TestRow> = rows
        .iter()
        .filter(|r| r.event_ts < T0 + N * SECOND)
        .cloned()
        .collect();
    let mut got: Vec<(String, String, u64)> = profile
        .features
        .iter()
        .flat_map(|f| {
            let feature = f.feature.trim_start_matches("stats__").to_string();
            f.violations
                .iter()
                .map(move |(rule, n)| (feature.clone(), rule.clone(), *n))
        })
        .collect();
    got.sort();
    assert_eq!(got, expected_violations(&in_a));
    Ok(())
}

#[tokio::test]
async fn profiles_past_the_retention_go_except_the_drift_references() -> anyhow::Result<()> {
    let clock = quiver_integration_tests::ManualClock::new(T0);
    let server = TestServer::start_in(tempfile::tempdir()?, std::sync::Arc::clone(&clock)).await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let labels = server.path("repo/labels.parquet");
    let label_rows = super::fixture::labels(10, T0 + N * SECOND - 1)?;
    quiver_integration_tests::write_parquet(&labels, &[label_rows])?;
    // Two exports of `model` (profiles 1 and 2), then window profiles of the view and the
    // service (3 and 4).
    for output in ["one.parquet", "two.parquet"] {
        let request = v1::ExportRequest {
            selector: Some(v1::export_request::Selector::FeatureService("model".into())),
            labels_path: labels.to_string_lossy().into_owned(),
            output_path: output.into(),
            ..Default::default()
        };
        export_to_end(&mut clients, request).await?;
    }
    use v1::compute_profile_request::Subject as S;
    for subject in [S::View("stats".into()), S::Service("model".into())] {
        profile_of(&mut clients, subject, T0, T0 + N * SECOND).await?;
    }
    let ids = |profiles: Vec<v1::Profile>| profiles.iter().map(|p| p.id).collect::<Vec<_>>();
    let list = v1::ListProfilesRequest {
        name: String::new(),
        limit: 0,
    };
    let listed = clients.monitoring.list_profiles(list.clone()).await?;
    assert_eq!(ids(listed.into_inner().profiles), vec![4, 3, 2, 1]);

    // 91 days later (past the default 90), the restarted server prunes at start: the newest
    // export profile of `model` and the newest profile of all stay.
    let (data, clock) = server.stop().await?;
    clock.set(T0 + 91 * 86_400 * SECOND);
    let server = TestServer::start_in(data, clock).await?;
    let mut clients = server.clients().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let listed = clients.monitoring.list_profiles(list.clone()).await?;
        let left = ids(listed.into_inner().profiles);
        if left == vec![4, 2] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "left: {left:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // A new profile gets a new id, never a removed one.
    let profile = profile_of(&mut clients, S::View("stats".into()), T0, T0 + N * SECOND).await?;
    assert_eq!(profile.id, 5);
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn runs_are_not_profiled_when_run_profiles_is_off() -> anyhow::Result<()> {
    let clock = quiver_integration_tests::ManualClock::new(T0);
    let server = TestServer::start_with(tempfile::tempdir()?, clock, |options| {
        options.run_profiles = false;
    })
    .await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &rows(), "0").await?;
    let job = super::fixture::materialize(&mut clients, T0, T0 + N * SECOND).await?;
    let view = &job.views[0];
    assert_eq!((view.rows_scanned, view.profile_id), (N as u64, 0));
    assert!(view.violations.is_empty());
    let list = v1::ListProfilesRequest {
        name: String::new(),
        limit: 0,
    };
    let listed = clients.monitoring.list_profiles(list).await?.into_inner();
    assert!(listed.profiles.is_empty(), "{:?}", listed.profiles);
    server.stop().await?;
    Ok(())
}
