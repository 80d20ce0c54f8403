//! `scan_latest`, `read_range` and `write_parquet` against the reference.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::TimestampMicrosecondType;
use futures::TryStreamExt;
use quiver_core::value::{KeyValue, Row};

use crate::fixture::Fixture;
use crate::testutil::{SECOND, reference_latest, selected};
use crate::values::{key_at, value_at};
use crate::{JoinRequest, LabelInput, write_parquet};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_latest_matches_the_reference() {
    for fixture in [Fixture::new(11), Fixture::with_spread(12, 4)] {
        scan_latest_case(&fixture).await;
    }
}

async fn scan_latest_case(fixture: &Fixture) {
    let ranges = [
        (i64::MIN, i64::MAX),
        (20 * SECOND, 60 * SECOND),
        (79 * SECOND, 80 * SECOND),
        (500 * SECOND, 600 * SECOND),
    ];
    for (view, rows) in [
        (&fixture.driver, &fixture.driver_rows),
        (&fixture.city, &fixture.city_rows),
    ] {
        for (start, end) in ranges {
            let scanned = Arc::new(AtomicU64::new(0));
            let latest = fixture
                .store
                .scan_latest(view, start, end, scanned.clone())
                .await
                .expect("scan");
            let n_rows = latest.n_rows();
            let chunks: Vec<Vec<Row>> = latest.collect();
            let actual: BTreeMap<Vec<KeyValue>, Row> = chunks
                .into_iter()
                .flatten()
                .map(|r| (r.key.clone(), r))
                .collect();
            assert_eq!(actual.len(), n_rows, "one row per key");
            let expected = reference_latest(rows, start, end);
            assert_eq!(actual, expected, "{} [{start}, {end})", view.name);
            let in_range = rows
                .iter()
                .filter(|r| start <= r.event_ts && r.event_ts < end)
                .count();
            assert_eq!(scanned.load(Ordering::Relaxed), in_range as u64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_range_returns_every_row_in_range_in_file_order() {
    let fixture = Fixture::new(5);
    let (start, end) = (10 * SECOND, 30 * SECOND);
    let output = fixture
        .store
        .read_range(
            &selected(&fixture.driver, &["trips", "note"], "driver"),
            start,
            end,
        )
        .await
        .expect("range");
    let names: Vec<&str> = output
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        [
            "driver_id",
            "event_timestamp",
            "created_timestamp",
            "trips",
            "note"
        ]
    );
    let stats = Arc::clone(&output.stats);
    let batches: Vec<RecordBatch> = output.stream.try_collect().await.expect("stream");
    let out = concat_batches(&batches[0].schema(), &batches).expect("concat");
    let expected: Vec<&Row> = fixture
        .driver_rows
        .iter()
        .filter(|r| start <= r.event_ts && r.event_ts < end)
        .collect();
    assert_eq!(out.num_rows(), expected.len());
    assert_eq!(
        stats.label_rows.load(Ordering::Relaxed),
        expected.len() as u64
    );
    let events = out.column(1).as_primitive::<TimestampMicrosecondType>();
    let created = out.column(2).as_primitive::<TimestampMicrosecondType>();
    for (i, row) in expected.iter().enumerate() {
        assert_eq!(key_at(out.column(0).as_ref(), i), row.key[0]);
        assert_eq!(events.value(i), row.event_ts);
        assert_eq!(
            created.is_valid(i).then(|| created.value(i)),
            row.created_ts
        );
        assert_eq!(value_at(out.column(3).as_ref(), i), row.values[1]);
        assert_eq!(value_at(out.column(4).as_ref(), i), row.values[2]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn training_sets_are_written_with_metadata() {
    let fixture = Fixture::new(3);
    let output = fixture
        .store
        .point_in_time_join(JoinRequest {
            labels: LabelInput::Batches(fixture.labels.clone()),
            timestamp_column: "event_timestamp".into(),
            views: vec![selected(&fixture.driver, &["conv_rate"], "drivers")],
            full_names: true,
            as_known_at: false,
            event_times: false,
        })
        .await
        .expect("join");
    let path = fixture.root.join("out/train.parquet");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let metadata = vec![("quiver.service".to_string(), "driver_model@1".to_string())];
    let n = write_parquet(output.schema, output.stream, &path, metadata)
        .await
        .expect("write");
    let n_labels: usize = fixture.labels.iter().map(|b| b.num_rows()).sum();
    assert_eq!(n, n_labels as u64);
    let file = std::fs::File::open(&path).expect("open");
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .expect("reader");
    let kv = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default();
    assert!(
        kv.iter()
            .any(|e| e.key == "quiver.service" && e.value.as_deref() == Some("driver_model@1"))
    );
    assert!(
        reader
            .schema()
            .field_with_name("drivers__conv_rate")
            .is_ok()
    );
    let rows: usize = reader
        .build()
        .expect("build")
        .map(|b| b.expect("batch").num_rows())
        .sum();
    assert_eq!(rows, n_labels);
    let leftovers = std::fs::read_dir(path.parent().expect("parent"))
        .expect("dir")
        .count();
    assert_eq!(leftovers, 1, "no temporary file is left behind");
}

#[test]
fn bad_pushed_rows_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(dir.path(), dir.path());
    let view = crate::testutil::test_view(dir.path(), "v", 0);
    let good = Row {
        key: vec![KeyValue::Int64(1)],
        event_ts: 0,
        created_ts: None,
        values: vec![quiver_core::value::Value::Null; 3],
    };
    let mut wrong_key = good.clone();
    wrong_key.key = vec![KeyValue::String("1".into())];
    let mut short = good.clone();
    short.values.pop();
    for (rows, needle) in [
        (vec![good.clone(), wrong_key], "rows[1].key[0]"),
        (vec![short], "rows[0].values"),
    ] {
        let error = store.append_push_log(&view, &rows).expect_err("invalid");
        assert_eq!(error.code(), quiver_core::ErrorCode::InvalidArgument);
        assert!(error.to_string().contains(needle), "{error}");
    }
    store
        .append_push_log(&view, &[good.clone(), good])
        .expect("push");
    let log = crate::files::push_log_files(&crate::files::push_log_dir(
        &dir.path().join("offline"),
        &view,
    ))
    .expect("log");
    assert_eq!(log.len(), 1);
}

#[test]
fn interrupted_push_log_writes_are_removed_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(dir.path(), dir.path());
    assert_eq!(store.remove_interrupted_appends().expect("no log yet"), 0);
    let view = crate::testutil::test_view(dir.path(), "v", 0);
    let row = Row {
        key: vec![KeyValue::Int64(1)],
        event_ts: 0,
        created_ts: None,
        values: vec![quiver_core::value::Value::Null; 3],
    };
    store.append_push_log(&view, &[row]).expect("push");
    let log_dir = crate::files::push_log_dir(&dir.path().join("offline"), &view);
    // What a crash between create and rename leaves, next to the committed file.
    let leftover = log_dir.join(".00000000000000000001-00000000000000000000.parquet.7.9.tmp");
    std::fs::write(&leftover, b"partial").expect("write");
    // A directory and a file that only look alike are not touched.
    let look_alike_dir = log_dir.join(".kept.tmp");
    std::fs::create_dir(&look_alike_dir).expect("mkdir");
    let note = log_dir.join("notes.tmp");
    std::fs::write(&note, b"x").expect("write");

    assert_eq!(store.remove_interrupted_appends().expect("clean"), 1);
    assert!(!leftover.exists());
    assert!(look_alike_dir.exists() && note.exists());
    let log = crate::files::push_log_files(&log_dir).expect("log");
    assert_eq!(log.len(), 1, "the committed file stays");
    // What a backup copies: the committed file only, relative to the data directory.
    let committed = store.committed_push_log().expect("list");
    assert_eq!(committed.len(), 1);
    assert_eq!(dir.path().join(&committed[0]), log[0]);
    assert!(committed[0].starts_with("offline"));
}

#[tokio::test]
async fn a_source_file_that_is_not_parquet_is_a_failed_precondition_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(dir.path(), dir.path());
    let view = crate::testutil::test_view(dir.path(), "v", 0);
    let source = dir.path().join("v_src");
    std::fs::create_dir_all(&source).expect("mkdir");
    for (name, bytes) in [
        ("a.parquet", &b"not parquet at all"[..]),
        ("b.parquet", &b"PAR1 truncated PAR1"[..]),
    ] {
        std::fs::write(source.join(name), bytes).expect("write");
        let scanned = Arc::new(AtomicU64::new(0));
        let error = store
            .scan_latest(&view, i64::MIN, i64::MAX, scanned)
            .await
            .map(|_| ())
            .expect_err("not Parquet");
        assert_eq!(
            error.code(),
            quiver_core::ErrorCode::FailedPrecondition,
            "{error}"
        );
        assert!(error.to_string().contains(name), "{error}");
        std::fs::remove_file(source.join(name)).expect("rm");
    }
}

#[tokio::test]
async fn a_source_row_outside_the_valid_time_range_fails_the_scan_naming_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(dir.path(), dir.path());
    let view = crate::testutil::test_view(dir.path(), "v", 0);
    let row = |event_ts| Row {
        key: vec![KeyValue::Int64(1)],
        event_ts,
        created_ts: Some(0),
        values: vec![quiver_core::value::Value::Null; 3],
    };
    // Year 11476: representable in microseconds, outside years 1 to 9999.
    let rows = [row(SECOND), row(300_000_000_000 * SECOND)];
    let path = dir.path().join("v_src/a.parquet");
    std::fs::create_dir_all(dir.path().join("v_src")).expect("mkdir");
    crate::testutil::write_rows(
        &path,
        &view,
        &rows,
        arrow::datatypes::TimeUnit::Microsecond,
        Some("UTC"),
    );
    let scanned = Arc::new(AtomicU64::new(0));
    let error = store
        .scan_latest(&view, i64::MIN, i64::MAX, scanned)
        .await
        .map(|_| ())
        .expect_err("out of range");
    assert_eq!(
        error.code(),
        quiver_core::ErrorCode::FailedPrecondition,
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains("event_ts") && message.contains("outside the valid time range"),
        "{message}"
    );
}
