//! Training sets from the served-row log: label rows joined to what serving returned, by
//! request id and by keys and time, checked against the values the GetOnlineFeatures calls
//! themselves answered; a source rewritten after serving changes the recomputed export, not
//! the logged one.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};
use quiver_integration_tests::{Clients, TestServer, export_to_end, write_parquet};
use quiver_proto::v1;

use super::consistency::{HOUR, T, generated};
use super::fixture::{TestRow, batch, materialize};
use super::online::{a_of, get_request, push_request};
use super::skew::{pushed, setup_logged};

const SECOND: i64 = 1_000_000;

/// Serves `ids` at the server's time under request id `id`: feature `a` per user as answered
/// (None when not present).
async fn serve(
    clients: &mut Clients,
    ids: Vec<i64>,
    id: &str,
) -> anyhow::Result<HashMap<i64, Option<i64>>> {
    let mut request = tonic::Request::new(get_request(ids.clone()));
    request.metadata_mut().insert("x-request-id", id.parse()?);
    let response = clients.online.get_online_features(request).await?;
    assert_eq!(
        response
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some(id)
    );
    let a = a_of(&response.into_inner())?;
    Ok(ids
        .into_iter()
        .zip(a)
        .map(|(user, (_, a))| (user, a))
        .collect())
}

/// A label table: `user_id`, `request_id`, `event_timestamp` per row.
fn labels(rows: &[(i64, &str, i64)]) -> anyhow::Result<RecordBatch> {
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("request_id", DataType::Utf8, false),
        Field::new("event_timestamp", ts, false),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                .with_timezone("UTC"),
        ),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Runs a server-side export of `labels` to `name`; per output row (`a`, `served_at`).
async fn export(
    server: &TestServer,
    clients: &mut Clients,
    name: &str,
    from_served_log: Option<v1::ServedLogJoin>,
) -> anyhow::Result<Vec<(Option<i64>, Option<i64>)>> {
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: server.path("repo/labels.parquet").to_string_lossy().into(),
        output_path: format!("{name}.parquet"),
        from_served_log,
        ..Default::default()
    };
    let done = export_to_end(clients, request).await?;
    assert!(done.done);
    let file = std::fs::File::open(server.path(&format!("data/exports/{name}.parquet")))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch?;
        let a = batch.column_by_name("a").expect("a");
        let a = a.as_primitive::<Int64Type>();
        let served = batch.column_by_name("served_at").cloned();
        for i in 0..batch.num_rows() {
            let at = served.as_ref().and_then(|s| {
                let s = s.as_primitive::<TimestampMicrosecondType>();
                s.is_valid(i).then(|| s.value(i))
            });
            rows.push((a.is_valid(i).then(|| a.value(i)), at));
        }
    }
    Ok(rows)
}

fn by(join_on: &str, max_age_micros: i64) -> Option<v1::ServedLogJoin> {
    Some(v1::ServedLogJoin {
        join_on: join_on.into(),
        max_age_micros,
        ..Default::default()
    })
}

