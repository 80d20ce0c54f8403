//! End-to-end tests of the `quiver` binary: a real server process and real client commands.

mod support;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use support::{QUIVER, ServerProcess, ok, project, roots_beside, text};

#[test]
fn plan_apply_list_describe_and_read_back_after_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let features = features.to_str().expect("utf-8 path");
    let server = ServerProcess::start(&dir.path().join("data"));

    let plan = ok(server.quiver(&["plan", "-f", features]));
    assert!(plan.contains("+ FeatureView/driver_stats v1"), "{plan}");
    assert!(
        plan.contains("4 to create, 0 to update, 0 to delete."),
        "{plan}"
    );
    let apply = ok(server.quiver(&["apply", "-f", features]));
    assert!(apply.contains("Applied: registry version 1."), "{apply}");
    let again = ok(server.quiver(&["plan", "-f", features]));
    assert!(again.contains("No changes"), "{again}");

    let list = ok(server.quiver(&["list", "views"]));
    assert!(
        list.contains("driver_stats") && list.contains("v1"),
        "{list}"
    );
    let describe = ok(server.quiver(&["describe", "view", "driver_stats@1"]));
    assert!(
        describe.contains("\"join_keys\"") && describe.contains("conv_rate"),
        "{describe}"
    );

    // A breaking change is refused without --force and shown in the plan.
    let manifest = Path::new(features).join("driver.yaml");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        original.replace(
            "{name: conv_rate, type: float32}",
            "{name: conv_rate, type: float64}",
        ),
    )
    .expect("write");
    let refused = server.quiver(&["apply", "-f", features]);
    assert!(!refused.status.success());
    std::fs::write(&manifest, original.replace("ttl: 2h", "ttl: 3h")).expect("write");
    let update = ok(server.quiver(&["apply", "-f", features]));
    assert!(update.contains("~ ttl: 2h -> 3h"), "{update}");

    server.stop();
    let server = ServerProcess::start(&dir.path().join("data"));
    let describe = ok(server.quiver(&["describe", "view", "driver_stats"]));
    assert!(
        describe.contains("driver_stats@2 (latest v2)"),
        "{describe}"
    );
    assert!(describe.contains("10800000000"), "{describe}");
    server.stop();
}

#[test]
fn a_bad_manifest_prints_one_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let server = ServerProcess::start(&dir.path().join("data"));
    ok(server.quiver(&["apply", "-f", features.to_str().expect("path")]));
    let manifest = features.join("driver.yaml");
    let original = std::fs::read_to_string(&manifest).expect("manifest");
    std::fs::write(
        &manifest,
        original.replace("source: driver_stats_source", "source: missing_source"),
    )
    .expect("write");
    let output = server.quiver(&["apply", "-f", features.to_str().expect("path")]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("error: "), "{stderr}");
    assert_eq!(stderr.matches("error: ").count(), 1, "{stderr}");
    for needle in [
        "driver.yaml",
        "FeatureView/driver_stats",
        "field `source`",
        "missing_source",
    ] {
        assert!(stderr.contains(needle), "`{needle}` missing: {stderr}");
    }
    let list = ok(server.quiver(&["list"]));
    assert!(list.contains("registry version 1)"), "{list}");
    server.stop();
}

