//! The online store on a real Redis Cluster (3 primaries on loopback): the ordering rule in
//! the Redis Function, exact at every i64; the same answers as the RocksDB store for the
//! same writes (the independent reference); rows spread over the nodes; concurrent writers;
//! eviction refused; durability against replicas that are not there.

use std::sync::Arc;

use quiver_core::ErrorCode;
use quiver_core::online_store::{OnlineStore, StoredRow, WriteStats};
use quiver_core::types::KeyType;
use quiver_core::value::{KeyValue, Row, Value};
use quiver_integration_tests::Block;
use quiver_integration_tests::redis_cluster::RedisCluster;
use quiver_online::RocksStore;
use quiver_redis::RedisStore;

pub(super) fn view() -> quiver_core::ResolvedView {
    quiver_core::testdata::view(
        "trips",
        &[("driver_id", KeyType::Int64)],
        &[("n", "int64"), ("tag", "string"), ("w", "list<float32>")],
    )
}

pub(super) fn row(id: i64, event_ts: i64, created_ts: Option<i64>, n: i64) -> Row {
    Row {
        key: vec![KeyValue::Int64(id)],
        event_ts,
        created_ts,
        values: vec![
            Value::Int64(n),
            Value::String(format!("r{n}")),
            Value::List(vec![Value::Float32(0.5), Value::Null]),
        ],
    }
}

fn stored(store: &dyn OnlineStore, id: i64) -> anyhow::Result<Option<(i64, Option<i64>, Value)>> {
    let rows = store
        .read_rows(&view(), &[vec![KeyValue::Int64(id)]])
        .block()?;
    Ok(rows
        .into_iter()
        .next()
        .flatten()
        .map(|row| (row.event_ts, row.created_ts, row.values[0].clone())))
}

/// The ordering-rule table, with orders that differ only past 2^53 (where a double would
/// round them together) and at the ends of i64.
#[test]
fn the_function_applies_the_ordering_rule_exactly() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let store = RedisStore::open(&cluster.url())?;
    let big = 1i64 << 53;
    let table = [
        (row(1, 10, None, 1), 1, (10, None, 1)),
        (row(1, 9, Some(99), 2), 0, (10, None, 1)),
        (row(1, 10, Some(0), 3), 1, (10, Some(0), 3)),
        (row(1, 10, None, 4), 0, (10, Some(0), 3)),
        (row(1, 10, Some(5), 5), 1, (10, Some(5), 5)),
        (row(1, 10, Some(4), 6), 0, (10, Some(5), 5)),
        (row(1, 10, Some(5), 7), 1, (10, Some(5), 7)),
        (row(1, 11, None, 8), 1, (11, None, 8)),
        (row(2, big + 1, None, 1), 1, (big + 1, None, 1)),
        (row(2, big, None, 2), 0, (big + 1, None, 1)),
        (
            row(2, big + 1, Some(-big - 2), 3),
            1,
            (big + 1, Some(-big - 2), 3),
        ),
        (
            row(2, big + 1, Some(-big - 3), 4),
            0,
            (big + 1, Some(-big - 2), 3),
        ),
        (
            row(3, i64::MIN, Some(i64::MIN), 1),
            1,
            (i64::MIN, Some(i64::MIN), 1),
        ),
        (row(3, i64::MIN, None, 2), 0, (i64::MIN, Some(i64::MIN), 1)),
        (
            row(3, i64::MAX - 1, Some(i64::MAX), 3),
            1,
            (i64::MAX - 1, Some(i64::MAX), 3),
        ),
        (row(3, i64::MAX, None, 4), 1, (i64::MAX, None, 4)),
        (
            row(3, i64::MAX - 1, Some(i64::MAX), 5),
            0,
            (i64::MAX, None, 4),
        ),
        (row(4, -1, None, 1), 1, (-1, None, 1)),
        (row(4, -2, Some(i64::MAX), 2), 0, (-1, None, 1)),
    ];
    for (step, (row, written, (event_ts, created_ts, n))) in table.into_iter().enumerate() {
        let id = row.key[0].clone();
        let stats = store.write_rows(&view(), vec![row.clone()], true).block()?;
        assert_eq!(
            stats,
            WriteStats {
                written,
                skipped_older: 1 - written
            },
            "step {step}"
        );
        let KeyValue::Int64(id) = id else {
            unreachable!()
        };
        assert_eq!(
            stored(&store, id)?,
            Some((event_ts, created_ts, Value::Int64(n))),
            "step {step}"
        );
    }
    assert_eq!(store.newest_event("trips").block()?, Some(i64::MAX));
    assert_eq!(store.newest_event("other").block()?, None);
    Ok(())
}

