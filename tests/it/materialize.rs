//! Materialization: windows, incremental runs from the watermark, idempotence.

use futures::StreamExt;
use quiver_integration_tests::{Clients, TestServer};
use quiver_proto::v1;

use super::fixture::{TestRow, materialize, setup};
use super::online::read_a;

const HOUR: i64 = 3_600_000_000;
const T0: i64 = 1_800_000_000_000_000;

pub(super) async fn incremental(clients: &mut Clients, end: i64) -> anyhow::Result<v1::Job> {
    let job = clients
        .jobs
        .start_materialization(v1::StartMaterializationRequest {
            views: vec!["stats".into()],
            start_micros: 0,
            end_micros: end,
            incremental: true,
        })
        .await?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("no job"))?;
    let mut updates = clients
        .jobs
        .watch_job(v1::WatchJobRequest { id: job.id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(update) = updates.next().await {
        last = Some(update?);
    }
    last.ok_or_else(|| anyhow::anyhow!("no update"))
}

#[tokio::test]
async fn incremental_runs_resume_from_the_watermark_and_reruns_are_idempotent() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    // User 1 has a row per hour over [T0 - 4h, T0]; `a` = hours since T0 - 4h.
    let rows: Vec<TestRow> = (0..=4)
        .map(|h| TestRow {
            user_id: 1,
            event_ts: T0 - 4 * HOUR + h * HOUR,
            created_ts: T0,
            a: h,
            b: None,
            s: String::new(),
        })
        .collect();
    setup(&server, &mut clients, &rows, "0").await?;
    server.clock.set(T0 + HOUR);

    let first = incremental(&mut clients, T0 - 2 * HOUR).await?;
    assert_eq!(
        first.state,
        v1::JobState::Succeeded as i32,
        "{}",
        first.error
    );
    assert_eq!(
        first.rows_scanned, 2,
        "rows at T0-4h and T0-3h: end is exclusive"
    );
    assert_eq!(read_a(&mut clients, vec![1]).await?[0].1, Some(1));

    let second = incremental(&mut clients, T0 + 1).await?;
    assert_eq!(
        second.views[0].start_micros,
        T0 - 2 * HOUR,
        "resumed from the watermark"
    );
    assert_eq!(second.rows_scanned, 3);
    assert_eq!(read_a(&mut clients, vec![1]).await?[0].1, Some(4));

    // Re-running an older window never moves the value backwards.
    materialize(&mut clients, T0 - 4 * HOUR, T0 - 2 * HOUR).await?;
    assert_eq!(read_a(&mut clients, vec![1]).await?[0].1, Some(4));
    materialize(&mut clients, T0 - 4 * HOUR, T0 + 1).await?;
    assert_eq!(read_a(&mut clients, vec![1]).await?[0].1, Some(4));

    // An incremental end before the watermark (now T0 + 1) is refused, naming `end`.
    let status = clients
        .jobs
        .start_materialization(v1::StartMaterializationRequest {
            views: vec!["stats".into()],
            start_micros: 0,
            end_micros: T0 - HOUR,
            incremental: true,
        })
        .await
        .expect_err("end before the watermark");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().contains("`end`") && status.message().contains("watermark"),
        "{}",
        status.message()
    );

    // An empty window is refused with the field named.
    let status = clients
        .jobs
        .start_materialization(v1::StartMaterializationRequest {
            views: vec![],
            start_micros: T0,
            end_micros: T0,
            incremental: false,
        })
        .await
        .expect_err("empty window");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    server.stop().await?;
    Ok(())
}
