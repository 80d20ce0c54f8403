//! The harness of the binary's black-box tests: a `quiver serve` process on 127.0.0.1:0 and
//! client commands against it.

#![allow(dead_code)] // each test binary uses part of it

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub(crate) const QUIVER: &str = env!("CARGO_BIN_EXE_quiver");

/// `quiver serve` on 127.0.0.1:0 over `data_dir`, writing its address to `<data_dir>.addr`.
pub(crate) fn serve(data_dir: &Path, extra: &[&str]) -> Command {
    let mut command = Command::new(QUIVER);
    command
        .args(["serve", "--grpc-addr", "127.0.0.1:0", "--log", "warn"])
        .args(extra)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--listener-addr-file")
        .arg(data_dir.with_extension("addr"))
        .stdout(Stdio::null());
    command
}

/// `--source-root DIR --labels-root DIR` for the directory that holds `data_dir`.
pub(crate) fn roots_beside(data_dir: &Path) -> Vec<String> {
    let dir = data_dir.parent().expect("data dir has a parent");
    let dir = dir.to_str().expect("utf-8 path").to_string();
    vec![
        "--source-root".into(),
        dir.clone(),
        "--labels-root".into(),
        dir,
    ]
}

pub(crate) struct ServerProcess {
    pub(crate) child: Child,
    pub(crate) url: String,
    /// `host:port` of the metrics and probes endpoint, when started with `--metrics-addr`.
    pub(crate) metrics_addr: Option<String>,
}

impl ServerProcess {
    /// Starts `quiver serve` over `data_dir` with the directory beside it (where the demo
    /// project lives) as its source and labels root.
    pub(crate) fn start(data_dir: &Path) -> ServerProcess {
        let roots = roots_beside(data_dir);
        let roots: Vec<&str> = roots.iter().map(String::as_str).collect();
        Self::start_with(data_dir, &roots)
    }

    /// Starts `quiver serve` with exactly `extra` flags (roots, auth, TLS, ...).
    pub(crate) fn start_with(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        let addr_file = data_dir.with_extension("addr");
        let _ = std::fs::remove_file(&addr_file);
        let child = serve(data_dir, extra)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("quiver serve starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !addr_file.exists() {
            assert!(
                Instant::now() < deadline,
                "server did not write its address"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let addrs = std::fs::read_to_string(&addr_file).expect("address file");
        let mut lines = addrs.lines();
        let addr = lines.next().expect("the gRPC address");
        ServerProcess {
            child,
            url: format!("http://{addr}"),
            metrics_addr: lines.next().map(str::to_string),
        }
    }

    pub(crate) fn quiver(&self, args: &[&str]) -> Output {
        Command::new(QUIVER)
            .args(args)
            .args(["--server", &self.url])
            .output()
            .expect("quiver runs")
    }

    /// SIGTERM and wait: graceful shutdown.
    pub(crate) fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("server exits");
        assert!(status.success(), "server exit status {status}");
    }

    pub(crate) fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test that fails leaves no server behind (nor one stopped with SIGSTOP).
impl Drop for ServerProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over HTTP/1.0 on `addr`: (status, body).
pub(crate) fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_string())
}

pub(crate) fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

pub(crate) fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "command failed:\n{}",
        text(&output)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The quickstart's demo project under `dir` (written by the library the quickstart uses);
/// returns its manifest directory.
pub(crate) fn project(dir: &Path) -> PathBuf {
    let now = chrono::Utc::now().timestamp_micros();
    let shape = quiver_cli::demo::DemoShape {
        drivers: 10,
        hours: 6,
        end: now - now % quiver_cli::demo::HOUR,
        labels: 50,
    };
    quiver_cli::demo::write_project(dir, shape).expect("demo project");
    dir.join("features")
}

/// A replica `name` (its `--replica-id`) with its data directory in `dir`, its online rows in
/// the Redis Cluster at `url`, a 2 s lease TTL, a metrics listener and `extra` flags.
pub(crate) fn replica(dir: &Path, name: &str, url: &str, extra: &[&str]) -> ServerProcess {
    let data = dir.join(name);
    let mut args = roots_beside(&data);
    args.extend(
        [
            "--online-store",
            url,
            "--replica-id",
            name,
            "--lease-ttl",
            "2",
            "--metrics-addr",
            "127.0.0.1:0",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start_with(&data, &args)
}

/// One pushed row of the demo view `driver_stats` for driver `id` at `event` (its created
/// time too), with `conv_rate` and the other features null.
pub(crate) fn push_row(id: i64, event: i64, conv_rate: f32) -> quiver_proto::v1::PushRequest {
    use quiver_core::types::ValueType;
    use quiver_core::value::Value;
    use quiver_proto::v1;
    let column = |value: Value, value_type: &str| {
        let value_type = ValueType::parse(value_type).expect("a value type");
        quiver_proto::convert::values_to_column(&[value], value_type)
    };
    let timestamp = |micros| v1::Column {
        values: Some(v1::column::Values::TimestampValues(v1::TimestampValues {
            micros: vec![micros],
        })),
        nulls: vec![],
    };
    let columns = [
        ("driver_id", column(Value::Int64(id), "int64")),
        ("event_timestamp", timestamp(event)),
        ("created", timestamp(event)),
        ("conv_rate", column(Value::Float32(conv_rate), "float32")),
        ("acc_rate", column(Value::Null, "float32")),
        ("avg_daily_trips", column(Value::Null, "int64")),
        ("vehicle_type", column(Value::Null, "string")),
        ("embedding", column(Value::Null, "list<float32>")),
    ];
    v1::PushRequest {
        target: Some(v1::push_request::Target::FeatureView("driver_stats".into())),
        columns: columns
            .into_iter()
            .map(|(name, column)| v1::NamedColumn {
                name: name.into(),
                column: Some(column),
            })
            .collect(),
        mode: v1::PushMode::Unspecified as i32,
    }
}

/// `(driver_id, conv_rate)` of service `driver_model` for `ids`, as `server` serves them
/// online (`quiver get --format json`), in the order asked.
pub(crate) fn served_conv_rates(
    server: &ServerProcess,
    ids: &[i64],
) -> Vec<(Option<i64>, Option<f64>)> {
    let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
    let entity = format!("driver_id={}", ids.join(","));
    let json = ok(server.quiver(&[
        "get",
        "--service",
        "driver_model",
        "--entity",
        &entity,
        "--format",
        "json",
    ]));
    json.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("json"))
        .map(|row| (row["driver_id"].as_i64(), row["conv_rate"].as_f64()))
        .collect()
}
