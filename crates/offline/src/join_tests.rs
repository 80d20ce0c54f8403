//! The point-in-time join against the reference implementation, edge cases and errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Int32Type, TimestampMillisecondType};
use futures::TryStreamExt;
use quiver_core::ErrorCode;
use quiver_core::value::{KeyValue, Row, Value};

use crate::fixture::{CITY_TTL, DRIVER_TTL, Fixture};
use crate::testutil::{SECOND, reference_join, selected, test_view, write_batches};
use crate::values::value_at;
use crate::{Error, JoinOutput, JoinRequest, LabelInput};

pub(crate) fn request(fixture: &Fixture, labels: LabelInput, as_known_at: bool) -> JoinRequest {
    JoinRequest {
        labels,
        timestamp_column: "event_timestamp".into(),
        views: vec![
            selected(
                &fixture.driver,
                &["note", "conv_rate", "trips"],
                "driver_stats",
            ),
            selected(&fixture.city, &["tags", "avg"], "city_stats"),
        ],
        full_names: false,
        as_known_at,
        event_times: false,
    }
}

pub(crate) async fn collect(output: JoinOutput) -> RecordBatch {
    let batches: Vec<RecordBatch> = output.stream.try_collect().await.expect("stream");
    concat_batches(&output.schema, &batches).expect("concat")
}

