//! Operating the binary: a real Prometheus (Debian's `prometheus` package, installed by
//! `scripts/setup`) scraping a live server, `promtool check metrics` on the exposition, the
//! exposition against `deploy/metrics.txt` (what the dashboard and alerts may use), and the
//! shutdown signals.

mod support;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{ServerProcess, http_get, ok, project, roots_beside};

/// The path of a tool the Debian `prometheus` package installs.
fn prometheus_tool(name: &str) -> &'static str {
    let path = match name {
        "promtool" => "/usr/bin/promtool",
        _ => "/usr/bin/prometheus",
    };
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run scripts/setup (apt package `prometheus`)"
    );
    path
}

fn start_server(dir: &Path, extra: &[&str]) -> ServerProcess {
    let data = dir.join("data");
    let mut args: Vec<String> = roots_beside(&data);
    args.extend(["--metrics-addr", "127.0.0.1:0"].map(String::from));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start_with(&data, &args)
}

/// Metric families (`# TYPE` lines) of an exposition.
fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Prometheus on a free loopback port scraping `target` every second.
fn start_prometheus(dir: &Path, target: &str) -> (Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: quiver\n    static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .expect("config");
    let child = Command::new(prometheus_tool("prometheus"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus starts");
    (child, format!("127.0.0.1:{port}"))
}

/// Polls Prometheus's query API until `query` has a sample satisfying `accept` (60 s at most).
fn query_until(prometheus: &str, query: &str, accept: impl Fn(f64) -> bool) -> f64 {
    let encoded: String = query
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(stream) = std::net::TcpStream::connect(prometheus) {
            drop(stream);
            let (_, body) = http_get(prometheus, &format!("/api/v1/query?query={encoded}"));
            let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            let value = json["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok());
            if let Some(value) = value.filter(|v| accept(*v)) {
                return value;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("Prometheus never answered `{query}` acceptably; last answer: {last}");
}

#[test]
fn prometheus_scrapes_freshness_and_request_metrics_from_a_live_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let server = start_server(dir.path(), &["--monitoring-interval", "1"]);
    let metrics_addr = server.metrics_addr.clone().expect("metrics address");
    // The probes answer while storage opens ("starting"), then "ready".
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match http_get(&metrics_addr, "/readyz") {
            (200, body) if body == "ready\n" => break,
            (503, body) if body == "starting\n" => {}
            other => panic!("unexpected /readyz answer {other:?}"),
        }
        assert!(Instant::now() < deadline, "never ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(http_get(&metrics_addr, "/healthz"), (200, "ok\n".into()));
    ok(server.quiver(&["apply", "-f", features.to_str().expect("path")]));
    let now = chrono::Utc::now().to_rfc3339();
    ok(server.quiver(&["materialize-incremental", "--end", &now]));
    for _ in 0..3 {
        ok(server.quiver(&[
            "get",
            "--service",
            "driver_model",
            "--entity",
            "driver_id=1001,9999",
        ]));
    }
    let labels = dir.path().join("data/labels.parquet");
    ok(server.quiver(&[
        "export",
        "--server-side",
        "--service",
        "driver_model",
        "--labels",
        labels.to_str().expect("path"),
        "--out",
        "train.parquet",
    ]));

    // The gets were logged (the demo service logs every key): read them back and check them
    // against the training join.
    let (start, end) = (
        (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339(),
        (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339(),
    );
    let served = dir.path().join("served.parquet");
    let wrote = ok(server.quiver(&[
        "logs",
        "--service",
        "driver_model",
        "--start",
        &start,
        "--end",
        &end,
        "--output",
        served.to_str().expect("path"),
    ]));
    assert!(wrote.contains("wrote 6 logged rows"), "{wrote}");
    let file = std::fs::File::open(&served).expect("served.parquet");
    let rows = parquet::file::reader::FileReader::metadata(
        &parquet::file::reader::SerializedFileReader::new(file).expect("parquet"),
    )
    .file_metadata()
    .num_rows();
    assert_eq!(rows, 6);
    let skew = ok(server.quiver(&["skew", "--service", "driver_model", "--format", "json"]));
    let skew: serde_json::Value = serde_json::from_str(&skew).expect("skew JSON");
    let features = skew.as_array().expect("one object per feature");
    assert_eq!(features.len(), 4, "{skew}");
    for feature in features {
        assert_eq!(feature["compared"], 6, "{feature}");
        assert_eq!(feature["mismatches"], 0, "{feature}");
    }
    // A training set from the log: both drivers, labelled now, get the last row served.
    let log_labels = dir.path().join("log_labels.parquet");
    write_labels(
        &log_labels,
        &[1001, 9999, 4242],
        chrono::Utc::now().timestamp_micros(),
    );
    let from_log = dir.path().join("from_log.parquet");
    ok(server.quiver(&[
        "export",
        "--service",
        "driver_model",
        "--labels",
        log_labels.to_str().expect("path"),
        "--from-served-log",
        "--join-on",
        "keys",
        "--max-age",
        "1h",
        "--out",
        from_log.to_str().expect("path"),
    ]));
    let served_at = read_column(&from_log, "served_at");
    assert_eq!(served_at.len(), 3);
    assert_eq!(served_at.null_count(), 1, "driver 4242 was never served");

    // The exposition: valid for promtool, and exactly the families deploy/metrics.txt lists
    // (the scheduled drift check's gauges once its next look finds the export's profile, and
    // the scheduled skew check's).
    let deadline = Instant::now() + Duration::from_secs(30);
    let (status, text) = loop {
        let (status, text) = http_get(&metrics_addr, "/metrics");
        let checked = text.contains("quiver_drift_status{") && text.contains("quiver_skew_rate{");
        if checked || Instant::now() > deadline {
            break (status, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status, 200);
    let mut promtool = Command::new(prometheus_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    promtool
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write metrics");
    let checked = promtool.wait_with_output().expect("promtool ends");
    assert!(
        checked.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let listed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/metrics.txt"),
    )
    .expect("deploy/metrics.txt");
    let listed: std::collections::BTreeSet<String> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let exported = families(&text);
    let missing: Vec<_> = listed.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "listed in deploy/metrics.txt, not exported: {missing:?}"
    );
    let unlisted: Vec<_> = exported
        .iter()
        .filter(|f| f.starts_with("quiver_") && !listed.contains(*f))
        .collect();
    assert!(
        unlisted.is_empty(),
        "exported, not in deploy/metrics.txt: {unlisted:?}"
    );

    // A real Prometheus scrapes it: request counts and freshness arrive through its API.
    let (mut prometheus, prometheus_addr) = start_prometheus(dir.path(), &metrics_addr);
    let reads = query_until(
        &prometheus_addr,
        r#"sum(quiver_rpc_requests_total{method="GetOnlineFeatures",code="OK"})"#,
        |v| v >= 3.0,
    );
    assert_eq!(reads, 3.0);
    let age = query_until(
        &prometheus_addr,
        r#"quiver_view_newest_event_age_seconds{view="driver_stats"}"#,
        |v| v > 0.0,
    );
    // The demo's newest event is within its last hour of data, ending at the current hour.
    assert!(age < 2.0 * 3600.0, "{age}");
    query_until(
        &prometheus_addr,
        r#"quiver_view_watermark_age_seconds{view="driver_stats"}"#,
        |v| v >= 0.0,
    );
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    server.stop();
}

/// Sends SIGTERM to `child`.
fn terminate(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn a_second_signal_exits_at_once_while_the_drain_waits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = start_server(dir.path(), &["--shutdown-grace", "600"]);
    let metrics_addr = server.metrics_addr.clone().expect("metrics address");
    // A call that never ends on its own keeps the drain waiting: a health watch.
    let url = server.url.clone();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _watch = runtime.block_on(async move {
        let channel = tonic::transport::Channel::from_shared(url)
            .expect("url")
            .connect()
            .await
            .expect("connect");
        let mut stream = tonic_health::pb::health_client::HealthClient::new(channel)
            .watch(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("watch")
            .into_inner();
        let first = stream.message().await.expect("status").map(|r| r.status);
        assert_eq!(first, Some(tonic_health::ServingStatus::Serving as i32));
        stream
    });
    terminate(&server.child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(&metrics_addr, "/readyz") != (503, "draining\n".into()) {
        assert!(Instant::now() < deadline, "never reported draining");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        server.child.try_wait().expect("status").is_none(),
        "still draining"
    );
    terminate(&server.child);
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child.try_wait().expect("status") {
            break status;
        }
        assert!(Instant::now() < deadline, "the second signal did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
}

#[test]
fn backup_and_restore_through_the_binary_answer_the_same_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let server = start_server(dir.path(), &[]);
    ok(server.quiver(&["apply", "-f", features.to_str().expect("path")]));
    let now = chrono::Utc::now().to_rfc3339();
    ok(server.quiver(&["materialize-incremental", "--end", &now]));
    let get = [
        "get",
        "--service",
        "driver_model",
        "--entity",
        "driver_id=1001,1002,9999",
        "--format",
        "json",
    ];
    let before = ok(server.quiver(&get));
    let backup = dir.path().join("backup");
    let backup_arg = backup.to_str().expect("path");
    let done = ok(server.quiver(&["backup", "--out", backup_arg]));
    assert!(
        done.contains("Backed up") && done.contains("registry version 1"),
        "{done}"
    );
    let again = server.quiver(&["backup", "--out", backup_arg]);
    assert!(!again.status.success() && support::text(&again).contains("not empty"));
    server.stop();

    let restored = dir.path().join("restored/data");
    let restore = |into: &Path| {
        Command::new(support::QUIVER)
            .args(["restore", "--from", backup_arg, "--data-dir"])
            .arg(into)
            .output()
            .expect("quiver runs")
    };
    let out = ok(restore(&restored));
    assert!(out.contains("registry version 1"), "{out}");
    let mut args = roots_beside(&restored);
    args.extend(["--metrics-addr", "127.0.0.1:0"].map(String::from));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::start_with(&restored, &args);
    assert_eq!(
        ok(server.quiver(&get)),
        before,
        "the restored server answers as the original"
    );
    server.stop();

    // A damaged backup is refused, naming the file.
    let current = backup.join("rocksdb/CURRENT");
    std::fs::write(&current, b"MANIFEST-999999\n").expect("damage");
    let refused = restore(&dir.path().join("other"));
    assert!(!refused.status.success());
    assert!(
        support::text(&refused).contains("CURRENT"),
        "{}",
        support::text(&refused)
    );
}

/// A label table of `drivers`, each at `at` (micros).
fn write_labels(path: &Path, drivers: &[i64], at: i64) {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampMicrosecondArray};
    use std::sync::Arc;
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("driver_id", Arc::new(Int64Array::from(drivers.to_vec()))),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from(vec![at; drivers.len()]).with_timezone("UTC")),
        ),
    ];
    let batch = RecordBatch::try_from_iter(columns).expect("labels");
    let file = std::fs::File::create(path).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
}

/// Column `name` of the Parquet file at `path`, all batches concatenated.
fn read_column(path: &Path, name: &str) -> arrow::array::ArrayRef {
    let file = std::fs::File::open(path).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("reader");
    let pieces: Vec<arrow::array::ArrayRef> = reader
        .map(|b| {
            b.expect("batch")
                .column_by_name(name)
                .expect("column")
                .clone()
        })
        .collect();
    let refs: Vec<&dyn arrow::array::Array> = pieces.iter().map(|c| c.as_ref()).collect();
    arrow::compute::concat(&refs).expect("concat")
}
