//! An export whose view does not fit `--offline-memory-limit`: joined in partitions spilled
//! to disk, with every label's value the independent reference's, in label order, and no
//! spill file left behind.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use quiver_integration_tests::{TestServer, export_to_end, write_parquet};
use quiver_proto::v1;
use quiver_server::Limits;

use super::fixture::{TestRow, labels, setup};

const T0: i64 = 1_800_000_000_000_000;
const SECOND: i64 = 1_000_000;
const USERS: i64 = 2_000;

/// 100 rows per user at seconds `0..100` in a scrambled order, plus, at second 50, a second
/// row equal on (event, created) that comes later in the file and so wins the tie.
fn rows() -> Vec<TestRow> {
    let mut rows = Vec::new();
    for k in 0..100i64 {
        let second = (k * 37) % 100;
        for user_id in 0..USERS {
            rows.push(TestRow {
                user_id,
                event_ts: T0 + second * SECOND,
                created_ts: T0 + second * SECOND,
                a: user_id * 1_000 + second,
                b: Some(second as f64),
                s: String::new(),
            });
        }
    }
    for user_id in 0..USERS {
        rows.push(TestRow {
            user_id,
            event_ts: T0 + 50 * SECOND,
            created_ts: T0 + 50 * SECOND,
            a: -user_id,
            b: None,
            s: "tie".into(),
        });
    }
    rows
}

/// The reference: the greatest (event, created, position) row of the user at or before `t`,
/// by a plain scan of the user's rows.
fn expected_a(by_user: &HashMap<i64, Vec<(usize, &TestRow)>>, user_id: i64, t: i64) -> Option<i64> {
    by_user
        .get(&user_id)?
        .iter()
        .filter(|(_, r)| r.event_ts <= t)
        .max_by_key(|(i, r)| (r.event_ts, r.created_ts, *i))
        .map(|(_, r)| r.a)
}

fn read_parquet(path: &std::path::Path) -> anyhow::Result<Vec<RecordBatch>> {
    let file = std::fs::File::open(path)?;
    let reader =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)?.build()?;
    Ok(reader.collect::<Result<Vec<_>, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_over_the_memory_limit_spills_and_matches_the_reference() -> anyhow::Result<()> {
    // The view's rows take about 9 MB in memory; 4 MiB makes the join partition them.
    let server = TestServer::start_limited(Limits {
        offline_memory_limit: 4 << 20,
        ..Limits::default()
    })
    .await?;
    let mut clients = server.clients().await?;
    let rows = rows();
    setup(&server, &mut clients, &rows, "0").await?;
    // Labels before, between and after the rows, users in a scrambled order.
    let mut batches = Vec::new();
    for (i, second) in [-1i64, 0, 25, 50, 51, 99, 200].iter().enumerate() {
        let batch = labels(USERS, T0 + second * SECOND)?;
        let order = arrow::array::UInt32Array::from_iter_values(
            (0..USERS as u32).map(|u| (u * 7 + i as u32 * 13) % USERS as u32),
        );
        batches.push(arrow::compute::take_record_batch(&batch, &order)?);
    }
    write_parquet(&server.path("labels.parquet"), &batches)?;
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService("model".into())),
        labels_path: server.path("labels.parquet").to_string_lossy().into_owned(),
        output_path: "train.parquet".into(),
        ..Default::default()
    };
    let summary = export_to_end(&mut clients, request).await?;
    assert!(summary.spilled_partitions > 1, "{summary:?}");
    assert_eq!(summary.rows, 7 * USERS as u64);

    let out = read_parquet(&server.path("data/exports/train.parquet"))?;
    let mut by_user: HashMap<i64, Vec<(usize, &TestRow)>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        by_user.entry(r.user_id).or_default().push((i, r));
    }
    let (mut row, mut matched) = (0, 0);
    for (got, given) in out
        .iter()
        .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i)))
        .zip(
            batches
                .iter()
                .flat_map(|b| (0..b.num_rows()).map(move |i| (b, i))),
        )
    {
        let ((out, i), (labels, j)) = (got, given);
        let user = labels.column(0).as_primitive::<Int64Type>().value(j);
        assert_eq!(
            out.column(0).as_primitive::<Int64Type>().value(i),
            user,
            "row {row}"
        );
        let t = labels
            .column(1)
            .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
            .value(j);
        let a = out.column_by_name("a").expect("feature a");
        let a = a.as_primitive::<Int64Type>();
        let actual = a.is_valid(i).then(|| a.value(i));
        assert_eq!(
            actual,
            expected_a(&by_user, user, t),
            "row {row}: user {user} at {t}"
        );
        matched += usize::from(actual.is_some());
        row += 1;
    }
    assert_eq!(row, 7 * USERS as usize);
    assert_eq!(
        matched,
        6 * USERS as usize,
        "all but the labels before the first row"
    );

    // The spill directories go when the export ends, and the gauges come back to 0.
    let spill = server.path("data/spill");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, text) = server.http_get("/metrics").await?;
        let gauge = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse::<f64>().ok())
        };
        let held = (
            gauge("quiver_offline_memory_reserved_bytes"),
            gauge("quiver_offline_spill_bytes"),
        );
        let files = std::fs::read_dir(&spill).map_or(0, |d| d.count());
        if held == (Some(0.0), Some(0.0)) && files == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still held after 10 s: {held:?}, {files} spill directories"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(())
}