/// Compares every output row with the reference; returns matches per view.
pub(crate) fn check(
    fixture: &Fixture,
    labels: &RecordBatch,
    out: &RecordBatch,
    as_known_at: bool,
) -> [u64; 2] {
    assert_eq!(out.num_rows(), labels.num_rows());
    for i in 0..labels.num_columns() {
        assert_eq!(
            out.column(i).as_ref(),
            labels.column(i).as_ref(),
            "label column {i}"
        );
    }
    let driver_ids = labels.column(1).as_primitive::<Int32Type>();
    let cities = labels.column(2).as_string::<i32>();
    let times = labels.column(3).as_primitive::<TimestampMillisecondType>();
    let mut matched = [0u64; 2];
    for row in 0..labels.num_rows() {
        let t = times.is_valid(row).then(|| times.value(row) * 1_000);
        let driver_key = driver_ids
            .is_valid(row)
            .then(|| KeyValue::Int64(i64::from(driver_ids.value(row))));
        let city_key = cities
            .is_valid(row)
            .then(|| KeyValue::String(cities.value(row).into()));
        let driver = driver_key.zip(t).and_then(|(key, t)| {
            reference_join(&fixture.driver_rows, &[key], t, DRIVER_TTL, as_known_at)
        });
        let city = city_key.zip(t).and_then(|(key, t)| {
            reference_join(&fixture.city_rows, &[key], t, CITY_TTL, as_known_at)
        });
        let expected: Vec<Value> = [
            driver.map_or(Value::Null, |r| r.values[2].clone()),
            driver.map_or(Value::Null, |r| r.values[0].clone()),
            driver.map_or(Value::Null, |r| r.values[1].clone()),
            city.map_or(Value::Null, |r| r.values[1].clone()),
            city.map_or(Value::Null, |r| r.values[0].clone()),
        ]
        .into();
        let actual: Vec<Value> = (5..10)
            .map(|c| value_at(out.column(c).as_ref(), row))
            .collect();
        assert_eq!(actual, expected, "label row {row} (t = {t:?})");
        matched[0] += u64::from(driver.is_some());
        matched[1] += u64::from(city.is_some());
    }
    matched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_matches_the_reference_for_batches_and_parquet_labels() {
    let fixture = Fixture::new(7);
    let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
    let label_dir = fixture.root.join("labels");
    write_batches(&label_dir.join("part-0.parquet"), &[labels.slice(0, 120)]);
    write_batches(
        &label_dir.join("part-1.parquet"),
        &[labels.slice(120, labels.num_rows() - 120)],
    );
    for as_known_at in [false, true] {
        let batches = LabelInput::Batches(fixture.labels.clone());
        let parquet = LabelInput::Parquet(label_dir.to_string_lossy().into_owned());
        for input in [batches, parquet] {
            let output = fixture
                .store
                .point_in_time_join(request(&fixture, input, as_known_at))
                .await
                .expect("join");
            let names: Vec<&str> = output
                .schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            assert_eq!(names[5..], ["note", "conv_rate", "trips", "tags", "avg"]);
            let stats = std::sync::Arc::clone(&output.stats);
            let out = collect(output).await;
            let matched = check(&fixture, &labels, &out, as_known_at);
            assert!(matched[0] > 50 && matched[1] > 50, "{matched:?}");
            assert_eq!(
                stats.label_rows.load(Ordering::Relaxed),
                labels.num_rows() as u64
            );
            let counted: Vec<u64> = stats
                .matched
                .iter()
                .map(|(_, n)| n.load(Ordering::Relaxed))
                .collect();
            assert_eq!(counted, matched);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_seeds_match_the_reference() {
    for seed in [1, 2, 3, 4] {
        // Seed 4: few distinct times, so many rows tie on (event_ts, created_ts).
        let fixture = if seed == 4 {
            Fixture::with_spread(seed, 4)
        } else {
            Fixture::new(seed)
        };
        let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
        let output = fixture
            .store
            .point_in_time_join(request(
                &fixture,
                LabelInput::Batches(fixture.labels.clone()),
                seed == 2,
            ))
            .await
            .expect("join");
        check(&fixture, &labels, &collect(output).await, seed == 2);
    }
}

fn row(driver_id: i64, event_s: i64, created_s: Option<i64>, note: &str) -> Row {
    Row {
        key: vec![KeyValue::Int64(driver_id)],
        event_ts: event_s * SECOND,
        created_ts: created_s.map(|c| c * SECOND),
        values: vec![
            Value::Float32(1.0),
            Value::Int64(event_s),
            Value::String(note.into()),
        ],
    }
}

pub(crate) fn label_batch(ids: &[i64], times_s: &[i64]) -> RecordBatch {
    let schema = std::sync::Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("driver_id", arrow::datatypes::DataType::Int64, true),
        arrow::datatypes::Field::new(
            "event_timestamp",
            crate::arrow_types::timestamp_type(),
            true,
        ),
    ]));
    let ts = arrow::array::TimestampMicrosecondArray::from_iter_values(
        times_s.iter().map(|t| t * SECOND),
    )
    .with_timezone("UTC");
    RecordBatch::try_new(
        schema,
        vec![
            std::sync::Arc::new(arrow::array::Int64Array::from(ids.to_vec())),
            std::sync::Arc::new(ts),
        ],
    )
    .expect("labels")
}

async fn notes(
    store: &crate::OfflineStore,
    view: &quiver_core::ResolvedView,
    labels: RecordBatch,
    as_known_at: bool,
) -> Vec<Value> {
    let output = store
        .point_in_time_join(JoinRequest {
            labels: LabelInput::Batches(vec![labels]),
            timestamp_column: "event_timestamp".into(),
            views: vec![selected(view, &["note"], "d")],
            full_names: false,
            as_known_at,
            event_times: false,
        })
        .await
        .expect("join");
    let out = collect(output).await;
    (0..out.num_rows())
        .map(|i| value_at(out.column(2).as_ref(), i))
        .collect()
}

#[tokio::test]
async fn ties_ttl_bounds_and_push_log_follow_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(&dir.path().join("data"), dir.path());
    let view = test_view(dir.path(), "v", 10 * SECOND);
    let source = vec![
        row(1, 100, Some(100), "a"),
        row(1, 100, Some(105), "b"), // created breaks the event tie
        row(1, 100, None, "c"),      // missing created is lowest
        row(2, 50, Some(50), "x"),
        row(2, 50, Some(50), "y"), // full tie: the later row wins
    ];
    crate::testutil::write_rows(
        &dir.path().join("v_src/s.parquet"),
        &view,
        &source,
        arrow::datatypes::TimeUnit::Nanosecond,
        None,
    );
    let s = |t: &str| Value::String(t.into());
    let labels = label_batch(
        &[1, 1, 1, 1, 2, 2, 3, 1],
        &[100, 110, 111, 99, 50, 60, 100, 100],
    );
    let expected = [
        s("b"),
        s("b"),
        Value::Null,
        Value::Null,
        s("y"),
        s("y"),
        Value::Null,
        s("b"),
    ];
    assert_eq!(notes(&store, &view, labels.clone(), false).await, expected);
    // As known at t: at t = 100 only rows created by 100 count.
    let known = notes(&store, &view, labels.clone(), true).await;
    assert_eq!(known[0], s("a"));
    assert_eq!(known[1], s("b"));
    // A pushed row equal to a source row wins the tie, as it would online.
    store
        .append_push_log(&view, &[row(2, 50, Some(50), "pushed")])
        .expect("push");
    assert_eq!(notes(&store, &view, labels, false).await[4], s("pushed"));
    let latest: Vec<Row> = store
        .scan_latest(&view, 0, i64::MAX, Arc::new(AtomicU64::new(0)))
        .await
        .expect("scan")
        .flatten()
        .collect();
    let of = |id: i64| {
        latest
            .iter()
            .find(|r| r.key == [KeyValue::Int64(id)])
            .map(|r| r.values[2].clone())
    };
    assert_eq!((of(1), of(2)), (Some(s("b")), Some(s("pushed"))));
}

