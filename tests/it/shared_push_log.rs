//! A push log in object storage (a real S3-compatible server, `moto`, on loopback) shared by
//! two replicas: pushes through either are in both replicas' training joins, which agree
//! with a reference computed from what the clients did; exact ties resolve by replica, then
//! each replica's append order; both replicas merge their own objects, and the joins still
//! agree afterwards.

use std::time::{Duration, Instant};

use quiver_integration_tests::moto::Moto;
use quiver_integration_tests::{ManualClock, TestServer};

use super::consistency::{T, export_a_at};
use super::fixture::{TestRow, setup};
use super::online::push_request;

const BUCKET: &str = "quiver-push-log";
const USERS: i64 = 4;
const ROUNDS: i64 = 12;

async fn replica(moto: &Moto, id: &str) -> anyhow::Result<TestServer> {
    let (options, id) = (moto.options(), id.to_string());
    TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T), move |o| {
        o.push_log_dir = Some(format!("s3://{BUCKET}/log"));
        o.push_log_compaction = Some(Duration::from_millis(100));
        o.replica.id = id;
        o.files.object_store_options = options;
    })
    .await
}

/// `a` of a push: the replica that took it (1 or 2), its round and user.
fn code(replica: i64, round: i64, user: i64) -> i64 {
    replica * 10_000 + round * 100 + user
}

/// Pushes every user once per round through `server`, one push at a time, every row at the
/// same event and created time (so every push of a user ties with every other).
async fn push_rounds(server: &TestServer, replica: i64) -> anyhow::Result<()> {
    let mut clients = server.clients().await?;
    for round in 0..ROUNDS {
        for user in 0..USERS {
            let row = tied(user, code(replica, round, user));
            clients.online.push(push_request(&[row])).await?;
        }
    }
    Ok(())
}

/// `quiver_push_log_merged_files_total` of `server`.
async fn merged_files(server: &TestServer) -> anyhow::Result<f64> {
    let (_, metrics) = server.http_get("/metrics").await?;
    Ok(metrics
        .lines()
        .find_map(|line| line.strip_prefix("quiver_push_log_merged_files_total "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_a_push_log_in_object_storage() -> anyhow::Result<()> {
    let moto = Moto::start()?;
    moto.create_bucket(BUCKET)?;
    let (a, b) = (
        replica(&moto, "replica-a").await?,
        replica(&moto, "replica-b").await?,
    );
    let (mut clients_a, mut clients_b) = (a.clients().await?, b.clients().await?);
    // The source holds an older row per user; the pushes tie above it.
    let source: Vec<TestRow> = (0..USERS)
        .map(|user| TestRow {
            user_id: user,
            event_ts: T - 2_000_000,
            created_ts: T - 2_000_000,
            a: -1,
            b: None,
            s: String::new(),
        })
        .collect();
    setup(&a, &mut clients_a, &source, "0").await?;
    setup(&b, &mut clients_b, &source, "0").await?;
    let (pushed_a, pushed_b) = tokio::join!(push_rounds(&a, 1), push_rounds(&b, 2));
    pushed_a?;
    pushed_b?;
    // Every user's last push through B: B's objects sort after A's, and B's own pushes
    // (one client, one at a time) in the order they were made.
    let want: Vec<Option<i64>> = (0..USERS).map(|u| Some(code(2, ROUNDS - 1, u))).collect();
    let users: Vec<i64> = (0..USERS).collect();
    let when = "as pushed";
    for (name, server, clients) in [("A", &a, &mut clients_a), ("B", &b, &mut clients_b)] {
        let joined = export_a_at(server, clients, &users, T).await?.1;
        assert_eq!(joined, want, "the join on replica {name} {when}");
    }

    // Each replica merges its own objects (48 single-row pushes each, at least 8 per run).
    let deadline = Instant::now() + Duration::from_secs(60);
    while merged_files(&a).await? < 8.0 || merged_files(&b).await? < 8.0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the push logs were not compacted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let when = "after compaction";
    for (name, server, clients) in [("A", &a, &mut clients_a), ("B", &b, &mut clients_b)] {
        let joined = export_a_at(server, clients, &users, T).await?.1;
        assert_eq!(joined, want, "the join on replica {name} {when}");
    }
    // A restarted replica reads every object, and its pushes after the restart come after
    // its earlier ones: a tie between the two keeps the later.
    let late = USERS;
    clients_a
        .online
        .push(push_request(&[tied(late, 1)]))
        .await?;
    a.stop().await?;
    let a = replica(&moto, "replica-a").await?;
    let mut clients_a = a.clients().await?;
    setup(&a, &mut clients_a, &source, "0").await?;
    clients_a
        .online
        .push(push_request(&[tied(late, 2)]))
        .await?;
    let mut want_all = want.clone();
    want_all.push(Some(2));
    let all: Vec<i64> = (0..=late).collect();
    let joined = export_a_at(&a, &mut clients_a, &all, T).await?.1;
    assert_eq!(joined, want_all, "the join on replica A after a restart");
    let joined = export_a_at(&b, &mut clients_b, &all, T).await?.1;
    assert_eq!(joined, want_all, "the join on replica B after A's restart");
    a.stop().await?;
    b.stop().await?;
    Ok(())
}

/// A pushed row of `user` with `a`, at the tests' one event and created time.
fn tied(user: i64, a: i64) -> TestRow {
    TestRow {
        user_id: user,
        event_ts: T - 1_000_000,
        created_ts: T - 1_000_000,
        a,
        b: None,
        s: String::new(),
    }
}

/// A server whose data directory holds pushes logged before `--push-log-dir` refuses to
/// start with it (joins on the shared log would no longer read them), naming the directory
/// and what to do.
#[tokio::test]
async fn a_local_push_log_must_be_moved_before_sharing() -> anyhow::Result<()> {
    let server = TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T), |_| {}).await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[tied(1, 1)], "0").await?;
    clients.online.push(push_request(&[tied(1, 2)])).await?;
    let (dir, clock) = server.stop().await?;
    let shared = dir.path().join("shared");
    // A start that fails ends the server task: stopping it returns the error.
    let refused = TestServer::start_with(dir, clock, move |o| {
        o.push_log_dir = Some(shared.to_string_lossy().into_owned());
        o.replica.id = "replica-a".into();
    })
    .await?;
    let error = refused
        .stop()
        .await
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap_or_default();
    assert!(
        error.contains("push-log file(s) written without --push-log-dir")
            && error.contains("copy them to"),
        "{error}"
    );
    Ok(())
}
