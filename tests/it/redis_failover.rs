//! Redis Cluster changing under reads: a primary killed (SIGKILL; its replica takes over) and
//! slots moved to a new primary (resharding), while readers run. A read may fail
//! (UNAVAILABLE) while the cluster changes; it never returns a wrong or missing row, and
//! reads succeed again once the cluster has settled. Rows acknowledged with `replicas=1`
//! survive the failover.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quiver_core::online_store::OnlineStore;
use quiver_core::value::{KeyValue, Value};
use quiver_integration_tests::Block;
use quiver_integration_tests::redis_cluster::RedisCluster;
use quiver_redis::RedisStore;

use super::redis_online::{row, view};

const KEYS: i64 = 3_000;

/// Writes every key once: event `10 * id`, value `id`.
fn write_all(store: &RedisStore) -> anyhow::Result<()> {
    let rows: Vec<_> = (0..KEYS).map(|id| row(id, 10 * id, None, id)).collect();
    for chunk in rows.chunks(500) {
        store.write_rows(&view(), chunk.to_vec(), true).block()?;
    }
    Ok(())
}

/// Checks a read of `ids`: every row present and the one written. Panics otherwise.
fn check(ids: &[i64], rows: &[Option<Arc<quiver_core::online_store::StoredRow>>]) {
    assert_eq!(rows.len(), ids.len());
    for (id, row) in ids.iter().zip(rows) {
        let row = row
            .as_ref()
            .unwrap_or_else(|| panic!("key {id} read as missing"));
        assert_eq!(
            (row.event_ts, &row.values[0]),
            (10 * id, &Value::Int64(*id))
        );
    }
}

/// Readers of random batches of 50 keys until stopped: (successful reads, failed reads).
struct Readers {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Readers {
    fn start(store: Arc<RedisStore>) -> Readers {
        let (stop, ok, failed) = Default::default();
        let mut readers = Readers {
            stop,
            ok,
            failed,
            threads: Vec::new(),
        };
        for seed in 0..2u64 {
            let (store, stop) = (Arc::clone(&store), Arc::clone(&readers.stop));
            let (ok, failed) = (Arc::clone(&readers.ok), Arc::clone(&readers.failed));
            readers.threads.push(std::thread::spawn(move || {
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ seed;
                while !stop.load(Ordering::Relaxed) {
                    let ids: Vec<i64> = (0..50)
                        .map(|_| {
                            state ^= state << 13;
                            state ^= state >> 7;
                            state ^= state << 17;
                            (state % KEYS as u64) as i64
                        })
                        .collect();
                    let keys: Vec<Vec<KeyValue>> =
                        ids.iter().map(|id| vec![KeyValue::Int64(*id)]).collect();
                    match store.read_rows(&view(), &keys).block() {
                        Ok(rows) => {
                            check(&ids, &rows);
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            assert_eq!(error.code(), quiver_core::ErrorCode::Unavailable);
                            failed.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            }));
        }
        readers
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the readers (a reader that saw a wrong row fails the test here); returns
    /// (successful, failed) reads.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let counts = (self.ok(), self.failed.load(Ordering::Relaxed));
        for thread in self.threads {
            assert!(thread.join().is_ok(), "a reader saw a wrong or missing row");
        }
        counts
    }
}

/// Waits until `condition` holds, for at most 60 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition().unwrap_or(false) {
        anyhow::ensure!(Instant::now() < deadline, "no {what} within 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// More reads succeed after the cluster settled: the readers recovered.
fn wait_for_recovery(readers: &Readers) -> anyhow::Result<()> {
    let settled = readers.ok();
    wait_for("successful reads after the change", || {
        Ok(readers.ok() > settled + 20)
    })
}

#[test]
fn reads_survive_a_primary_killed_and_acknowledged_rows_are_kept() -> anyhow::Result<()> {
    let mut cluster = RedisCluster::start_with_replicas(3, 1)?;
    let seed = cluster.ports[0];
    let nodes: Vec<String> = cluster
        .ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let url = format!("redis+cluster://{}", nodes.join(","));
    write_all(&RedisStore::open(&format!(
        "{url}?replicas=1&timeout_ms=2000"
    ))?)?;

    let readers = Readers::start(Arc::new(RedisStore::open(&format!(
        "{url}?timeout_ms=1000"
    ))?));
    wait_for("reads", || Ok(readers.ok() > 20))?;
    let primaries = cluster.primaries(seed)?;
    let victim = *primaries
        .iter()
        .find(|p| **p != seed)
        .ok_or_else(|| anyhow::anyhow!("no primary but the seed: {primaries:?}"))?;
    cluster.kill(victim)?;
    wait_for("the failover", || {
        let nodes = cluster.cli(seed, &["CLUSTER", "NODES"])?;
        Ok(nodes.contains("fail") && cluster.primaries(seed)?.len() == 3)
    })?;
    cluster.wait_for_ok(seed)?;
    wait_for_recovery(&readers)?;
    let (ok, failed) = readers.stop();
    eprintln!("failover: {ok} reads succeeded, {failed} failed while it happened");

    // Every acknowledged row is on the promoted replica.
    let store = RedisStore::open(&format!("{url}?timeout_ms=1000"))?;
    let ids: Vec<i64> = (0..KEYS).collect();
    let keys: Vec<Vec<KeyValue>> = ids.iter().map(|id| vec![KeyValue::Int64(*id)]).collect();
    check(&ids, &store.read_rows(&view(), &keys).block()?);

    // With `replicas=1`, a write waits on the primaries it wrote to only: the promoted one
    // has no replica left, so its keys are refused, and the other shards' are acknowledged.
    let durable = RedisStore::open(&format!("{url}?replicas=1&timeout_ms=400"))?;
    let (mut acknowledged, mut refused) = (0, 0);
    for id in 0..30 {
        match durable
            .write_rows(&view(), vec![row(id, 10 * id + 5, None, id)], true)
            .block()
        {
            Ok(_) => acknowledged += 1,
            Err(error) => {
                assert_eq!(error.code(), quiver_core::ErrorCode::Unavailable, "{error}");
                refused += 1;
            }
        }
    }
    assert!(
        acknowledged > 0 && refused > 0,
        "{acknowledged} acknowledged, {refused} refused"
    );
    Ok(())
}

#[test]
fn reads_follow_slots_moved_to_a_new_primary() -> anyhow::Result<()> {
    let mut cluster = RedisCluster::start(3)?;
    let url = cluster.url();
    let store = Arc::new(RedisStore::open(&url)?);
    write_all(&store)?;
    let readers = Readers::start(Arc::clone(&store));
    wait_for("reads", || Ok(readers.ok() > 20))?;
    let added = cluster.add_primary()?;
    cluster.rebalance()?;
    cluster.wait_for_ok(cluster.ports[0])?;
    wait_for_recovery(&readers)?;
    let (ok, failed) = readers.stop();
    eprintln!("resharding: {ok} reads succeeded, {failed} failed while it happened");
    let moved = cluster.keys_on(added)?;
    assert!(moved > 100, "{moved} keys moved to the new primary");

    let ids: Vec<i64> = (0..KEYS).collect();
    let keys: Vec<Vec<KeyValue>> = ids.iter().map(|id| vec![KeyValue::Int64(*id)]).collect();
    check(&ids, &store.read_rows(&view(), &keys).block()?);
    // Writes reach the moved keys too.
    let stats = store
        .write_rows(&view(), vec![row(7, 1_000_000, None, -7)], true)
        .block()?;
    assert_eq!(stats.written, 1);
    Ok(())
}
