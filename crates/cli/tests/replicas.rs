//! Two `quiver serve` processes over one Redis Cluster (Debian's redis-server, 3 primaries on
//! loopback):
//! - a replica stopped (SIGSTOP) in the middle of a materialization, past its lease, finds
//!   its lease expired once it runs again and fails, and the view's watermark stays where
//!   the replica that took the view over meanwhile left it;
//! - a replica killed (SIGKILL) while clients push through it loses no acknowledged push;
//! - a job started on one replica is read, watched and cancelled through the other.

#[path = "../../../tests/src/redis_cluster.rs"]
#[allow(dead_code, unreachable_pub)] // the integration tests' harness; part of it is used here
mod redis_cluster;
mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use redis_cluster::RedisCluster;
use support::{QUIVER, ServerProcess, http_get, push_row, replica, roots_beside, text};

const HOUR: i64 = 3_600_000_000;
const LEASE: &str = "quiver:lease:materialize/driver_stats";

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

/// The demo project with 30,000 drivers over 8 hours up to the last full hour (a
/// materialization of it takes seconds in a debug build), applied on two replicas over
/// `cluster`: (its directory, now, replica A, replica B).
fn large_project_on_two_replicas(
    cluster: &RedisCluster,
) -> (tempfile::TempDir, i64, ServerProcess, ServerProcess) {
    let dir = tempfile::tempdir().expect("tempdir");
    let now = chrono::Utc::now().timestamp_micros();
    let shape = quiver_cli::demo::DemoShape {
        drivers: 30_000,
        hours: 8,
        end: now - now % HOUR,
        labels: 10,
    };
    quiver_cli::demo::write_project(dir.path(), shape).expect("demo project");
    let (a, b) = two_replicas(cluster, dir.path(), &dir.path().join("features"));
    (dir, now, a, b)
}

/// Replicas A and B over `cluster`, their data directories in `dir`, with `features`
/// applied on both.
fn two_replicas(
    cluster: &RedisCluster,
    dir: &std::path::Path,
    features: &std::path::Path,
) -> (ServerProcess, ServerProcess) {
    let (a, b) = (
        replica(dir, "replica-a", &cluster.url(), &[]),
        replica(dir, "replica-b", &cluster.url(), &[]),
    );
    let features = features.to_str().expect("utf-8 path");
    for server in [&a, &b] {
        support::ok(server.quiver(&["apply", "-f", features]));
    }
    (a, b)
}

#[test]
fn a_stalled_lease_holder_never_moves_the_watermark_backwards() {
    let cluster = RedisCluster::start(3).expect("a redis cluster");
    let (_dir, now, a, b) = large_project_on_two_replicas(&cluster);

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
    // A was stopped right after it took the lease, with its whole window still to write: its
    // first renewal finds the lease expired, and the job fails (B has come and gone).
    assert!(
        run_a.contains("failed") && run_a.contains("expired before it was renewed"),
        "{run_a}"
    );

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

/// Pushes one row per request through `url` from 4 concurrent clients until a push fails;
/// returns the ids of the acknowledged ones. `pushed` counts them as they come.
async fn push_until_failure(
    url: String,
    event: i64,
    pushed: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> Vec<i64> {
    let channel = tonic::transport::Channel::from_shared(url)
        .expect("a url")
        .connect()
        .await
        .expect("connect");
    let mut tasks = Vec::new();
    for worker in 0..4i64 {
        let mut client =
            quiver_proto::v1::online_service_client::OnlineServiceClient::new(channel.clone());
        let pushed = std::sync::Arc::clone(&pushed);
        tasks.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0.. {
                let id = 100_000 + 4 * i + worker;
                if client.push(push_row(id, event, id as f32)).await.is_err() {
                    break;
                }
                acknowledged.push(id);
                pushed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            acknowledged
        }));
    }
    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.expect("a pusher"));
    }
    acknowledged
}