/// Random write sequences (several rows per key per call, ties, out of order) leave Redis
/// and RocksDB holding the same rows; the keys are spread over every node.
#[test]
fn redis_and_rocksdb_agree_on_every_row() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let redis = RedisStore::open(&cluster.url())?;
    let dir = tempfile::tempdir()?;
    let rocks = RocksStore::open(dir.path())?;
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = |modulo: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % modulo
    };
    for call in 0..60 {
        let rows: Vec<Row> = (0..20)
            .map(|i| {
                let created = (next(3) > 0).then(|| next(4) as i64);
                row(
                    next(300) as i64,
                    next(6) as i64 * 1_000,
                    created,
                    call * 100 + i,
                )
            })
            .collect();
        let from_redis = redis.write_rows(&view(), rows.clone(), false).block()?;
        let from_rocks = OnlineStore::write_rows(&rocks, &view(), rows.clone(), false).block()?;
        assert_eq!(from_redis, from_rocks, "call {call}");
    }
    let keys: Vec<Vec<KeyValue>> = (-5..305).map(|id| vec![KeyValue::Int64(id)]).collect();
    let from_redis = redis.read_rows(&view(), &keys).block()?;
    let from_rocks = OnlineStore::read_rows(&rocks, &view(), &keys).block()?;
    assert_eq!(from_redis, from_rocks);
    assert!(from_redis.iter().filter(|row| row.is_some()).count() > 250);
    for port in &cluster.ports {
        assert!(cluster.keys_on(*port)? > 10, "node {port} holds few keys");
    }
    assert_eq!(
        redis.newest_event("trips").block()?,
        OnlineStore::newest_event(&rocks, "trips").block()?
    );
    // Wrong keys are refused as with RocksDB.
    let error = redis
        .read_rows(&view(), &[vec![KeyValue::Int32(1)]])
        .block()
        .expect_err("int32 key");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    Ok(())
}

/// Rows equal on (event, created) written in random order, each from a random push-log
/// position (replicas with shared prefixes, names past 2^53, row indexes) or from none: Redis
/// and RocksDB each keep the row the reference keeps, which compares the positions' own
/// order (not their byte tokens): between two positions the greater wins, and a row from no
/// position (a materialization's) wins every tie and loses none.
#[test]
fn ties_keep_the_row_at_the_greatest_log_position() -> anyhow::Result<()> {
    use quiver_core::semantics::LogPosition;
    let cluster = RedisCluster::start(3)?;
    let redis = RedisStore::open(&cluster.url())?;
    let dir = tempfile::tempdir()?;
    let rocks = RocksStore::open(dir.path())?;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |modulo: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % modulo
    };
    let replicas = ["", "a", "a-1", "ab", "b"];
    let mut greatest: std::collections::BTreeMap<i64, (Option<LogPosition>, i64)> =
        Default::default();
    for n in 0..400i64 {
        let id = next(40) as i64;
        let position = (next(5) > 0).then(|| LogPosition {
            replica: replicas[next(5) as usize].to_string(),
            micros: (1i64 << 53) + next(3) as i64,
            seq: next(3),
            row: next(3),
        });
        let row = row(id, 1_000, Some(7), n);
        let (from_redis, from_rocks) = (
            redis
                .write_rows_at(&view(), vec![row.clone()], position.as_ref(), false)
                .block()?,
            OnlineStore::write_rows_at(
                &rocks,
                &view(),
                vec![row.clone()],
                position.as_ref(),
                false,
            )
            .block()?,
        );
        assert_eq!(from_redis, from_rocks, "write {n}");
        // Not older: an equal position is written again.
        let kept = greatest.entry(id).or_insert((position.clone(), n));
        let wins = match (&position, &kept.0) {
            (Some(incoming), Some(stored)) => incoming >= stored,
            _ => true,
        };
        if wins {
            *kept = (position, n);
        }
    }
    for (id, (_, n)) in greatest {
        let want = Some((1_000, Some(7), Value::Int64(n)));
        assert_eq!(stored(&redis, id)?, want, "key {id} on redis");
        assert_eq!(stored(&rocks, id)?, want, "key {id} on rocksdb");
    }
    // One call with tied rows for a key: the greatest position among them, then the order.
    let origin = LogPosition {
        replica: "z".into(),
        micros: 5,
        seq: 0,
        row: 0,
    };
    let rows = [
        row(99, 10, None, 1),
        row(99, 10, None, 2),
        row(99, 9, None, 3),
    ];
    redis
        .write_rows_at(&view(), rows.to_vec(), Some(&origin), false)
        .block()?;
    assert_eq!(stored(&redis, 99)?, Some((10, None, Value::Int64(2))));
    Ok(())
}

