//! Stored data follows the view's identity (SEMANTICS.md "Data generations"): pushes to a view
//! version land in its generation's push log, so a breaking change never leaves rows the new
//! definition cannot read, and watermarks belong to one definition, so incremental
//! materialization of a new source starts from the beginning.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int64Type};
use quiver_core::types::{ScalarType, ValueType};
use quiver_core::value::Value;
use quiver_integration_tests::{
    Clients, TestServer, apply, export_to_end, int64_column, named, timestamp_column, write_parquet,
};
use quiver_proto::v1;

use super::fixture::{TestRow, batch, setup};
use super::online::read_a;

const T0: i64 = 1_800_000_000_000_000;
const HOUR: i64 = 3_600_000_000;

/// A push-only view `clicks` with feature `n` of type `N_TYPE`, served by `clicks_model`
/// (latest version) and `clicks_v1` (pinned to version 1).
const PUSH_ONLY: &str = r#"kind: Entity
name: user
join_keys: [{name: user_id, type: int64}]
---
kind: Source
name: events
event_time: event_timestamp
push: true
---
kind: FeatureView
name: clicks
entities: [user]
source: events
ttl: 0
features: [{name: n, type: N_TYPE}]
---
kind: FeatureService
name: clicks_model
features: [{view: clicks}]
---
kind: FeatureService
name: clicks_v1
features: [{view: clicks@1}]
"#;

async fn apply_push_only(
    server: &TestServer,
    clients: &mut Clients,
    n_type: &str,
    force: bool,
) -> anyhow::Result<()> {
    let dir = server.path("repo");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("features.yaml"),
        PUSH_ONLY.replace("N_TYPE", n_type),
    )?;
    apply(clients, &dir, force).await?;
    Ok(())
}

/// Pushes one row (offline only) to `view` (`clicks` or `clicks@N`).
async fn push(clients: &mut Clients, view: &str, user: i64, n: Value) -> anyhow::Result<()> {
    let value_type = match n {
        Value::String(_) => ScalarType::String,
        _ => ScalarType::Int64,
    };
    clients
        .online
        .push(v1::PushRequest {
            target: Some(v1::push_request::Target::FeatureView(view.into())),
            columns: vec![
                named("user_id", int64_column(vec![user])),
                named("event_timestamp", timestamp_column(vec![T0])),
                named(
                    "n",
                    quiver_proto::convert::values_to_column(&[n], ValueType::scalar(value_type)),
                ),
            ],
            mode: v1::PushMode::Offline as i32,
        })
        .await?;
    Ok(())
}

/// Exports `service` for users 0 to 3 at `T0 + 1` and returns `n` per user, as text.
async fn export_n(
    server: &TestServer,
    clients: &mut Clients,
    service: &str,
) -> anyhow::Result<BTreeMap<i64, Option<String>>> {
    let labels = server.path("repo/labels.parquet");
    // Users 0..4 at T0 + 1 (user 0 has no rows anywhere).
    write_parquet(&labels, &[super::fixture::labels(4, T0 + 1)?])?;
    let output = format!("{service}.parquet");
    export_to_end(
        clients,
        v1::ExportRequest {
            selector: Some(v1::export_request::Selector::FeatureService(service.into())),
            labels_path: labels.to_string_lossy().into_owned(),
            output_path: output.clone(),
            overwrite: true,
            ..Default::default()
        },
    )
    .await?;
    let file = std::fs::File::open(server.path(&format!("data/exports/{output}")))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut out = BTreeMap::new();
    for batch in reader {
        let batch = batch?;
        let users = batch
            .column_by_name("user_id")
            .ok_or_else(|| anyhow::anyhow!("no user_id"))?
            .as_primitive::<Int64Type>()
            .clone();
        let n = batch
            .column_by_name("n")
            .ok_or_else(|| anyhow::anyhow!("no n"))?;
        let n = arrow::compute::cast(n, &DataType::Utf8)?;
        let n = n.as_string::<i32>();
        for i in 0..batch.num_rows() {
            out.insert(
                users.value(i),
                (!n.is_null(i)).then(|| n.value(i).to_string()),
            );
        }
    }
    Ok(out)
}