/// Replica A is killed (SIGKILL) while clients push through it: every push it acknowledged
/// is served online by replica B (the rows are in Redis), and is in A's push log once A is
/// back on its data directory.
#[test]
fn pushes_acknowledged_before_a_kill_9_are_kept() {
    let cluster = RedisCluster::start(3).expect("a redis cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = two_replicas(&cluster, dir.path(), &support::project(dir.path()));
    let event = chrono::Utc::now().timestamp_micros() - 60_000_000;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let pushed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pushers = runtime.spawn(push_until_failure(
        a.url.clone(),
        event,
        std::sync::Arc::clone(&pushed),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    while pushed.load(std::sync::atomic::Ordering::Relaxed) < 200 {
        assert!(Instant::now() < deadline, "pushes are too slow");
        std::thread::sleep(Duration::from_millis(5));
    }
    let data_a = dir.path().join("replica-a");
    a.kill9();
    let acknowledged = runtime.block_on(pushers).expect("the pushers end");
    assert!(acknowledged.len() >= 200, "{}", acknowledged.len());

    let served = |server: &ServerProcess| support::served_conv_rates(server, &acknowledged);
    let want: Vec<_> = acknowledged
        .iter()
        .map(|id| (Some(*id), Some(*id as f32 as f64)))
        .collect();
    assert_eq!(served(&b), want, "replica B serves every acknowledged push");

    // A, back on its data directory, has every acknowledged row in its push log.
    let a = ServerProcess::start_with(
        &data_a,
        &{
            let mut args = roots_beside(&data_a);
            args.extend(["--online-store", &cluster.url()].map(String::from));
            args
        }
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>(),
    );
    let logged = logged_ids(&data_a);
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !logged.contains(id))
        .collect();
    assert!(missing.is_empty(), "not in A's push log: {missing:?}");
    assert_eq!(served(&a), want);
    a.stop();
    b.stop();
}

/// The driver ids in every push-log file of the data directory.
fn logged_ids(data: &std::path::Path) -> std::collections::BTreeSet<i64> {
    let mut ids = std::collections::BTreeSet::new();
    let mut dirs = vec![data.join("offline")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a directory").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                let file = std::fs::File::open(&path).expect("a file");
                let reader =
                    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                        .expect("parquet")
                        .build()
                        .expect("a reader");
                for batch in reader {
                    let batch = batch.expect("a batch");
                    let column = batch.column_by_name("driver_id").expect("driver_id");
                    let column = column
                        .as_any()
                        .downcast_ref::<arrow::array::Int64Array>()
                        .expect("int64");
                    ids.extend(column.values().iter().copied());
                }
            }
        }
    }
    ids
}

/// A job started on replica A is seen (GetJob, WatchJob) and cancelled (CancelJob) through
/// replica B, from the record A publishes in Redis.
#[test]
fn a_job_is_watched_and_cancelled_through_another_replica() {
    use quiver_proto::v1;
    let cluster = RedisCluster::start(3).expect("a redis cluster");
    let (_dir, now, a, b) = large_project_on_two_replicas(&cluster);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let _context = runtime.enter();
    let client = |url: &str| {
        let channel = tonic::transport::Channel::from_shared(url.to_string()).expect("a url");
        v1::job_service_client::JobServiceClient::new(channel.connect_lazy())
    };
    let (mut on_a, mut on_b) = (client(&a.url), client(&b.url));
    let final_state = runtime.block_on(async move {
        let started = on_a
            .start_materialization(v1::StartMaterializationRequest {
                end_micros: now,
                incremental: true,
                ..Default::default()
            })
            .await
            .expect("started on A")
            .into_inner()
            .job
            .expect("a job");
        assert!(started.id.contains("replica-a"), "{}", started.id);
        let id = started.id.clone();
        let seen = on_b
            .get_job(v1::GetJobRequest { id: id.clone() })
            .await
            .expect("B knows the job")
            .into_inner()
            .job
            .expect("a job");
        assert_eq!(seen.state, v1::JobState::Running as i32, "{seen:?}");
        on_b.cancel_job(v1::CancelJobRequest { id: id.clone() })
            .await
            .expect("cancelled through B");
        let mut watch = on_b
            .watch_job(v1::WatchJobRequest { id: id.clone() })
            .await
            .expect("watched through B")
            .into_inner();
        let mut last = None;
        while let Some(update) = watch.message().await.expect("an update") {
            last = Some(update);
        }
        let on_a_end = on_a
            .get_job(v1::GetJobRequest { id })
            .await
            .expect("A's job")
            .into_inner()
            .job
            .expect("a job");
        let last = last.expect("updates");
        assert_eq!(
            last.state, on_a_end.state,
            "B's watch ends with A's outcome"
        );
        last.state
    });
    assert_eq!(final_state, v1::JobState::Cancelled as i32);
    a.stop();
    b.stop();
}
