//! Two `quiver serve` processes over one Redis Cluster (Debian's redis-server, 3 primaries on
//! loopback): a replica stopped (SIGSTOP) in the middle of a materialization, past its lease,
//! never moves the view's watermark backwards once it runs again, while another replica took
//! the view over meanwhile.

#[path = "../../../tests/src/redis_cluster.rs"]
#[allow(dead_code, unreachable_pub)] // the integration tests' harness; part of it is used here
mod redis_cluster;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis_cluster::RedisCluster;
use support::{QUIVER, ServerProcess, http_get, roots_beside, text};

const HOUR: i64 = 3_600_000_000;
const LEASE: &str = "quiver:lease:materialize/driver_stats";

fn replica(dir: &std::path::Path, name: &str, url: &str) -> ServerProcess {
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
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ServerProcess::start_with(&data, &args)
}

fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .expect("a valid time")
        .to_rfc3339()
}

fn signal(server: &ServerProcess, name: &str) {
    let status = Command::new("kill")
        .args([name, &server.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill {name}");
}

/// The holder of the view's materialization lease, if any (`redis-cli -c` follows the key
/// to its node).
fn lease_holder(cluster: &RedisCluster) -> String {
    cluster
        .cli(cluster.ports[0], &["-c", "GET", LEASE])
        .expect("redis-cli")
}

#[test]
fn a_stalled_lease_holder_never_moves_the_watermark_backwards() {
    let cluster = RedisCluster::start(3).expect("a redis cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let now = chrono::Utc::now().timestamp_micros();
    let shape = quiver_cli::demo::DemoShape {
        drivers: 30_000,
        hours: 8,
        end: now - now % HOUR,
        labels: 10,
    };
    quiver_cli::demo::write_project(dir.path(), shape).expect("demo project");
    let features = dir.path().join("features");
    let features = features.to_str().expect("utf-8 path");
    let (a, b) = (
        replica(dir.path(), "replica-a", &cluster.url()),
        replica(dir.path(), "replica-b", &cluster.url()),
    );
    for server in [&a, &b] {
        support::ok(server.quiver(&["apply", "-f", features]));
    }

    // A materializes up to now - 3 h, and is stopped once it holds the lease.
    let (end_a, end_b) = (now - 3 * HOUR, now - 3 * HOUR / 2);
    let run_a = Command::new(QUIVER)
        .args(["materialize-incremental", "--end", &rfc3339(end_a)])
        .args(["--server", &a.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("quiver runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lease_holder(&cluster).starts_with("replica-a/") {
        assert!(Instant::now() < deadline, "replica A never took the lease");
        std::thread::sleep(Duration::from_millis(5));
    }
    signal(&a, "-STOP");

    // Past A's lease, B takes the view over and materializes further, to now - 1.5 h.
    std::thread::sleep(Duration::from_millis(2_500));
    let run_b = b.quiver(&["materialize-incremental", "--end", &rfc3339(end_b)]);
    assert!(run_b.status.success(), "{}", text(&run_b));
    signal(&a, "-CONT");
    let run_a = run_a.wait_with_output().expect("A's run ends");
    let run_a = text(&run_a);
    // A either finds its lease taken and stops, or finishes its older window: its
    // watermark compare-and-set then refuses to move the watermark back to `end_a`.
    assert!(
        run_a.contains("Materialized 1 views") || run_a.contains("lease"),
        "{run_a}"
    );
    eprintln!("replica A after SIGCONT: {run_a}");

    let metrics = b.metrics_addr.as_deref().expect("a metrics address");
    let (status, body) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    let age: f64 = body
        .lines()
        .find_map(|l| l.strip_prefix(r#"quiver_view_watermark_age_seconds{view="driver_stats"} "#))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no watermark age in {body}"));
    let age_of_b = (chrono::Utc::now().timestamp_micros() - end_b) as f64 / 1e6;
    assert!(
        (age - age_of_b).abs() < 600.0,
        "the watermark is {age} s old: B's end is {age_of_b} s old, A's {} s",
        (now - end_a) / 1_000_000
    );
    a.stop();
    b.stop();
}