#[tokio::test]
async fn empty_labels_and_empty_views_give_nulls_not_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(&dir.path().join("data"), dir.path());
    let mut view = test_view(dir.path(), "push_only", 0);
    view.source.parquet = None;
    assert_eq!(
        notes(&store, &view, label_batch(&[1, 1], &[5, 6]), false).await,
        [Value::Null, Value::Null]
    );
    assert!(
        notes(&store, &view, label_batch(&[], &[]), false)
            .await
            .is_empty()
    );
}

async fn join_error(labels: RecordBatch, full_names: bool, twice: bool) -> Error {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crate::testutil::store(&dir.path().join("data"), dir.path());
    let mut view = test_view(dir.path(), "v", 0);
    view.source.parquet = None;
    let join_view = |prefix: &str| selected(&view, &["note"], prefix);
    let mut views = vec![join_view("a")];
    if twice {
        views.push(join_view("b"));
    }
    let request = JoinRequest {
        labels: LabelInput::Batches(vec![labels]),
        timestamp_column: "event_timestamp".into(),
        views,
        full_names,
        as_known_at: false,
        event_times: false,
    };
    failure(&store, request).await
}

/// The error of a join that must fail: refused before the stream starts, or while it
/// streams (label times are checked per batch; views are read at the first poll).
pub(crate) async fn failure(store: &crate::OfflineStore, request: JoinRequest) -> Error {
    match store.point_in_time_join(request).await {
        Ok(output) => {
            let drained: crate::Result<Vec<RecordBatch>> = output.stream.try_collect().await;
            drained
                .err()
                .unwrap_or_else(|| Error::invalid("test", "no error"))
        }
        Err(e) => e,
    }
}

#[tokio::test]
async fn bad_label_tables_are_invalid_arguments() {
    let good = label_batch(&[1], &[1]);
    let without = |name: &str| {
        let index = good.schema().index_of(name).expect("column");
        let mut batch = good.clone();
        batch.remove_column(index);
        batch
    };
    let strings = RecordBatch::try_from_iter(vec![
        (
            "driver_id",
            std::sync::Arc::new(arrow::array::StringArray::from(vec!["1"])) as _,
        ),
        ("event_timestamp", std::sync::Arc::clone(good.column(1))),
    ])
    .expect("batch");
    let cases = [
        (
            join_error(without("driver_id"), false, false).await,
            "no column `driver_id`",
        ),
        (
            join_error(without("event_timestamp"), false, false).await,
            "no column `event_timestamp`",
        ),
        (
            join_error(strings, false, false).await,
            "cast the column to int64",
        ),
        (join_error(good.clone(), false, true).await, "collide: note"),
        (
            join_error(label_batch(&[1], &[300_000_000_000]), false, false).await,
            "outside the valid time range",
        ),
    ];
    for (error, needle) in cases {
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{error}");
        assert!(error.to_string().contains(needle), "{error} lacks {needle}");
    }
    // Full names resolve the collision; a label column named like a feature collides.
    assert!(
        !join_error(good.clone(), true, true)
            .await
            .to_string()
            .contains("collide")
    );
    let noted = RecordBatch::try_from_iter(vec![
        ("driver_id", std::sync::Arc::clone(good.column(0))),
        ("event_timestamp", std::sync::Arc::clone(good.column(1))),
        (
            "note",
            std::sync::Arc::new(arrow::array::Int64Array::from(vec![1])) as _,
        ),
    ])
    .expect("batch");
    assert!(
        join_error(noted, false, false)
            .await
            .to_string()
            .contains("collide: note")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_time_columns_name_the_chosen_rows() {
    let fixture = Fixture::new(11);
    let labels = concat_batches(&fixture.labels[0].schema(), &fixture.labels).expect("concat");
    let mut join = request(&fixture, LabelInput::Batches(fixture.labels.clone()), true);
    join.event_times = true;
    let output = fixture.store.point_in_time_join(join).await.expect("join");
    let out = collect(output).await;
    let names: Vec<String> = out
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    assert_eq!(
        names[5..],
        [
            "note",
            "conv_rate",
            "trips",
            "driver_stats.event_time",
            "tags",
            "avg",
            "city_stats.event_time"
        ]
    );
    let driver_ids = labels.column(1).as_primitive::<Int32Type>();
    let times = labels.column(3).as_primitive::<TimestampMillisecondType>();
    let events = out
        .column(8)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let mut found = 0;
    for row in 0..labels.num_rows() {
        let t = times.is_valid(row).then(|| times.value(row) * 1_000);
        let key = driver_ids
            .is_valid(row)
            .then(|| KeyValue::Int64(i64::from(driver_ids.value(row))));
        let chosen = key
            .zip(t)
            .and_then(|(key, t)| reference_join(&fixture.driver_rows, &[key], t, DRIVER_TTL, true));
        let actual = events.is_valid(row).then(|| events.value(row));
        assert_eq!(actual, chosen.map(|r| r.event_ts), "label row {row}");
        found += usize::from(chosen.is_some());
    }
    assert!(found > 50, "{found}");
}