#[test]
fn concurrent_writers_leave_the_greatest_row() -> anyhow::Result<()> {
    const THREADS: i64 = 6;
    const EVENTS: i64 = 60;
    let cluster = RedisCluster::start(3)?;
    let store = Arc::new(RedisStore::open(&cluster.url())?);
    std::thread::scope(|scope| {
        for thread in 0..THREADS {
            let store = Arc::clone(&store);
            scope.spawn(move || {
                let mut events: Vec<i64> = (0..EVENTS).map(|i| i * THREADS + thread).collect();
                if thread % 2 == 1 {
                    events.reverse();
                }
                for event_ts in events {
                    let rows = [row(1, event_ts, None, event_ts), row(2, event_ts, None, 0)];
                    store
                        .write_rows(&view(), rows.to_vec(), false)
                        .block()
                        .expect("write");
                }
            });
        }
    });
    let max = EVENTS * THREADS - 1;
    assert_eq!(stored(&*store, 1)?, Some((max, None, Value::Int64(max))));
    Ok(())
}

#[test]
fn a_primary_that_evicts_is_refused() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    cluster.cli(
        cluster.ports[2],
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )?;
    let error = RedisStore::open(&cluster.url()).expect_err("eviction");
    assert_eq!(error.code(), ErrorCode::FailedPrecondition);
    assert!(error.to_string().contains("allkeys-lru"), "{error}");
    assert!(error.to_string().contains("noeviction"), "{error}");
    Ok(())
}

/// `replicas=1` on a cluster without replicas: the write is applied by the primary but not
/// acknowledged as durable, so the caller gets UNAVAILABLE (and may retry: the rule makes
/// the retry idempotent).
#[test]
fn a_durable_write_without_its_replicas_is_unavailable() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let store = RedisStore::open(&format!("{}?replicas=1&timeout_ms=200", cluster.url()))?;
    let error = store
        .write_rows(&view(), vec![row(1, 1, None, 1)], true)
        .block()
        .expect_err("no replica");
    assert_eq!(error.code(), ErrorCode::Unavailable);
    assert!(error.to_string().contains("replicas=1"), "{error}");
    let plain = RedisStore::open(&cluster.url())?;
    assert!(
        plain
            .write_rows(&view(), vec![row(1, 2, None, 2)], true)
            .block()?
            .written
            == 1
    );
    Ok(())
}

/// Primaries that lost the Function library (flushed, or added after the store opened) get
/// it again on the first write that needs it.
#[test]
fn primaries_without_the_functions_get_them_again() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let store = RedisStore::open(&cluster.url())?;
    for port in &cluster.ports {
        assert_eq!(cluster.cli(*port, &["FUNCTION", "FLUSH"])?, "OK");
    }
    let rows: Vec<Row> = (0..30).map(|id| row(id, 5, None, id)).collect();
    assert_eq!(
        store
            .write_rows(&view(), rows.clone(), true)
            .block()?
            .written,
        30
    );
    assert_eq!(stored(&store, 29)?, Some((5, None, Value::Int64(29))));
    assert_eq!(store.newest_event("trips").block()?, Some(5));
    Ok(())
}

#[test]
fn stored_rows_are_the_rocksdb_layout() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let store = RedisStore::open(&cluster.url())?;
    store
        .write_rows(&view(), vec![row(7, 42, Some(43), 5)], true)
        .block()?;
    let read = store
        .read_rows(&view(), &[vec![KeyValue::Int64(7)]])
        .block()?;
    let want = StoredRow {
        event_ts: 42,
        created_ts: Some(43),
        view_version: view().version,
        values: row(7, 42, Some(43), 5).values,
    };
    assert_eq!(read, vec![Some(Arc::new(want))]);
    Ok(())
}

