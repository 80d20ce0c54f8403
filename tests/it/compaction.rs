//! The server's push-log compaction: after many single-row pushes from concurrent writers
//! (exact ties between writers), the background task merges the files, and the training join at T equals
//! the online read at T (the consistency invariant) before, while and after it does.

use std::time::{Duration, Instant};

use quiver_integration_tests::{Clients, ManualClock, TestServer};

use super::consistency::{HOUR, T, export_a_at, generated};
use super::fixture::{TestRow, materialize, setup};
use super::online::{push_request, read_a};

const USERS: i64 = 12;

/// Feature `a` of the training join at T for users `0..USERS`.
async fn offline_at_t(
    server: &TestServer,
    clients: &mut Clients,
) -> anyhow::Result<Vec<Option<i64>>> {
    let ids: Vec<i64> = (0..USERS).collect();
    Ok(export_a_at(server, clients, &ids, T).await?.1)
}

fn push_log_files(server: &TestServer) -> anyhow::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(server.path("data/offline/stats"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        n += usize::from(name.ends_with(".parquet") && !name.starts_with('.'));
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_online_and_offline_equal_while_it_merges() -> anyhow::Result<()> {
    let server = TestServer::start_with(tempfile::tempdir()?, ManualClock::new(T), |o| {
        o.push_log_compaction = Some(Duration::from_millis(50))
    })
    .await?;
    let mut clients = server.clients().await?;
    setup(&server, &mut clients, &generated(), "3h").await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    // 4 writers x 15 single-row pushes, all at one created time; event times repeat, so rows
    // of every writer tie exactly on (event, created), and only their push-log positions
    // decide: online (the tie token each row keeps) as offline (file, then row order),
    // whatever order concurrent pushes reached the two in.
    let mut writers = Vec::new();
    for w in 0..4i64 {
        let mut clients = server.clients().await?;
        writers.push(tokio::spawn(async move {
            for i in 0..15i64 {
                let row = TestRow {
                    user_id: (w + i) % USERS,
                    event_ts: T - (i % 3) * 1_000_000,
                    created_ts: T - 1,
                    a: 1_000 * w + i,
                    b: None,
                    s: format!("w{w}"),
                };
                clients.online.push(push_request(&[row])).await?;
            }
            anyhow::Ok(())
        }));
    }
    for writer in writers {
        writer.await??;
    }
    let online: Vec<Option<i64>> = read_a(&mut clients, (0..USERS).collect())
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exports = 0;
    loop {
        // While compaction merges (and after): every export equals the online read.
        assert_eq!(offline_at_t(&server, &mut clients).await?, online);
        exports += 1;
        // 60 pushes made up to 60 files (concurrent pushes share files); fewer than a run (8)
        // are left once compaction caught up.
        let files = push_log_files(&server)?;
        if files < 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{files} push-log files left after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(exports >= 1);
    assert_eq!(offline_at_t(&server, &mut clients).await?, online);
    // The passes are counted: the merged files (at least one run of 8), and no failure.
    let (_, text) = server.http_get("/metrics").await?;
    let value = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    let merged = value("quiver_push_log_merged_files_total").unwrap_or(0.0);
    assert!(merged >= 8.0, "{merged} merged\n{text}");
    assert_eq!(
        value(r#"quiver_push_log_compactions_total{result="error"}"#),
        Some(0.0)
    );
    assert!(value(r#"quiver_push_log_compactions_total{result="ok"}"#).unwrap_or(0.0) >= 1.0);
    server.stop().await?;
    Ok(())
}
