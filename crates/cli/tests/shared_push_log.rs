//! Two `quiver serve` processes over one Redis Cluster (3 primaries on loopback) and one
//! push-log directory (`--push-log-dir`): rows pushed through either replica are in both
//! replicas' training exports, and exact ties between pushes through different replicas
//! resolve to the same row online and offline, before and after both replicas compacted
//! their push-log files.

#[path = "../../../tests/src/redis_cluster.rs"]
#[allow(dead_code, unreachable_pub)] // the integration tests' harness; part of it is used here
mod redis_cluster;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use redis_cluster::RedisCluster;
use support::{ServerProcess, push_row, replica};

const KEYS: i64 = 6;
const ROUNDS: i64 = 12;

/// `conv_rate` of a push: which replica took it, and its round (exact in an f32).
fn code(replica: i64, round: i64, id: i64) -> f32 {
    (replica * 10_000 + round * 100 + id) as f32
}

/// Pushes every key once per round through `url`, one push at a time, all rows at `event`
/// (event and created time alike: every push of a key ties with every other).
async fn push_rounds(url: String, replica: i64, event: i64) {
    let mut client = quiver_proto::v1::online_service_client::OnlineServiceClient::connect(url)
        .await
        .expect("connect");
    for round in 0..ROUNDS {
        for id in 1..=KEYS {
            let push = push_row(id, event, code(replica, round, id));
            client.push(push).await.expect("a push");
        }
    }
}

/// `conv_rate` per driver id as served online by `server`.
fn served(server: &ServerProcess) -> BTreeMap<i64, f64> {
    let ids: Vec<i64> = (1..=KEYS).collect();
    support::served_conv_rates(server, &ids)
        .into_iter()
        .map(|(id, rate)| (id.expect("an id"), rate.expect("a value")))
        .collect()
}

/// `conv_rate` per driver id in a training export through `server` at `labels`' times.
fn exported(server: &ServerProcess, labels: &Path, out: &Path) -> BTreeMap<i64, f64> {
    support::ok(server.quiver(&[
        "export",
        "--service",
        "driver_model",
        "--labels",
        labels.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]));
    let file = std::fs::File::open(out).expect("the export");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("parquet")
        .build()
        .expect("a reader");
    let mut values = BTreeMap::new();
    for batch in reader {
        let batch = batch.expect("a batch");
        let ids = batch.column_by_name("driver_id").expect("driver_id");
        let ids = ids.as_any().downcast_ref::<arrow::array::Int64Array>();
        let rates = batch.column_by_name("conv_rate").expect("conv_rate");
        let rates = rates.as_any().downcast_ref::<arrow::array::Float32Array>();
        let (Some(ids), Some(rates)) = (ids, rates) else {
            panic!("unexpected column types: {:?}", batch.schema());
        };
        for row in 0..batch.num_rows() {
            values.insert(ids.value(row), f64::from(rates.value(row)));
        }
    }
    values
}

/// One label per driver id at `at`.
fn write_labels(path: &Path, at: i64) {
    use std::sync::Arc;
    let schema = arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("driver_id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new(
            "event_timestamp",
            arrow::datatypes::DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ),
            false,
        ),
    ]);
    let ids = arrow::array::Int64Array::from((1..=KEYS).collect::<Vec<_>>());
    let times =
        arrow::array::TimestampMicrosecondArray::from(vec![at; KEYS as usize]).with_timezone("UTC");
    let batch =
        arrow::array::RecordBatch::try_new(Arc::new(schema), vec![Arc::new(ids), Arc::new(times)])
            .expect("labels");
    quiver_cli::demo::write_parquet(path, &batch).expect("write labels");
}

/// The names of the push-log files of `driver_stats` in the shared directory.
fn log_files(log: &Path) -> Vec<String> {
    std::fs::read_dir(log.join("driver_stats"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".parquet"))
                .collect()
        })
        .unwrap_or_default()
}

/// Replicas A and B push ties concurrently, each through one client in order. The rule
/// (SEMANTICS.md, "Ties between pushes") orders the shared log by replica, then by each
/// replica's append order, so the reference is computed from what the clients did alone:
/// every key keeps B's last push. Online (Redis) and both replicas' exports agree with it,
/// and still do once both replicas merged their files.
#[test]
fn ties_between_replicas_resolve_alike_online_and_offline() {
    let cluster = RedisCluster::start(3).expect("a redis cluster");
    let dir = tempfile::tempdir().expect("tempdir");
    let features = support::project(dir.path());
    let log = dir.path().join("push-log");
    let log_arg = log.to_str().expect("utf-8");
    let extra = [
        "--push-log-dir",
        log_arg,
        "--push-log-compaction-interval",
        "1",
    ];
    let a = replica(dir.path(), "replica-a", &cluster.url(), &extra);
    let b = replica(dir.path(), "replica-b", &cluster.url(), &extra);
    for server in [&a, &b] {
        support::ok(server.quiver(&["apply", "-f", features.to_str().expect("utf-8")]));
    }
    let event = chrono::Utc::now().timestamp_micros() - 60_000_000;
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        tokio::join!(
            push_rounds(a.url.clone(), 1, event),
            push_rounds(b.url.clone(), 2, event)
        )
    });
    let want: BTreeMap<i64, f64> = (1..=KEYS)
        .map(|id| (id, f64::from(code(2, ROUNDS - 1, id))))
        .collect();

    let labels = dir.path().join("labels.parquet");
    write_labels(&labels, event + 1_000_000);
    let files = log_files(&log);
    for name in ["+replica-a.parquet", "+replica-b.parquet"] {
        assert!(files.iter().any(|f| f.ends_with(name)), "{name}: {files:?}");
    }
    let check = |when: &str| {
        assert_eq!(served(&a), want, "online through A, {when}");
        assert_eq!(served(&b), want, "online through B, {when}");
        let (out_a, out_b) = (dir.path().join("a.parquet"), dir.path().join("b.parquet"));
        assert_eq!(exported(&a, &labels, &out_a), want, "A's export, {when}");
        assert_eq!(exported(&b, &labels, &out_b), want, "B's export, {when}");
    };
    check("as pushed");

    // Both replicas merge their own files (each pushed KEYS x ROUNDS single-row files).
    let deadline = Instant::now() + Duration::from_secs(60);
    let merged = |replica: &str| {
        let suffix = format!("+{replica}.parquet");
        log_files(&log)
            .iter()
            .any(|f| f.contains('~') && f.ends_with(&suffix))
    };
    while !(merged("replica-a") && merged("replica-b")) {
        assert!(Instant::now() < deadline, "no merge: {:?}", log_files(&log));
        std::thread::sleep(Duration::from_millis(200));
    }
    check("after compaction");
    a.stop();
    b.stop();
}
