//! The partitioned (spilled) join: the same rows as the in-memory join and the reference, in
//! label order, with its spill files gone afterwards.

use std::path::Path;
use std::sync::atomic::Ordering;

use arrow::compute::concat_batches;
use futures::TryStreamExt;
use quiver_core::ErrorCode;

use crate::fixture::Fixture;
use crate::join_tests::{check, collect, request};
use crate::testutil::write_batches;
use crate::{LabelInput, OfflineStore};

fn store(fixture: &Fixture) -> OfflineStore {
    crate::testutil::store(&fixture.root.join("data"), &fixture.root)
}

/// Entries left under the data directory's spill root.
fn spill_entries(fixture: &Fixture) -> usize {
    let root = fixture.root.join("data").join("spill");
    std::fs::read_dir(Path::new(&root)).map_or(0, |entries| entries.count())
}

/// Waits (up to 10 s) until nothing is held or on disk: a failed join's blocking tasks that
/// were already running end on their own.
async fn released(store: &OfflineStore, fixture: &Fixture) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while (store.memory_reserved(), spill_entries(fixture)) != (0, 0) {
        assert!(
            std::time::Instant::now() < deadline,
            "still held: {} bytes, {} spill directories",
            store.memory_reserved(),
            spill_entries(fixture)
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
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
                assert_eq!(spill_entries(&fixture), 0, "{context}: spill files removed");
                assert_eq!(store.memory_reserved(), 0);
            }
            // The event-time columns aside, the reference decides every value.
            let without_events = expected
                .project(&[0, 1, 2, 3, 4, 5, 6, 7, 9, 10])
                .expect("project");
            check(&fixture, &labels, &without_events, as_known_at);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_over_the_budget_spills_and_one_that_cannot_is_refused() {
    let fixture = Fixture::new(11);
    let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
    let limited = |bytes| store(&fixture).with_memory_limit(bytes, "--offline-memory-limit");
    let input = || LabelInput::Batches(fixture.labels.clone());

    // Enough memory: in memory, held while the output streams, given back at the end.
    let roomy = limited(64 << 20);
    let output = roomy
        .point_in_time_join(request(&fixture, input(), false))
        .await
        .expect("join");
    let mut stream = output.stream;
    let first = stream.try_next().await.expect("stream").expect("a batch");
    let held = roomy.memory_reserved();
    assert!(
        held > 0,
        "the indexes hold their memory while the output streams"
    );
    let mut batches = vec![first];
    while let Some(batch) = stream.try_next().await.expect("stream") {
        batches.push(batch);
    }
    assert_eq!(roomy.memory_reserved(), 0, "given back at the end");
    assert_eq!(output.stats.spilled_partitions.load(Ordering::Relaxed), 0);
    let in_memory = concat_batches(&output.schema, &batches).expect("concat");
    check(&fixture, &labels, &in_memory, false);

    // Less and less memory: each join either gives the same answer (in memory or in
    // partitions spilled to disk) or is refused naming the setting; nothing stays held or on
    // disk either way. Some budget spills and succeeds; 64 bytes holds no partition.
    let (mut spilled, mut refused) = (0, Vec::new());
    for bytes in [held * 3 / 4, held * 2 / 3, held / 2, held / 3, held / 4, 64] {
        let tight = limited(bytes);
        let result = match tight
            .point_in_time_join(request(&fixture, input(), false))
            .await
        {
            Ok(output) => {
                let stats = std::sync::Arc::clone(&output.stats);
                let batches = output.stream.try_collect::<Vec<_>>().await;
                batches.map(|b| (stats, concat_batches(&output.schema, &b).expect("concat")))
            }
            Err(error) => Err(error),
        };
        match result {
            Ok((stats, out)) => {
                assert_eq!(out, in_memory, "{bytes} bytes");
                spilled += usize::from(stats.spilled_partitions.load(Ordering::Relaxed) > 0);
            }
            Err(error) => {
                assert_eq!(error.code(), ErrorCode::ResourceExhausted, "{error}");
                assert!(
                    error.to_string().contains("--offline-memory-limit"),
                    "{error}"
                );
                refused.push(bytes);
            }
        }
        released(&tight, &fixture).await;
    }
    assert!(
        spilled > 0,
        "some budget spilled (refused: {refused:?} of {held})"
    );
    assert!(refused.contains(&64));
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