#[test]
fn concurrent_cli_applies_all_land_or_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let server = ServerProcess::start(&dir.path().join("data"));
    ok(server.quiver(&["apply", "-f", features.to_str().expect("path")]));
    let original = std::fs::read_to_string(features.join("driver.yaml")).expect("manifest");
    let mut children = Vec::new();
    for i in 0..4 {
        let copy = dir.path().join(format!("copy{i}"));
        std::fs::create_dir_all(&copy).expect("dir");
        let text = original
            .replace("ttl: 2h", &format!("ttl: {}h", 3 + i))
            .replace("../data/", &format!("{}/data/", dir.path().display()));
        std::fs::write(copy.join("driver.yaml"), text).expect("write");
        children.push(
            Command::new(QUIVER)
                .args(["apply", "-f"])
                .arg(&copy)
                .args(["--server", &server.url])
                .output(),
        );
    }
    let outputs: Vec<Output> = children.into_iter().map(|c| c.expect("runs")).collect();
    for output in &outputs {
        if !output.status.success() {
            let message = text(output);
            assert!(
                message.contains("FailedPrecondition") || message.contains("plan again"),
                "{message}"
            );
        }
    }
    let successes = outputs.iter().filter(|o| o.status.success()).count();
    let list = ok(server.quiver(&["list"]));
    assert!(
        list.contains(&format!("registry version {})", 1 + successes)),
        "{successes} successes but: {list}"
    );
    server.stop();
}

#[test]
fn materialize_get_json_and_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let server = ServerProcess::start(&dir.path().join("data"));
    ok(server.quiver(&["apply", "-f", features.to_str().expect("path")]));
    let end = chrono::Utc::now().to_rfc3339();
    let materialized = ok(server.quiver(&[
        "materialize",
        "--start",
        "2020-01-01T00:00:00Z",
        "--end",
        &end,
    ]));
    assert!(
        materialized.contains("Materialized 1 views: 56 source rows, 10 keys written"),
        "{materialized}"
    );
    let json = ok(server.quiver(&[
        "get",
        "--service",
        "driver_model",
        "--entity",
        "driver_id=1001,9999",
        "--format",
        "json",
    ]));
    let rows: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["driver_id"], 1001);
    assert_eq!(rows[0]["statuses"]["conv_rate"], "PRESENT");
    assert!(rows[0]["conv_rate"].is_number());
    assert_eq!(rows[1]["statuses"]["vehicle_type"], "NOT_FOUND");
    assert!(rows[1]["vehicle_type"].is_null());
    let bad = server.quiver(&[
        "get",
        "--service",
        "driver_model",
        "--entity",
        "driver_id=abc",
    ]);
    assert!(
        !bad.status.success() && text(&bad).contains("driver_id"),
        "{}",
        text(&bad)
    );

    let out = dir.path().join("data/exports/train.parquet");
    let labels = dir.path().join("data/labels.parquet");
    let export = ok(server.quiver(&[
        "export",
        "--server-side",
        "--service",
        "driver_model",
        "--labels",
        labels.to_str().expect("p"),
        "--out",
        "train.parquet",
    ]));
    assert!(export.contains("Exported 50 rows"), "{export}");
    assert!(export.contains("driver_stats: "), "{export}");
    let flight_out = dir.path().join("flight.parquet");
    let flight = ok(server.quiver(&[
        "export",
        "--flight",
        "--service",
        "driver_model",
        "--labels",
        labels.to_str().expect("p"),
        "--out",
        flight_out.to_str().expect("p"),
    ]));
    assert!(
        flight.contains("Exported 50 rows over Arrow Flight"),
        "{flight}"
    );
    // The Flight export's file carries the same `quiver.*` metadata as the server's.
    let flight_metadata = quiver_metadata(&flight_out);
    assert_eq!(
        flight_metadata
            .get("quiver.feature_service")
            .map(String::as_str),
        Some("driver_model"),
        "{flight_metadata:?}"
    );
    assert!(
        flight_metadata
            .get("quiver.fingerprint")
            .is_some_and(|f| !f.is_empty()),
        "{flight_metadata:?}"
    );
    assert_eq!(
        flight_metadata.get("quiver.rows").map(String::as_str),
        Some("50")
    );
    // Alike but for the labels: the server-side export names its path, the default export
    // the upload.
    let mut server_metadata = quiver_metadata(&out);
    let mut flight_metadata = flight_metadata;
    assert!(
        flight_metadata
            .remove("quiver.labels")
            .is_some_and(|l| l.starts_with("upload:cli-")),
        "{flight_metadata:?}"
    );
    assert!(server_metadata.remove("quiver.labels").is_some());
    // Each export has its own reference profile.
    let flight_profile = flight_metadata.remove("quiver.profile_id");
    let server_profile = server_metadata.remove("quiver.profile_id");
    assert!(
        flight_profile.is_some() && server_profile.is_some() && flight_profile != server_profile
    );
    assert_eq!(flight_metadata, server_metadata);
    monitoring_commands(&server, &flight_out, &end);
    let temp_files: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(temp_files.is_empty(), "{temp_files:?}");
    server.stop();
}

