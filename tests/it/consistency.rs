//! The consistency invariant (SEMANTICS.md): with every row up to T materialized, an online
//! read at now = T equals the point-in-time join at t = T for every key. Both paths are
//! compared against an independent reference computed here from the raw rows.

use std::sync::Arc;

use arrow::array::{Array, Int64Array, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use quiver_integration_tests::{TestServer, write_parquet};
use quiver_proto::v1;
use rand::{Rng, SeedableRng};

use super::fixture::{TestRow, materialize, setup};
use super::online::read_a;

pub(super) const HOUR: i64 = 3_600_000_000;
pub(super) const T: i64 = 1_800_000_000_000_000;
pub(super) const TTL_HOURS: i64 = 3;

/// The reference: a plain scan for the greatest (event, created) among candidates.
pub(super) fn reference(rows: &[TestRow], user_id: i64, t: i64) -> Option<i64> {
    rows.iter()
        .filter(|r| r.user_id == user_id && r.event_ts <= t && r.event_ts >= t - TTL_HOURS * HOUR)
        .max_by_key(|r| (r.event_ts, r.created_ts))
        .map(|r| r.a)
}

pub(super) fn generated() -> Vec<TestRow> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut rows = Vec::new();
    for user_id in 0..300i64 {
        let n = rng.random_range(0..8);
        for i in 0..n {
            // Times spread over [T - 8h, T + 1h]; a third share an event time with a
            // neighbour and differ only by created time.
            let event = if i > 0 && rng.random_range(0..3) == 0 {
                rows.last().map(|r: &TestRow| r.event_ts).unwrap_or(T)
            } else {
                T - 8 * HOUR + rng.random_range(0..9 * HOUR)
            };
            let created = event + rng.random_range(0..1_000_000) + i;
            rows.push(TestRow {
                user_id,
                event_ts: event,
                created_ts: created,
                a: rows.len() as i64,
                b: None,
                s: String::new(),
            });
        }
    }
    // Rows exactly on both TTL bounds.
    rows.push(TestRow {
        user_id: 1_000,
        event_ts: T - TTL_HOURS * HOUR,
        created_ts: T,
        a: -1,
        b: None,
        s: "lower".into(),
    });
    rows.push(TestRow {
        user_id: 1_001,
        event_ts: T,
        created_ts: T,
        a: -2,
        b: None,
        s: "upper".into(),
    });
    rows.push(TestRow {
        user_id: 1_002,
        event_ts: T - TTL_HOURS * HOUR - 1,
        created_ts: T,
        a: -3,
        b: None,
        s: "outside".into(),
    });
    rows
}

#[tokio::test]
async fn online_at_t_equals_point_in_time_join_at_t() -> anyhow::Result<()> {
    let server = TestServer::start().await?;
    let mut clients = server.clients().await?;
    let rows = generated();
    setup(&server, &mut clients, &rows, &format!("{TTL_HOURS}h")).await?;
    materialize(&mut clients, T - 100 * HOUR, T + 1).await?;
    server.clock.set(T);

    let ids: Vec<i64> = (0..300).chain(1_000..1_003).chain([5_000]).collect();
    let want: Vec<Option<i64>> = ids.iter().map(|id| reference(&rows, *id, T)).collect();

    // Online at now = T.
    let online = read_a(&mut clients, ids.clone()).await?;
    let online_values: Vec<Option<i64>> = online.iter().map(|(_, v)| *v).collect();
    assert_eq!(
        online_values, want,
        "online read at T differs from the reference"
    );
    for ((status, _), id) in online.iter().zip(&ids) {
        let stored = rows.iter().any(|r| r.user_id == *id && r.event_ts <= T);
        let expected = match (reference(&rows, *id, T), stored) {
            (Some(_), _) => v1::FeatureStatus::Present,
            (None, true) => v1::FeatureStatus::OutsideMaxAge,
            (None, false) => v1::FeatureStatus::NotFound,
        };
        assert_eq!(*status, expected as i32, "user {id}");
    }

    // Offline: one label per key at t = T, exported through the server.
    let (offline_ids, offline_values) = export_a_at(&server, &mut clients, &ids, T).await?;
    assert_eq!(offline_ids, ids, "one output row per label, in label order");
    assert_eq!(
        offline_values, want,
        "the point-in-time join at T differs from the reference"
    );
    server.stop().await?;
    Ok(())
}

/// The training export of service `model` for one label per id at `t` (written to
/// `labels.parquet`, exported to `train.parquet`): the output's (`user_id`, `a`) columns.
pub(super) async fn export_a_at(
    server: &TestServer,
    clients: &mut quiver_integration_tests::Clients,
    ids: &[i64],
    t: i64,
) -> anyhow::Result<(Vec<i64>, Vec<Option<i64>>)> {
    let labels_path = server.path("labels.parquet");
    let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    let schema = Schema::new(vec![
        Field::new("user_id", DataType::Int64, false),
        Field::new("event_timestamp", ts, false),
    ]);
    let labels = RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(TimestampMicrosecondArray::from(vec![t; ids.len()]).with_timezone("UTC")),
        ],
    )?;
    write_parquet(&labels_path, &[labels])?;
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: labels_path.to_string_lossy().into_owned(),
        output_path: "train.parquet".into(),
        overwrite: true,
        ..Default::default()
    };
    quiver_integration_tests::export_to_end(clients, request).await?;
    let file = std::fs::File::open(server.path("data/exports/train.parquet"))?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    let (mut out_ids, mut values) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch?;
        let column = |name: &str| {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .ok_or_else(|| anyhow::anyhow!("no column {name}"))
        };
        let (id, a) = (column("user_id")?, column("a")?);
        out_ids.extend(id.values().iter().copied());
        values.extend((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))));
    }
    Ok((out_ids, values))
}