#[tokio::test]
async fn a_training_set_from_the_log_holds_what_serving_returned() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let mut rows = generated();
    setup_logged(&server, &mut clients, &rows).await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    // Two requests 10 s apart; between them users 1 and 2 get new online values.
    server.clock.set(T);
    let first = serve(&mut clients, (0..6).collect(), "req-1").await?;
    let newer = |user_id, a| TestRow {
        event_ts: T + 5 * SECOND,
        created_ts: T + 5 * SECOND,
        ..pushed(user_id, a)
    };
    let mut online = push_request(&[newer(1, 111), newer(2, 222)]);
    online.mode = v1::PushMode::Online as i32;
    clients.online.push(online).await?;
    server.clock.set(T + 10 * SECOND);
    let second = serve(&mut clients, vec![1, 2, 3], "req-2").await?;
    assert_ne!(first[&1], second[&1], "the push changed what was served");
    // Rewrite every source row: a recomputed join now differs from what was served.
    for row in &mut rows {
        row.a += 1_000_000;
    }
    write_parquet(&server.path("repo/data/stats.parquet"), &[batch(&rows)?])?;

    let label_rows = [
        (1, "req-1", T + 5 * SECOND),
        (1, "req-2", T + 20 * SECOND),
        (4, "req-1", T + 20 * SECOND),
        (2, "req-2", T - SECOND),
        (4, "req-2", T + 5 * SECOND), // user 4 was not in req-2
        (3, "nope", T + 20 * SECOND),
        (3, "req-2", T + 10 * SECOND), // exactly at serving time
    ];
    write_parquet(&server.path("repo/labels.parquet"), &[labels(&label_rows)?])?;
    let (at_first, at_second) = (Some(T), Some(T + 10 * SECOND));

    let by_request = export(&server, &mut clients, "by_request", by("request_id", 0)).await?;
    assert_eq!(
        by_request,
        [
            (first[&1], at_first),
            (second[&1], at_second),
            (first[&4], at_first),
            (second[&2], at_second),
            (None, None),
            (None, None),
            (second[&3], at_second),
        ]
    );
    let by_keys = export(&server, &mut clients, "by_keys", by("keys", 0)).await?;
    assert_eq!(
        by_keys,
        [
            (first[&1], at_first),
            (second[&1], at_second),
            (first[&4], at_first),
            (None, None), // before any serving
            (first[&4], at_first),
            (second[&3], at_second),
            (second[&3], at_second),
        ]
    );
    // Within 12 s of the label time: the first request (20 s before) is too old.
    let fresh = export(&server, &mut clients, "fresh", by("keys", 12 * SECOND)).await?;
    assert_eq!(fresh[1], (second[&1], at_second));
    assert_eq!(fresh[2], (None, None));
    assert_eq!(fresh[4], (first[&4], at_first));

    // The recomputed join sees the rewritten source, not what was served.
    let recomputed = export(&server, &mut clients, "recomputed", None).await?;
    assert_eq!(recomputed[0].0, first[&1].map(|a| a + 1_000_000));
    server.stop().await?;
    Ok(())
}

#[tokio::test]
async fn exports_from_the_log_refuse_what_they_cannot_do() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    setup_logged(&server, &mut clients, &generated()).await?;
    write_parquet(
        &server.path("repo/labels.parquet"),
        &[labels(&[(1, "r", T)])?],
    )?;
    let labels_path: String = server.path("repo/labels.parquet").to_string_lossy().into();
    let base = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels_path.clone(),
        output_path: "x.parquet".into(),
        from_served_log: by("keys", 0),
        ..Default::default()
    };
    let cases = [
        (
            v1::ExportRequest {
                selector: Some(v1::export_request::Selector::Features(v1::FeatureRefs {
                    refs: vec!["stats:a".into()],
                })),
                ..base.clone()
            },
            "`features`",
        ),
        (
            v1::ExportRequest {
                from_served_log: by("sideways", 0),
                ..base.clone()
            },
            "`from_served_log.join_on`",
        ),
        (
            v1::ExportRequest {
                from_served_log: by("request_id", 5),
                ..base.clone()
            },
            "`from_served_log.max_age_micros`",
        ),
        (
            v1::ExportRequest {
                as_known_at: true,
                ..base.clone()
            },
            "`as_known_at`",
        ),
        (
            v1::ExportRequest {
                start_micros: 5,
                end_micros: 5,
                ..base.clone()
            },
            "`start_micros`",
        ),
    ];
    for (request, field) in cases {
        let status = export_to_end(&mut clients, request)
            .await
            .expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(field), "{status:?}");
    }
    // Labels without a request id column, joined by request id: the column is named.
    write_parquet(
        &server.path("repo/labels.parquet"),
        &[super::fixture::labels(3, T)?],
    )?;
    let status = export_to_end(
        &mut clients,
        v1::ExportRequest {
            from_served_log: by("request_id", 0),
            ..base.clone()
        },
    )
    .await
    .expect_err("no request id");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("`request_id`"), "{status:?}");
    server.stop().await?;
    Ok(())
}
