//! How replicas coordinate through the online store: watermarks moved only by the fence
//! (`quiver_core::semantics::watermark_advances`, the reference) and leases, alike on Redis
//! (the Function library) and RocksDB; a view leased elsewhere is refused; and incremental
//! runs with `--materialize-lookback` write again rows a store lost.

use std::time::Duration;

use quiver_core::online_store::{Lease, OnlineStore};
use quiver_core::semantics::watermark_advances;
use quiver_core::types::KeyType;
use quiver_integration_tests::Block;
use quiver_integration_tests::redis_cluster::RedisCluster;
use quiver_online::RocksStore;
use quiver_redis::RedisStore;
use rand::{Rng, SeedableRng};

fn views() -> Vec<quiver_core::ResolvedView> {
    ["trips", "spend", "clicks", "a_b"]
        .iter()
        .flat_map(|name| {
            ["f1", "f2"].map(|fingerprint| quiver_core::ResolvedView {
                fingerprint: fingerprint.into(),
                ..quiver_core::testdata::view(name, &[("id", KeyType::Int64)], &[])
            })
        })
        .collect()
}

/// Random advances over bounds that differ only past 2^53 and at the ends of i64: both
/// stores move exactly when the rule says, to the same watermark, per view definition.
#[test]
fn watermarks_move_only_by_the_rule_on_both_stores() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let redis = RedisStore::open(&cluster.url())?;
    let dir = tempfile::tempdir()?;
    let rocks = RocksStore::open(dir.path())?;
    let stores: [&dyn OnlineStore; 2] = [&redis, &rocks];
    let big = 1i64 << 53;
    let bounds = [
        i64::MIN,
        i64::MIN + 1,
        -big - 1,
        -1,
        0,
        1,
        big,
        big + 1,
        big + 2,
        i64::MAX - 1,
        i64::MAX,
    ];
    let views = views();
    let mut model = vec![None; views.len()];
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut moves = 0;
    for step in 0..600 {
        let v = rng.random_range(0..views.len());
        let start = bounds[rng.random_range(0..bounds.len())];
        let end = bounds[rng.random_range(0..bounds.len())];
        let want = watermark_advances(model[v], start, end);
        if want {
            model[v] = Some(end);
            moves += 1;
        }
        for store in stores {
            let name = store.backend();
            assert_eq!(
                store.advance_watermark(&views[v], start, end).block()?,
                want,
                "{name} step {step}: {start}..{end} over {:?}",
                model[v]
            );
            assert_eq!(
                store.watermark(&views[v]).block()?,
                model[v],
                "{name} step {step}"
            );
        }
    }
    assert!(moves > 20, "the sequence moved watermarks {moves} times");
    Ok(())
}

#[test]
fn leases_have_one_holder_until_released_or_expired_on_both_stores() -> anyhow::Result<()> {
    let cluster = RedisCluster::start(3)?;
    let redis = RedisStore::open(&cluster.url())?;
    let dir = tempfile::tempdir()?;
    let rocks = RocksStore::open(dir.path())?;
    let long = Duration::from_secs(60);
    for store in [&redis as &dyn OnlineStore, &rocks] {
        let name = store.backend();
        assert_eq!(
            store.acquire_lease("m/a", "r1", long).block()?,
            Lease::Acquired,
            "{name}"
        );
        assert_eq!(
            store.acquire_lease("m/a", "r2", long).block()?,
            Lease::HeldBy("r1".into()),
            "{name}"
        );
        assert_eq!(
            store.acquire_lease("m/b", "r2", long).block()?,
            Lease::Acquired,
            "{name}"
        );
        assert_eq!(
            store.acquire_lease("m/a", "r1", long).block()?,
            Lease::Acquired,
            "{name}: renewal"
        );
        assert!(store.renew_lease("m/a", "r1", long).block()?, "{name}");
        assert!(
            !store.renew_lease("m/a", "r2", long).block()?,
            "{name}: not the holder"
        );
        store.release_lease("m/a", "r2").block()?;
        assert_eq!(
            store.acquire_lease("m/a", "r2", long).block()?,
            Lease::HeldBy("r1".into()),
            "{name}: released by a non-holder"
        );
        store.release_lease("m/a", "r1").block()?;
        assert_eq!(
            store.acquire_lease("m/a", "r2", long).block()?,
            Lease::Acquired,
            "{name}"
        );
        assert_eq!(
            store
                .acquire_lease("m/c", "r1", Duration::from_millis(100))
                .block()?,
            Lease::Acquired
        );
        std::thread::sleep(Duration::from_secs(1));
        assert!(
            !store.renew_lease("m/c", "r1", long).block()?,
            "{name}: an expired lease is not renewed"
        );
        assert_eq!(
            store.acquire_lease("m/c", "r2", long).block()?,
            Lease::Acquired,
            "{name}: expired"
        );
    }
    Ok(())
}