/// Two Quiver replicas over one Redis Cluster: what replica A materializes, replica B serves
/// (the consistency invariant against the reference, read on B); a push on B is served by A;
/// concurrent pushes on both leave the greatest row per key.
#[tokio::test]
async fn two_replicas_serve_one_online_store() -> anyhow::Result<()> {
    use super::consistency::{HOUR, T, TTL_HOURS, generated, reference};
    use super::fixture::{TestRow, materialize, setup};
    use super::online::{push_request, read_a};
    use quiver_integration_tests::{ManualClock, TestServer};

    let cluster = RedisCluster::start(3)?;
    let url = cluster.url();
    let replica = |url: String| {
        let dir = tempfile::tempdir();
        async move {
            TestServer::start_with(dir?, ManualClock::new(T), move |options| {
                options.online_store = Some(url)
            })
            .await
        }
    };
    let (a, b) = (replica(url.clone()).await?, replica(url).await?);
    let (mut on_a, mut on_b) = (a.clients().await?, b.clients().await?);
    let rows = generated();
    // Each replica keeps its own registry until the registry moves to object storage.
    setup(&a, &mut on_a, &rows, &format!("{TTL_HOURS}h")).await?;
    setup(&b, &mut on_b, &rows, &format!("{TTL_HOURS}h")).await?;
    materialize(&mut on_a, T - 100 * HOUR, T + 1).await?;

    let ids: Vec<i64> = (0..300).chain(1_000..1_003).chain([5_000]).collect();
    let want: Vec<Option<i64>> = ids.iter().map(|id| reference(&rows, *id, T)).collect();
    let from_b: Vec<Option<i64>> = read_a(&mut on_b, ids.clone())
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    assert_eq!(from_b, want, "replica B serves what replica A materialized");

    // Concurrent pushes to one key through both replicas: the greatest row stays.
    let push = |event_ts: i64, a_value: i64| {
        push_request(&[TestRow {
            user_id: 9_000,
            event_ts,
            created_ts: event_ts,
            a: a_value,
            b: None,
            s: String::new(),
        }])
    };
    let (mut push_a, mut push_b) = (on_a.online.clone(), on_b.online.clone());
    let through_a = tokio::spawn(async move {
        for i in 0..40 {
            push_a.push(push(T - 2 * i * 1_000, 2 * i)).await?;
        }
        anyhow::Ok(())
    });
    let through_b = tokio::spawn(async move {
        for i in 0..40 {
            push_b
                .push(push(T - (2 * i + 1) * 1_000, 2 * i + 1))
                .await?;
        }
        anyhow::Ok(())
    });
    through_a.await??;
    through_b.await??;
    for clients in [&mut on_a, &mut on_b] {
        assert_eq!(
            read_a(clients, vec![9_000]).await?[0].1,
            Some(0),
            "the newest push (event T)"
        );
    }
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// `expire_after_ttl=true`: a row leaves Redis when it leaves its view's TTL (one written
/// already outside it is not kept at all); without it, rows stay and TTL is a read-time rule.
#[test]
fn rows_expire_with_their_ttl_only_when_asked() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let second = 1_000_000;
    let view = quiver_core::ResolvedView {
        ttl: 2 * second,
        ..view()
    };
    let now = chrono::Utc::now().timestamp_micros();
    let expiring = RedisStore::open(&format!("{}?expire_after_ttl=true", cluster.url()))?;
    let kept = RedisStore::open(&cluster.url())?;
    let fresh_and_stale = [row(1, now, None, 1), row(2, now - 10 * second, None, 2)];
    expiring
        .write_rows(&view, fresh_and_stale.to_vec(), true)
        .block()?;
    kept.write_rows(&view, vec![row(3, now - 10 * second, None, 3)], true)
        .block()?;
    let present = |ids: &[i64]| -> anyhow::Result<Vec<bool>> {
        let keys: Vec<Vec<KeyValue>> = ids.iter().map(|id| vec![KeyValue::Int64(*id)]).collect();
        Ok(kept
            .read_rows(&view, &keys)
            .block()?
            .iter()
            .map(Option::is_some)
            .collect())
    };
    assert_eq!(present(&[1, 2, 3])?, [true, false, true]);
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(
        present(&[1, 2, 3])?,
        [false, false, true],
        "row 1 left with its TTL"
    );
    Ok(())
}

/// `max_connections=1`: concurrent callers take turns on the one connection, and all succeed.
#[test]
fn callers_beyond_max_connections_wait_their_turn() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let store = RedisStore::open(&format!("{}?max_connections=1", cluster.url()))?;
    store
        .write_rows(&view(), vec![row(1, 10, None, 1)], true)
        .block()?;
    std::thread::scope(|scope| {
        let readers: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    (0..20).try_for_each(|_| {
                        anyhow::ensure!(stored(&store, 1)?.is_some(), "row 1");
                        anyhow::Ok(())
                    })
                })
            })
            .collect();
        readers.into_iter().try_for_each(|reader| {
            reader
                .join()
                .map_err(|_| anyhow::anyhow!("a reader panicked"))?
        })
    })
}