#[tokio::test]
async fn a_breaking_change_starts_a_new_push_log_and_old_versions_keep_theirs() -> anyhow::Result<()>
{
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    apply_push_only(&server, &mut clients, "int64", false).await?;
    push(&mut clients, "clicks", 1, Value::Int64(1)).await?;

    // Feature `n` becomes a string: breaking, forced. Version 2 starts its own push log.
    apply_push_only(&server, &mut clients, "string", true).await?;
    push(&mut clients, "clicks", 2, Value::String("two".into())).await?;
    // A push to the old version after the change goes to version 1's log, typed as it was.
    push(&mut clients, "clicks@1", 3, Value::Int64(3)).await?;
    let status = push(&mut clients, "clicks@1", 4, Value::String("x".into()))
        .await
        .expect_err("a string for version 1's int64 feature");
    let status = status
        .downcast_ref::<tonic::Status>()
        .ok_or_else(|| anyhow::anyhow!("{status}"))?;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    let latest = export_n(&server, &mut clients, "clicks_model").await?;
    assert_eq!(
        latest,
        BTreeMap::from([(0, None), (1, None), (2, Some("two".into())), (3, None)]),
        "version 2 reads only its own generation's rows"
    );
    let pinned = export_n(&server, &mut clients, "clicks_v1").await?;
    assert_eq!(
        pinned,
        BTreeMap::from([
            (0, None),
            (1, Some("1".into())),
            (2, None),
            (3, Some("3".into())),
        ]),
        "version 1 keeps reading its rows, including the push after the change"
    );

    // A compatible change (a new feature) keeps the generation: version 3 reads version 2's rows.
    let dir = server.path("repo");
    std::fs::write(
        dir.join("features.yaml"),
        PUSH_ONLY.replace(
            "[{name: n, type: N_TYPE}]",
            "[{name: n, type: string}, {name: m, type: int64}]",
        ),
    )?;
    apply(&mut clients, &dir, false).await?;
    let latest = export_n(&server, &mut clients, "clicks_model").await?;
    assert_eq!(latest.get(&2), Some(&Some("two".into())));
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn incremental_materialization_of_a_new_source_starts_from_the_beginning()
-> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let row = |user_id, event_ts, a| TestRow {
        user_id,
        event_ts,
        created_ts: event_ts,
        a,
        b: None,
        s: String::new(),
    };
    setup(&server, &mut clients, &[row(1, T0, 10)], "0").await?;
    server.clock.set(T0 + HOUR);
    let first = super::materialize::incremental(&mut clients, T0 + HOUR).await?;
    assert_eq!(first.rows_scanned, 1, "{}", first.error);

    // The view now reads another file, whose history lies before the watermark (T0 + 1h).
    let repo = server.path("repo");
    write_parquet(
        &repo.join("data/backfill.parquet"),
        &[batch(&[
            row(2, T0 - 5 * HOUR, 20),
            row(3, T0 - 4 * HOUR, 30),
        ])?],
    )?;
    let manifest = std::fs::read_to_string(repo.join("features.yaml"))?;
    std::fs::write(
        repo.join("features.yaml"),
        manifest.replace("data/stats.parquet", "data/backfill.parquet"),
    )?;
    apply(&mut clients, &repo, false).await?;

    let second = super::materialize::incremental(&mut clients, T0 + HOUR).await?;
    assert_eq!(
        second.state,
        v1::JobState::Succeeded as i32,
        "{}",
        second.error
    );
    assert_eq!(
        second.views[0].start_micros,
        i64::MIN,
        "a new definition has no watermark"
    );
    assert_eq!(second.rows_scanned, 2, "the new source's whole history");
    let read = read_a(&mut clients, vec![1, 2, 3]).await?;
    let values: Vec<Option<i64>> = read.iter().map(|(_, a)| *a).collect();
    assert_eq!(values, [Some(10), Some(20), Some(30)]);

    // The new definition's watermark then holds: the next run resumes from it.
    let third = super::materialize::incremental(&mut clients, T0 + 2 * HOUR).await?;
    assert_eq!(third.views[0].start_micros, T0 + HOUR);
    server.stop().await?;
    Ok(())
}