/// `quiver profile` and `quiver drift` against the demo data and a training export.
fn monitoring_commands(server: &ServerProcess, export: &std::path::Path, end: &str) {
    let window = ["--start", "2020-01-01T00:00:00Z", "--end", end];
    let mut args = vec!["profile", "--service", "driver_model", "--format", "json"];
    args.extend(window);
    let json: serde_json::Value = serde_json::from_str(&ok(server.quiver(&args))).expect("json");
    let features = json.as_array().expect("one object per feature");
    let conv = features
        .iter()
        .find(|f| f["feature"] == "driver_stats__conv_rate")
        .expect("conv_rate profiled");
    for field in ["count", "nulls", "min", "max", "mean", "stddev"] {
        assert!(conv[field].is_number(), "{field}: {conv}");
    }
    let id = conv["profile_id"].as_u64().expect("id").to_string();
    let shown = ok(server.quiver(&["profile", "show", &id]));
    assert!(
        shown.contains(&format!("profile {id} of service driver_model")),
        "{shown}"
    );
    assert!(shown.contains("driver_stats__conv_rate"), "{shown}");
    let reference = format!("export:{}", export.display());
    let current = format!("window:2020-01-01T00:00:00Z..{end}");
    let drift = ok(server.quiver(&[
        "drift",
        "--service",
        "driver_model",
        "--reference",
        &reference,
        "--current",
        &current,
        "--format",
        "json",
    ]));
    let rows: serde_json::Value = serde_json::from_str(&drift).expect("json");
    let rows = rows.as_array().expect("one object per feature and metric");
    assert!(!rows.is_empty());
    for row in rows {
        for field in ["feature", "metric", "score", "threshold", "status"] {
            assert!(!row[field].is_null() || field == "score", "{field}: {row}");
        }
    }
    let bad = server.quiver(&[
        "drift",
        "--service",
        "driver_model",
        "--reference",
        "x",
        "--current",
        &current,
    ]);
    assert!(
        !bad.status.success() && text(&bad).contains("export:PATH, profile:ID or window:T1..T2"),
        "{}",
        text(&bad)
    );
}

/// The `quiver.*` key-value metadata in a Parquet file's footer.
fn quiver_metadata(path: &Path) -> std::collections::BTreeMap<String, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).expect("open parquet");
    let reader = SerializedFileReader::new(file).expect("parquet footer");
    reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .filter(|kv| kv.key.starts_with("quiver."))
        .map(|kv| (kv.key.clone(), kv.value.clone().unwrap_or_default()))
        .collect()
}

