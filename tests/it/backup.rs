//! Backups while serving: under a concurrent push load, every push acknowledged before the
//! backup started is in it, online (a server on the backup answers as the original did) and
//! in the push log (read back from the backup's Parquet files).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, Int64Array};
use futures::StreamExt;
use quiver_integration_tests::{ManualClock, TestServer};
use quiver_proto::v1;

use super::fixture::{TestRow, setup};
use super::online::{get_request, push_request};

const T0: i64 = 1_800_000_000_000_000;
const PUSHERS: i64 = 3;

fn row(user_id: i64) -> TestRow {
    TestRow {
        user_id,
        event_ts: T0,
        created_ts: T0,
        a: user_id * 10,
        b: Some(1.0),
        s: format!("u{user_id}"),
    }
}

/// Streams a backup into `dir`: the chunks' files, as the server named them.
async fn backup_into(server: &TestServer, dir: &Path) -> anyhow::Result<v1::BackupSummary> {
    let clients = server.clients().await?;
    let mut admin = v1::admin_service_client::AdminServiceClient::new(clients.channel);
    let mut stream = admin.backup(v1::BackupRequest {}).await?.into_inner();
    let mut files: BTreeSet<String> = BTreeSet::new();
    while let Some(message) = stream.next().await {
        match message?.item {
            Some(v1::backup_response::Item::Chunk(chunk)) => {
                anyhow::ensure!(!chunk.path.contains(".."), "{}", chunk.path);
                let path = dir.join(&chunk.path);
                if files.insert(chunk.path.clone()) {
                    std::fs::create_dir_all(path.parent().expect("a parent"))?;
                    std::fs::write(&path, &chunk.data)?;
                } else {
                    use std::io::Write;
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&path)?
                        .write_all(&chunk.data)?;
                }
                if chunk.last {
                    anyhow::ensure!(std::fs::metadata(&path)?.len() == chunk.size);
                    anyhow::ensure!(chunk.sha256.len() == 64);
                }
            }
            Some(v1::backup_response::Item::Summary(summary)) => {
                anyhow::ensure!(summary.files == files.len() as u64);
                return Ok(summary);
            }
            None => anyhow::bail!("empty message"),
        }
    }
    anyhow::bail!("no summary")
}

/// User ids in the push-log files of view `stats` under `data_dir`.
fn push_log_ids(data_dir: &Path) -> anyhow::Result<BTreeSet<i64>> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(data_dir.join("offline/stats"))? {
        let file = std::fs::File::open(entry?.path())?;
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?
            .build()?;
        for batch in reader {
            let batch = batch?;
            let column = batch
                .column_by_name("user_id")
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| anyhow::anyhow!("no user_id column"))?;
            ids.extend((0..column.len()).map(|i| column.value(i)));
        }
    }
    Ok(ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_push_load_holds_every_push_acknowledged_before_it_started()
-> anyhow::Result<()> {
    let server = TestServer::start_in(tempfile::tempdir()?, ManualClock::new(T0)).await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row(0)], "0").await?;

    let acked: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut pushers = Vec::new();
    for pusher in 0..PUSHERS {
        let (mut clients, acked, stop) = (clients.clone(), Arc::clone(&acked), Arc::clone(&stop));
        pushers.push(tokio::spawn(async move {
            let mut i = 1;
            while !stop.load(Ordering::Relaxed) {
                let id = pusher * 1_000_000 + i;
                clients.online.push(push_request(&[row(id)])).await?;
                acked
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .push((id, Instant::now()));
                i += 1;
            }
            anyhow::Ok(())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let backup_dir = tempfile::tempdir()?;
    let summary = backup_into(&server, &backup_dir.path().join("data")).await?;
    // Pushes go on while the backup streams, then stop.
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for pusher in pushers {
        pusher.await??;
    }
    let before: Vec<i64> = acked
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .iter()
        .filter(|(_, at)| *at < started)
        .map(|(id, _)| *id)
        .collect();
    assert!(
        before.len() >= PUSHERS as usize,
        "pushes before the backup: {}",
        before.len()
    );
    assert_eq!(summary.registry_version, 1);

    // The push log in the backup holds them all.
    let logged = push_log_ids(&backup_dir.path().join("data"))?;
    let missing: Vec<_> = before.iter().filter(|id| !logged.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "acknowledged, not in the backup's push log: {missing:?}"
    );
    // No staging copy stays behind in the original (it is removed on the blocking pool).
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(server.path("data/backups"))?.count() > 0 {
        assert!(Instant::now() < deadline, "the staging copy stayed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A server on the backup answers the reads as the original does.
    let original = clients
        .online
        .get_online_features(get_request(before.clone()))
        .await?
        .into_inner();
    let restored = TestServer::start_in(backup_dir, ManualClock::new(T0)).await?;
    let mut restored_clients = restored.clients().await?;
    let answer = restored_clients
        .online
        .get_online_features(get_request(before.clone()))
        .await?
        .into_inner();
    assert_eq!(answer.features, original.features);
    assert_eq!(answer.views, original.views);
    let present = v1::FeatureStatus::Present as i32;
    for column in &answer.features {
        assert!(
            column.statuses.iter().all(|s| *s == present),
            "{}",
            column.name
        );
    }
    restored.stop().await?;
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn one_backup_runs_at_a_time() -> anyhow::Result<()> {
    let server = TestServer::start_in(tempfile::tempdir()?, ManualClock::new(T0)).await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &[row(0)], "0").await?;
    // 16 pushes of 1 MiB of random hex each: the backup (push-log files and online rows,
    // about 16 MiB after compression) is far more than everything that buffers between the
    // file reader and the client (4 MiB of chunks, the HTTP/2 windows and send buffers), so
    // the stream stays open until the client reads it.
    for id in 1..=16 {
        let mut big = row(id);
        let mut bytes = vec![0u8; 1 << 19];
        rand::fill(&mut bytes[..]);
        big.s = quiver_core::fingerprint::hex(&bytes);
        clients.online.push(push_request(&[big])).await?;
    }
    let mut admin = v1::admin_service_client::AdminServiceClient::new(clients.channel);
    // The first stream is open and not read to its end: a second is refused.
    let mut first = admin.backup(v1::BackupRequest {}).await?.into_inner();
    assert!(first.next().await.is_some());
    let second = admin.backup(v1::BackupRequest {}).await.map(|_| ());
    assert_eq!(
        second.map_err(|s| s.code()),
        Err(tonic::Code::FailedPrecondition)
    );
    // Dropping the stream ends the backup and frees the slot.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match admin.backup(v1::BackupRequest {}).await {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                assert!(Instant::now() < deadline, "the slot was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => return Err(status.into()),
        }
    }
    server.stop().await?;
    Ok(())
}
