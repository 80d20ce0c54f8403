//! The partitioned (spilled) join: the same rows as the in-memory join and the reference, in
//! label order, with its spill files gone afterwards.

use std::path::Path;
use std::sync::atomic::Ordering;

use arrow::compute::concat_batches;
use futures::TryStreamExt;
use quiver_core::ErrorCode;

use crate::fixture::Fixture;
use crate::join_tests::{check, collect, failure, request};
use crate::testutil::write_batches;
use crate::view_index::ViewScan;
use crate::{JoinRequest, LabelInput, OfflineStore};
use arrow::array::{Array, RecordBatch};
use quiver_core::value::{KeyValue, Row, Value};

fn store(fixture: &Fixture) -> OfflineStore {
    crate::testutil::store(&fixture.root.join("data"), &fixture.root)
}

/// Entries left under the data directory's spill root.
fn spill_entries(fixture: &Fixture) -> usize {
    let root = fixture.root.join("data").join("spill");
    std::fs::read_dir(Path::new(&root)).map_or(0, |entries| entries.count())
}

/// Waits (up to 10 s) until `done`: a failed or dropped join's blocking tasks that were
/// already running, and the removal of its spill directories, end on their own.
async fn wait_until(done: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "not released in 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Waits until nothing of `store` is held or on disk under the fixture's data directory.
async fn released(store: &OfflineStore, fixture: &Fixture) {
    wait_until(|| (store.memory_reserved(), spill_entries(fixture)) == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_joins_equal_the_in_memory_join_and_the_reference() {
    for seed in [1, 2, 4] {
        // Seed 4: few distinct times, so many rows tie on (event_ts, created_ts), across
        // source files and the push log.
        let fixture = if seed == 4 {
            Fixture::with_spread(seed, 4)
        } else {
            Fixture::new(seed)
        };
        let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
        let label_file = fixture.root.join("labels.parquet");
        write_batches(&label_file, &fixture.labels);
        for as_known_at in [false, true] {
            let mut in_memory = request(
                &fixture,
                LabelInput::Batches(fixture.labels.clone()),
                as_known_at,
            );
            in_memory.event_times = true;
            let output = fixture
                .store
                .point_in_time_join(in_memory)
                .await
                .expect("join");
            assert_eq!(output.stats.spilled_partitions.load(Ordering::Relaxed), 0);
            let expected = collect(output).await;
            // Any number of partitions, labels given as batches or read from Parquet.
            for (n, parquet) in [(2, false), (7, true), (64, false)] {
                let input = if parquet {
                    LabelInput::Parquet(label_file.to_string_lossy().into_owned())
                } else {
                    LabelInput::Batches(fixture.labels.clone())
                };
                let mut spilled = request(&fixture, input, as_known_at);
                spilled.event_times = true;
                let store = store(&fixture).with_partitions(n);
                let output = store.point_in_time_join(spilled).await.expect("join");
                let stats = std::sync::Arc::clone(&output.stats);
                let out = collect(output).await;
                let context = format!("seed {seed}, as known at {as_known_at}, {n} partitions");
                assert_eq!(out, expected, "{context}");
                assert_eq!(
                    stats.spilled_partitions.load(Ordering::Relaxed),
                    2 * n as u64
                );
                assert_eq!(
                    stats.label_rows.load(Ordering::Relaxed),
                    labels.num_rows() as u64
                );
                released(&store, &fixture).await;
            }
            // The event-time columns aside, the reference decides every value.
            let without_events = expected
                .project(&[0, 1, 2, 3, 4, 5, 6, 7, 9, 10])
                .expect("project");
            check(&fixture, &labels, &without_events, as_known_at);
        }
    }
}

/// A view of 400,000 rows (20,000 drivers x 20 seconds, one row per driver and second) and
/// 4,000 labels: large enough that partitions, not batch-sized overheads, decide what fits.
fn large_view(root: &Path) -> (quiver_core::ResolvedView, RecordBatch) {
    let view = crate::testutil::test_view(root, "large", 0);
    let rows: Vec<Row> = (0..400_000i64)
        .map(|i| Row {
            key: vec![KeyValue::Int64(i % 20_000)],
            event_ts: (i / 20_000) * crate::testutil::SECOND,
            created_ts: None,
            values: vec![
                Value::Float32(i as f32),
                Value::Int64(i),
                Value::String(format!("note {i}")),
            ],
        })
        .collect();
    // Default row groups (the test writer's 64-row groups would make 6,250 of them).
    let batch = crate::push_log::push_log_batch(&view, &rows).expect("rows fit the view");
    std::fs::create_dir_all(root.join("large_src")).expect("mkdir");
    let file = std::fs::File::create(root.join("large_src/a.parquet")).expect("create");
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    let ids: Vec<i64> = (0..4_000).map(|i| (i * 7) % 25_000).collect();
    let times: Vec<i64> = (0..4_000).map(|i| (i % 23) - 1).collect();
    (view, crate::join_tests::label_batch(&ids, &times))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_over_the_budget_spills_and_one_that_cannot_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (view, labels) = large_view(dir.path());
    let data = dir.path().join("data");
    let limited = |bytes| {
        crate::testutil::store(&data, dir.path()).with_memory_limit(bytes, "--offline-memory-limit")
    };
    let request = || JoinRequest {
        labels: LabelInput::Batches(vec![labels.clone()]),
        timestamp_column: "event_timestamp".into(),
        views: vec![crate::testutil::selected(
            &view,
            &["note", "conv_rate", "trips"],
            "d",
        )],
        full_names: false,
        as_known_at: false,
        event_times: true,
    };
    let spill_entries = || std::fs::read_dir(data.join("spill")).map_or(0, |d| d.count());

    // Enough memory: in memory, held while the output streams, given back at the end.
    let roomy = limited(64 << 20);
    let output = roomy.point_in_time_join(request()).await.expect("join");
    let mut stream = output.stream;
    let first = stream.try_next().await.expect("stream").expect("a batch");
    let held = roomy.memory_reserved();
    assert!(
        held > 0,
        "the index holds its memory while the output streams"
    );
    let mut batches = vec![first];
    while let Some(batch) = stream.try_next().await.expect("stream") {
        batches.push(batch);
    }
    assert_eq!(roomy.memory_reserved(), 0, "given back at the end");
    assert_eq!(output.stats.spilled_partitions.load(Ordering::Relaxed), 0);
    let in_memory = concat_batches(&output.schema, &batches).expect("concat");
    let found = in_memory.column(5).null_count();
    assert!(found < in_memory.num_rows(), "some labels find a row");

    // Less memory than the index: joined in partitions spilled to disk, the same answer,
    // nothing left held or on disk.
    for bytes in [held / 2, held / 3] {
        let tight = limited(bytes);
        let output = tight.point_in_time_join(request()).await.expect("join");
        let stats = std::sync::Arc::clone(&output.stats);
        assert_eq!(collect(output).await, in_memory, "{bytes} bytes");
        assert!(
            stats.spilled_partitions.load(Ordering::Relaxed) > 0,
            "{bytes} bytes"
        );
        wait_until(|| (tight.memory_reserved(), spill_entries()) == (0, 0)).await;
    }

    // 64 bytes hold no partition: refused naming the setting, nothing held or left on disk.
    let tiny = limited(64);
    let error = failure(&tiny, request()).await;
    assert_eq!(error.code(), ErrorCode::ResourceExhausted, "{error}");
    assert!(
        error.to_string().contains("--offline-memory-limit"),
        "{error}"
    );
    wait_until(|| (tiny.memory_reserved(), spill_entries()) == (0, 0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spilling_past_the_disk_limit_is_refused_naming_it() {
    let fixture = Fixture::new(6);
    let store = store(&fixture)
        .with_partitions(4)
        .with_spill_limit(2_000, "--max-spill-bytes");
    let input = LabelInput::Batches(fixture.labels.clone());
    let error = failure(&store, request(&fixture, input, false)).await;
    assert_eq!(error.code(), ErrorCode::ResourceExhausted, "{error}");
    assert!(error.to_string().contains("--max-spill-bytes"), "{error}");
    released(&store, &fixture).await;
    wait_until(|| store.spilled_bytes() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_dropped_midway_leaves_no_spill_files() {
    let fixture = Fixture::new(5);
    let store = store(&fixture).with_partitions(4);
    let output = store
        .point_in_time_join(request(
            &fixture,
            LabelInput::Batches(fixture.labels.clone()),
            false,
        ))
        .await
        .expect("join");
    let mut stream = output.stream;
    stream.try_next().await.expect("stream").expect("a batch");
    assert_eq!(
        spill_entries(&fixture),
        2,
        "one directory per spilled view while the output streams"
    );
    drop(stream);
    // Batches already being joined finish first; then the directories go.
    released(&store, &fixture).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_read_back_unlike_those_joined_are_an_error() {
    use crate::spilled_join::{LabelSide, SpilledReader, SpilledView};
    let fixture = Fixture::new(3);
    let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
    let reader = fixture.store.view_reader();
    let features: Vec<_> = fixture.driver.features.iter().collect();
    let joined =
        crate::labels::Labels::open(&fixture.store, LabelInput::Batches(vec![labels.clone()]))
            .await
            .expect("labels");
    // Driver ids are column 1, label times column 3.
    let side = LabelSide {
        keys: vec![(1, quiver_core::types::KeyType::Int64)],
        t_index: 3,
        as_known_at: false,
    };
    let spilled = || async {
        let view = SpilledView::join(
            &reader,
            ViewScan::plan(&reader, &fixture.driver, &features, (i64::MIN, i64::MAX))
                .await
                .expect("plan"),
            &joined,
            side.clone(),
            4,
        );
        SpilledReader::new(view.await.expect("join"))
    };
    // The same labels: every row taken, nothing left.
    let mut same = spilled().await;
    let columns = same.take(&labels).expect("same labels");
    assert_eq!(columns.events.len(), labels.num_rows());
    same.finish().expect("every result row taken");
    // A label time changed: refused, naming the view.
    let mut moved = labels.clone();
    let times = arrow::compute::kernels::numeric::add(
        moved.column(3),
        &arrow::array::DurationMillisecondArray::new_scalar(1),
    )
    .expect("shift");
    let mut columns = moved.columns().to_vec();
    columns[3] = times;
    moved = RecordBatch::try_new(moved.schema(), columns).expect("batch");
    let error = spilled().await.take(&moved).err().expect("changed times");
    assert!(
        error
            .to_string()
            .contains("changed while it was being exported"),
        "{error}"
    );
    // Fewer label rows than were joined: what is left is found at the end.
    let mut fewer = spilled().await;
    fewer.take(&labels.slice(0, 100)).expect("a prefix");
    let error = fewer.finish().expect_err("rows left");
    assert!(error.to_string().contains("driver_stats"), "{error}");
}