#[test]
fn acknowledged_pushes_survive_kill_9() {
    use quiver_proto::v1;
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let data = dir.path().join("data");
    let server = ServerProcess::start(&data);
    ok(server.quiver(&["apply", "-f", features.to_str().expect("path")]));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let url = server.url.clone();
    // Push in the background; kill -9 the server mid-load; every acknowledged row must be there.
    let acknowledged = runtime.block_on(async move {
        let mut client = v1::online_service_client::OnlineServiceClient::connect(url)
            .await
            .expect("connect");
        let (tx, rx) = std::sync::mpsc::channel::<i64>();
        let pusher = tokio::spawn(async move {
            for i in 0..2_000i64 {
                let result = client.push(push_one(5_000 + i, i)).await;
                if result.is_err() {
                    break;
                }
                let _ = tx.send(5_000 + i);
            }
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        server.kill9();
        let _ = pusher.await;
        rx.try_iter().collect::<Vec<i64>>()
    });
    assert!(
        !acknowledged.is_empty(),
        "no push was acknowledged before the kill"
    );
    let server = ServerProcess::start(&data);
    let ids = acknowledged
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let json = ok(server.quiver(&[
        "get",
        "--features",
        "driver_stats:avg_daily_trips",
        "--entity",
        &format!("driver_id={ids}"),
        "--format",
        "json",
    ]));
    let missing: Vec<&str> = json
        .lines()
        .filter(|l| !l.contains("\"PRESENT\""))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged rows lost: {:?}",
        missing.len(),
        acknowledged.len(),
        missing.first()
    );
    server.stop();
}

fn push_one(driver_id: i64, value: i64) -> quiver_proto::v1::PushRequest {
    use quiver_core::types::{ScalarType, ValueType};
    use quiver_core::value::Value;
    use quiver_proto::convert::values_to_column;
    use quiver_proto::v1;
    let now = chrono::Utc::now().timestamp_micros();
    let column = |name: &str, values: Vec<Value>, t: ValueType| v1::NamedColumn {
        name: name.into(),
        column: Some(values_to_column(&values, t)),
    };
    let scalar = ValueType::scalar;
    v1::PushRequest {
        target: Some(v1::push_request::Target::FeatureView("driver_stats".into())),
        columns: vec![
            column(
                "driver_id",
                vec![Value::Int64(driver_id)],
                scalar(ScalarType::Int64),
            ),
            column(
                "event_timestamp",
                vec![Value::Timestamp(now)],
                scalar(ScalarType::Timestamp),
            ),
            column(
                "conv_rate",
                vec![Value::Float32(0.5)],
                scalar(ScalarType::Float32),
            ),
            column("acc_rate", vec![Value::Null], scalar(ScalarType::Float32)),
            column(
                "avg_daily_trips",
                vec![Value::Int64(value)],
                scalar(ScalarType::Int64),
            ),
            column(
                "vehicle_type",
                vec![Value::String("van".into())],
                scalar(ScalarType::String),
            ),
            column(
                "embedding",
                vec![Value::List(vec![Value::Float32(1.0)])],
                ValueType {
                    scalar: ScalarType::Float32,
                    list: true,
                },
            ),
        ],
        mode: v1::PushMode::Online as i32,
    }
}

#[test]
fn tokens_roles_and_the_loopback_default_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth_file = dir.path().join("tokens.yaml");
    let auth = auth_file.to_str().expect("utf-8 path");
    let create = |name: &str, role: &str| {
        let stdout = ok(Command::new(QUIVER)
            .args([
                "token",
                "create",
                "--name",
                name,
                "--role",
                role,
                "--auth-file",
                auth,
            ])
            .output()
            .expect("token create runs"));
        let token = stdout.lines().last().expect("a last line").to_string();
        assert!(
            token.starts_with("qvr_") && !token.contains(' '),
            "{stdout}"
        );
        token
    };
    let admin = create("ops", "admin");
    let reader = create("ana", "reader");
    let duplicate = Command::new(QUIVER)
        .args([
            "token",
            "create",
            "--name",
            "ana",
            "--role",
            "admin",
            "--auth-file",
            auth,
        ])
        .output()
        .expect("runs");
    assert!(!duplicate.status.success() && text(&duplicate).contains("exists already"));

    // Without auth, a non-loopback address is refused before anything is served.
    let refused = Command::new(QUIVER)
        .args([
            "serve",
            "--grpc-addr",
            "0.0.0.0:0",
            "--log",
            "warn",
            "--data-dir",
        ])
        .arg(dir.path().join("refused"))
        .output()
        .expect("serve runs");
    assert!(!refused.status.success(), "{}", text(&refused));
    assert!(
        text(&refused).contains("--insecure-no-auth"),
        "{}",
        text(&refused)
    );

    let features = project(dir.path());
    let data = dir.path().join("data");
    let mut flags = roots_beside(&data);
    flags.extend(["--auth-file".to_string(), auth.to_string()]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = ServerProcess::start_with(&data, &flags);
    let features = features.to_str().expect("utf-8 path");
    let anonymous = server.quiver(&["list", "views"]);
    assert!(!anonymous.status.success());
    assert!(text(&anonymous).contains("Bearer"), "{}", text(&anonymous));
    let as_reader = server.quiver(&["apply", "-f", features, "--token", &reader]);
    assert!(
        text(&as_reader).contains("needs role `admin`"),
        "{}",
        text(&as_reader)
    );
    ok(server.quiver(&["apply", "-f", features, "--token", &admin]));
    let described = ok(Command::new(QUIVER)
        .args(["describe", "view", "driver_stats", "--server", &server.url])
        .env("QUIVER_TOKEN", &reader)
        .output()
        .expect("describe runs"));
    assert!(
        described.contains("applied by:  ops"),
        "applied_by missing:\n{described}"
    );
    server.stop();
}

#[test]
fn quickstart_runs_every_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("qs");
    let output = Command::new(QUIVER)
        .args(["quickstart", "--dir"])
        .arg(&target)
        .output()
        .expect("quickstart runs");
    let stdout = ok(output);
    for needle in [
        "Applied: registry version 1.",
        "Materialized 1 views",
        "OUTSIDE_MAX_AGE",
        "NOT_FOUND",
        "PRESENT",
        "Exported 1000 rows",
        "of service driver_model@1 (on_demand)",
        "driver_stats__conv_rate",
        "against reference profile",
        "service driver_model: 4 logged rows compared (versions 1)",
    ] {
        assert!(
            stdout.contains(needle),
            "`{needle}` missing from quickstart output:\n{stdout}"
        );
    }
    assert!(target.join("train.parquet").exists());
    // The 4 drivers looked up in step 5 were served exactly as the join at served_at has them.
    let table = stdout
        .split("8. Training/serving skew")
        .nth(1)
        .expect("step 8");
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.starts_with("driver_stats__"))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cells[1..4],
            ["4", "4", "0"],
            "compared, matches, mismatches: {row}"
        );
    }
}

