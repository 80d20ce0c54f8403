//! A small feature project for online/offline tests: entity `user` (user_id int64), a
//! push-enabled Parquet source with created times, and view `stats` (a int64, b float64,
//! s string) with a chosen TTL, served by service `model`.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use quiver_integration_tests::{Clients, TestServer, apply, write_parquet};

pub(super) const MANIFEST: &str = r#"kind: Entity
name: user
join_keys: [{name: user_id, type: int64}]
---
kind: Source
name: stats_source
parquet: data/stats.parquet
event_time: event_timestamp
created_time: created
push: true
---
kind: FeatureView
name: stats
entities: [user]
source: stats_source
ttl: TTL
features: [{name: a, type: int64}, {name: b, type: float64}, {name: s, type: string}]
---
kind: FeatureService
name: model
features: [{view: stats}]
"#;

/// One source row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TestRow {
    pub user_id: i64,
    pub event_ts: i64,
    pub created_ts: i64,
    pub a: i64,
    pub b: Option<f64>,
    pub s: String,
}

pub(super) fn batch(rows: &[TestRow]) -> anyhow::Result<RecordBatch> {
    let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts(), false),
        Field::new("created", ts(), false),
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Float64, true),
        Field::new("s", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.user_id).collect::<Vec<_>>(),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.event_ts).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from(rows.iter().map(|r| r.created_ts).collect::<Vec<_>>())
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from(
            rows.iter().map(|r| r.a).collect::<Vec<_>>(),
        )),
        Arc::new(Float64Array::from(
            rows.iter().map(|r| r.b).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            rows.iter().map(|r| r.s.as_str()).collect::<Vec<_>>(),
        )),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// A label table for the `user` entity: user ids `0..n`, each at `at`.
pub(super) fn labels(n: i64, at: i64) -> anyhow::Result<RecordBatch> {
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new(
            "event_timestamp",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n)),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values((0..n).map(|_| at)).with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Writes the data and manifests and applies them.
pub(super) async fn setup(
    server: &TestServer,
    clients: &mut Clients,
    rows: &[TestRow],
    ttl: &str,
) -> anyhow::Result<()> {
    let dir = server.path("repo");
    write_parquet(&dir.join("data/stats.parquet"), &[batch(rows)?])?;
    std::fs::write(dir.join("features.yaml"), MANIFEST.replace("TTL", ttl))?;
    apply(clients, &dir, false).await?;
    Ok(())
}

/// Runs a materialization job to completion.
pub(super) async fn materialize(
    clients: &mut Clients,
    start: i64,
    end: i64,
) -> anyhow::Result<quiver_proto::v1::Job> {
    run_materialization(
        clients,
        quiver_proto::v1::StartMaterializationRequest {
            views: vec![],
            start_micros: start,
            end_micros: end,
            incremental: false,
        },
    )
    .await
}

/// Starts the materialization `request` asks for and watches it to its end: the last
/// update, which must be a success.
pub(super) async fn run_materialization(
    clients: &mut Clients,
    request: quiver_proto::v1::StartMaterializationRequest,
) -> anyhow::Result<quiver_proto::v1::Job> {
    use futures::StreamExt;
    use quiver_proto::v1;
    let job = clients
        .jobs
        .start_materialization(request)
        .await?
        .into_inner()
        .job
        .ok_or_else(|| anyhow::anyhow!("no job"))?;
    let mut stream = clients
        .jobs
        .watch_job(v1::WatchJobRequest { id: job.id })
        .await?
        .into_inner();
    let mut last = None;
    while let Some(update) = stream.next().await {
        last = Some(update?);
    }
    let last = last.ok_or_else(|| anyhow::anyhow!("no job update"))?;
    anyhow::ensure!(
        last.state == v1::JobState::Succeeded as i32,
        "job ended {:?}: {}",
        last.state,
        last.error
    );
    Ok(last)
}
