//! Push-log compaction keeps every read exactly as it was: joins (against the reference),
//! latest-row scans and range reads, before, during (merged file written, merged files not
//! yet deleted: what a crash or a busy reader leaves) and after a compaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use arrow::array::RecordBatch;
use arrow::compute::concat_batches;
use quiver_core::value::{KeyValue, Row, Value};

use crate::files::{covered_push_log_files, push_log_dir, push_log_files};
use crate::fixture::Fixture;
use crate::join_tests::{check, collect, request};
use crate::testutil::selected;
use crate::{CompactionPolicy, LabelInput};

/// Everything the reads return: both joins, the latest rows, a range read.
#[derive(Debug, PartialEq)]
struct Reads {
    joins: Vec<RecordBatch>,
    latest: BTreeMap<Vec<KeyValue>, Row>,
    range: RecordBatch,
}

async fn reads(fixture: &Fixture) -> Reads {
    let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
    let mut joins = Vec::new();
    for as_known_at in [false, true] {
        let input = LabelInput::Batches(fixture.labels.clone());
        let output = fixture
            .store
            .point_in_time_join(request(fixture, input, as_known_at))
            .await
            .expect("join");
        let out = collect(output).await;
        check(fixture, &labels, &out, as_known_at);
        joins.push(out);
    }
    let latest = fixture
        .store
        .scan_latest(
            &fixture.driver,
            i64::MIN,
            i64::MAX,
            Arc::new(AtomicU64::new(0)),
        )
        .await
        .expect("scan")
        .flatten()
        .map(|r| (r.key.clone(), r))
        .collect();
    let all = selected(&fixture.driver, &["note", "trips"], "driver_stats");
    let range = collect(
        fixture
            .store
            .read_range(&all, i64::MIN, i64::MAX)
            .await
            .expect("range"),
    )
    .await;
    Reads {
        joins,
        latest,
        range,
    }
}

/// Appends `n` single-row pushes that tie with earlier rows on (key, event, created) with new
/// values: the later push must win, before and after compaction.
fn push_ties(fixture: &mut Fixture, n: usize, tag: &str) {
    for i in 0..n {
        let mut row = fixture.driver_rows[(i * 37) % fixture.driver_rows.len()].clone();
        row.values[2] = Value::String(format!("{tag}{i}"));
        fixture
            .store
            .append_push_log(&fixture.driver, std::slice::from_ref(&row))
            .expect("push");
        fixture.driver_rows.push(row);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_reads_identical_before_during_and_after() {
    let mut fixture = Fixture::new(21);
    push_ties(&mut fixture, 30, "a");
    let dir = push_log_dir(&fixture.store.data_dir().join("offline"), &fixture.driver);
    assert_eq!(push_log_files(&dir).expect("list").len(), 32);
    let before = reads(&fixture).await;
    let policy = CompactionPolicy {
        min_files: 4,
        ..CompactionPolicy::default()
    };

    // During: a reader holds the push log, so the merged files stay (hidden), as after a
    // crash between the rename and the deletes.
    let hold = fixture.store.hold_push_log().await;
    let report =
        tokio::task::block_in_place(|| fixture.store.compact_push_logs(&policy)).expect("compact");
    assert_eq!((report.merged, report.written, report.removed), (32, 1, 0));
    assert_eq!(covered_push_log_files(&dir).expect("covered").len(), 32);
    assert_eq!(push_log_files(&dir).expect("list").len(), 1);
    drop(hold);
    assert_eq!(reads(&fixture).await, before);

    // After: the next pass deletes what is covered; nothing else changes.
    let report =
        tokio::task::block_in_place(|| fixture.store.compact_push_logs(&policy)).expect("compact");
    assert_eq!((report.written, report.removed), (0, 32));
    assert!(covered_push_log_files(&dir).expect("covered").is_empty());
    assert_eq!(reads(&fixture).await, before);

    // More pushes, merged with the merged file: still the append order.
    push_ties(&mut fixture, 5, "b");
    let more = reads(&fixture).await;
    assert_ne!(more, before, "the new ties won");
    let report =
        tokio::task::block_in_place(|| fixture.store.compact_push_logs(&policy)).expect("compact");
    assert_eq!((report.merged, report.written, report.removed), (6, 1, 6));
    let files = push_log_files(&dir).expect("list");
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(reads(&fixture).await, more);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planned_join_reads_the_views_only_when_its_stream_is_read() {
    let mut fixture = Fixture::new(5);
    let input = LabelInput::Batches(fixture.labels.clone());
    // Planned (what GetFlightInfo does): then rows are pushed, then the stream is read.
    let planned = fixture
        .store
        .point_in_time_join(request(&fixture, input, false))
        .await
        .expect("plan");
    push_ties(&mut fixture, 10, "late");
    let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
    // The reference includes the late rows: the join read the views after they were pushed.
    let out = collect(planned).await;
    check(&fixture, &labels, &out, false);
    let notes = out.column_by_name("note").expect("note");
    let notes = arrow::array::AsArray::as_string::<i32>(notes.as_ref());
    assert!(notes.iter().flatten().any(|n| n.starts_with("late")));
}

#[test]
fn after_a_restart_new_pushes_sort_after_every_file_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(dir.path(), dir.path());
    let view = crate::testutil::test_view(dir.path(), "v", 0);
    let row = Row {
        key: vec![KeyValue::Int64(1)],
        event_ts: 0,
        created_ts: None,
        values: vec![Value::Null; 3],
    };
    store
        .append_push_log(&view, std::slice::from_ref(&row))
        .expect("push");
    // A file named by a clock a day ahead (as if the wall clock went back across a restart).
    let log_dir = push_log_dir(&dir.path().join("offline"), &view);
    let [written] = push_log_files(&log_dir)
        .expect("list")
        .try_into()
        .expect("one file");
    let ahead = chrono::Utc::now().timestamp_micros() + 86_400_000_000;
    let future = log_dir.join(format!("{ahead:020}-{:020}.parquet", 7));
    std::fs::rename(&written, &future).expect("rename");

    let restarted = crate::testutil::store(dir.path(), dir.path());
    assert_eq!(restarted.resume_push_names().expect("resume"), (ahead, 7));
    restarted.append_push_log(&view, &[row]).expect("push");
    let files = push_log_files(&log_dir).expect("list");
    assert_eq!(files.len(), 2);
    assert_eq!(
        files[0], future,
        "the new push sorts after the file from the future"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_named_after_an_append_still_being_written_are_not_merged() {
    let mut fixture = Fixture::new(9);
    let dir = push_log_dir(&fixture.store.data_dir().join("offline"), &fixture.driver);
    let policy = CompactionPolicy {
        min_files: 4,
        ..CompactionPolicy::default()
    };
    // An append took its name and has not committed; 10 later pushes commit before it.
    let slow = fixture.store.next_push_name();
    push_ties(&mut fixture, 10, "after");
    let report =
        tokio::task::block_in_place(|| fixture.store.compact_push_logs(&policy)).expect("compact");
    // Only the 2 files named before it could merge: fewer than a run.
    assert_eq!(report.written, 0, "{report:?}");
    assert_eq!(push_log_files(&dir).expect("list").len(), 12);
    // Committed (here: given up): everything may merge.
    fixture.store.push_names().in_flight.remove(&slow);
    let report =
        tokio::task::block_in_place(|| fixture.store.compact_push_logs(&policy)).expect("compact");
    assert_eq!((report.merged, report.written), (12, 1), "{report:?}");
}