/// `--log-format json`: every line on standard error is one JSON object, and the audit event of
/// an apply carries its fields (principal, call, outcome) as keys.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let features = project(dir.path());
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let addr_file = data.with_extension("addr");
    let mut child = Command::new(QUIVER)
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(roots_beside(&data))
        .arg("--data-dir")
        .arg(&data)
        .arg("--listener-addr-file")
        .arg(&addr_file)
        .env("QUIVER_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("serve starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !addr_file.exists() {
        assert!(std::time::Instant::now() < deadline, "no address");
        std::thread::sleep(Duration::from_millis(20));
    }
    let url = format!(
        "http://{}",
        std::fs::read_to_string(&addr_file).expect("addr")
    );
    let features = features.to_str().expect("utf-8 path");
    ok(Command::new(QUIVER)
        .args(["apply", "-f", features, "--server", &url])
        .output()
        .expect("apply runs"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(child.wait().expect("exits").success());

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() >= 2, "{lines:?}");
    for line in &lines {
        for key in ["timestamp", "level", "target"] {
            assert!(line.get(key).is_some(), "no `{key}`: {line}");
        }
    }
    let audit = lines
        .iter()
        .find(|l| l["target"] == "quiver::audit" && l["call"] == "Apply")
        .unwrap_or_else(|| panic!("no audit event of the apply: {lines:?}"));
    assert_eq!(audit["principal"], "anonymous", "{audit}");
}