/// A view whose lease another replica holds is refused (naming the holder) until the lease
/// is released. Then, with every online row lost (as a failover can lose them) but the
/// watermark kept, a run over what an incremental run reads without look-back writes
/// nothing back, and an incremental run with `--materialize-lookback` restores every row the
/// reference serves.
#[tokio::test]
async fn a_leased_view_is_refused_and_lookback_restores_lost_rows() -> anyhow::Result<()> {
    use super::consistency::{HOUR, T, TTL_HOURS, generated, reference};
    use super::fixture::{materialize, run_materialization, setup};
    use super::online::read_a;
    use quiver_integration_tests::{ManualClock, TestServer};
    use quiver_proto::v1;

    let cluster = RedisCluster::start(3)?;
    let url = cluster.url();
    let server = TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T), |options| {
        options.online_store = Some(url);
        options.replica.materialize_lookback = Duration::from_secs(100 * 3_600);
    })
    .await?;
    let mut clients = server.clients().await?;
    let rows = generated();
    setup(&server, &mut clients, &rows, &format!("{TTL_HOURS}h")).await?;
    let incremental = |end_micros| v1::StartMaterializationRequest {
        views: vec![],
        start_micros: 0,
        end_micros,
        incremental: true,
    };

    let store = RedisStore::open(&cluster.url())?;
    let (lease, holder) = ("materialize/stats", "elsewhere-7/mat-1");
    assert_eq!(
        store
            .acquire_lease(lease, holder, Duration::from_secs(60))
            .await?,
        Lease::Acquired
    );
    let refused = run_materialization(&mut clients, incremental(T + 1)).await;
    let status = refused
        .err()
        .and_then(|e| e.downcast::<tonic::Status>().ok())
        .ok_or_else(|| anyhow::anyhow!("a leased view was materialized"))?;
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert!(status.message().contains(holder), "{}", status.message());
    store.release_lease(lease, holder).await?;
    run_materialization(&mut clients, incremental(T + 1)).await?;

    let ids: Vec<i64> = (0..300).chain(1_000..1_003).chain([5_000]).collect();
    let want: Vec<Option<i64>> = ids.iter().map(|id| reference(&rows, *id, T)).collect();
    let served = |clients: &mut quiver_integration_tests::Clients| {
        let (mut clients, ids) = (clients.clone(), ids.clone());
        async move {
            let read = read_a(&mut clients, ids).await?;
            anyhow::Ok(read.into_iter().map(|(_, a)| a).collect::<Vec<_>>())
        }
    };
    assert_eq!(served(&mut clients).await?, want);

    let lost = cluster.delete_matching("q{*")?;
    assert!(lost > 200, "{lost} rows deleted");
    materialize(&mut clients, T + 1, T + 2).await?;
    assert!(
        served(&mut clients).await?.iter().all(Option::is_none),
        "a run from the watermark does not see the loss"
    );
    let job = run_materialization(&mut clients, incremental(T + 2)).await?;
    // The run over [T + 1, T + 2) moved the watermark to T + 2.
    assert_eq!(job.views[0].start_micros, T + 2 - 100 * HOUR, "{job:?}");
    assert_eq!(
        served(&mut clients).await?,
        want,
        "the look-back restored the rows"
    );
    server.stop().await?;
    Ok(())
}
