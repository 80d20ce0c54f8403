//! A randomized (fixed-seed) data set for comparing the fast paths with the reference:
//! two views with different keys and TTLs, source files in three timestamp units (one in a
//! subdirectory), push-log appends, and a label table with unknown entities, labels before
//! the first row, duplicates, a null time, and times on the same one-second grid as the rows
//! so that both TTL bounds are hit exactly and ties on event time are common.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMillisecondArray,
};
use arrow::datatypes::TimeUnit;
use quiver_core::ResolvedView;
use quiver_core::value::{KeyValue, Row, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;

use crate::OfflineStore;
use crate::testutil::{SECOND, city_view, test_view, write_rows};

pub(crate) const DRIVER_TTL: i64 = 20 * SECOND;
pub(crate) const CITY_TTL: i64 = 0;

pub(crate) struct Fixture {
    pub(crate) _dir: TempDir,
    pub(crate) root: std::path::PathBuf,
    pub(crate) store: OfflineStore,
    pub(crate) driver: ResolvedView,
    pub(crate) city: ResolvedView,
    /// All rows of each view in (file order, row order), push log last.
    pub(crate) driver_rows: Vec<Row>,
    pub(crate) city_rows: Vec<Row>,
    /// Columns: label_id int64, driver_id int32, city utf8, event_timestamp ms, weight f64.
    pub(crate) labels: Vec<RecordBatch>,
}

fn driver_row(rng: &mut StdRng, n: usize, spread: i64) -> Row {
    let event_ts = rng.random_range(0..spread) * SECOND;
    Row {
        key: vec![KeyValue::Int64(rng.random_range(1..=30))],
        event_ts,
        created_ts: (!rng.random_bool(0.15))
            .then(|| event_ts + rng.random_range(0..4) * 10 * SECOND),
        values: vec![
            if rng.random_bool(0.1) {
                Value::Null
            } else {
                Value::Float32(rng.random_range(0..1000) as f32 / 8.0)
            },
            Value::Int64(rng.random_range(0..50)),
            Value::String(format!("row{n}")),
        ],
    }
}

fn city_row(rng: &mut StdRng, spread: i64) -> Row {
    let tags = (0..rng.random_range(0..3))
        .map(|i| {
            if i == 1 {
                Value::Null
            } else {
                Value::Float32(rng.random_range(0..10) as f32)
            }
        })
        .collect();
    Row {
        key: vec![KeyValue::String(format!("c{}", rng.random_range(0..8)))],
        event_ts: rng.random_range(0..spread) * SECOND,
        created_ts: None,
        values: vec![
            if rng.random_bool(0.1) {
                Value::Null
            } else {
                Value::Float64(rng.random_range(0..100) as f64)
            },
            if rng.random_bool(0.1) {
                Value::Null
            } else {
                Value::List(tags)
            },
        ],
    }
}

impl Fixture {
    pub(crate) fn new(seed: u64) -> Fixture {
        Fixture::with_spread(seed, 80)
    }

    /// Event times take `spread` values (seconds `0..spread`): a small spread makes rows
    /// equal on `(event_ts, created_ts)` common.
    pub(crate) fn with_spread(seed: u64, spread: i64) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_path_buf();
        let mut rng = StdRng::seed_from_u64(seed);
        let store = crate::testutil::store(&root.join("data"), &root);
        let driver = test_view(&root, "driver_stats", DRIVER_TTL);
        let city = city_view(&root, CITY_TTL);
        let mut counter = 0;
        let mut next_driver = |rng: &mut StdRng, n: usize| -> Vec<Row> {
            (0..n)
                .map(|_| {
                    counter += 1;
                    driver_row(rng, counter, spread)
                })
                .collect()
        };
        let mut driver_rows = Vec::new();
        let src = root.join("driver_stats_src");
        let files = [
            ("a.parquet", TimeUnit::Nanosecond, None),
            ("b/c.parquet", TimeUnit::Millisecond, Some("UTC")),
            ("d.parquet", TimeUnit::Microsecond, Some("America/New_York")),
        ];
        for (name, unit, zone) in files {
            let rows = next_driver(&mut rng, 150);
            write_rows(&src.join(name), &driver, &rows, unit, zone);
            driver_rows.extend(rows);
        }
        for _ in 0..2 {
            let rows = next_driver(&mut rng, 50);
            store.append_push_log(&driver, &rows).expect("push");
            driver_rows.extend(rows);
        }
        let mut city_rows: Vec<Row> = (0..150).map(|_| city_row(&mut rng, spread)).collect();
        write_rows(
            &root.join("city_src/all.parquet"),
            &city,
            &city_rows,
            TimeUnit::Second,
            None,
        );
        let pushed: Vec<Row> = (0..40).map(|_| city_row(&mut rng, spread)).collect();
        store.append_push_log(&city, &pushed).expect("push");
        city_rows.extend(pushed);
        let labels = labels(&mut rng);
        Fixture {
            _dir: dir,
            root,
            store,
            driver,
            city,
            driver_rows,
            city_rows,
            labels,
        }
    }
}

fn labels(rng: &mut StdRng) -> Vec<RecordBatch> {
    let mut driver_ids: Vec<Option<i32>> = Vec::new();
    let mut cities: Vec<Option<String>> = Vec::new();
    let mut times: Vec<Option<i64>> = Vec::new();
    for i in 0..300 {
        if i > 0 && rng.random_bool(0.1) {
            let last = driver_ids.len() - 1;
            driver_ids.push(driver_ids[last]);
            cities.push(cities[last].clone());
            times.push(times[last]);
            continue;
        }
        driver_ids.push(Some(rng.random_range(-2..=34)));
        cities.push((!rng.random_bool(0.05)).then(|| format!("c{}", rng.random_range(0..10))));
        times.push(Some(rng.random_range(-10..110) * 1_000));
    }
    times[7] = None;
    let n = times.len();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("label_id", arrow::datatypes::DataType::Int64, false),
        arrow::datatypes::Field::new("driver_id", arrow::datatypes::DataType::Int32, true),
        arrow::datatypes::Field::new("city", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new(
            "event_timestamp",
            arrow::datatypes::DataType::Timestamp(TimeUnit::Millisecond, None),
            true,
        ),
        arrow::datatypes::Field::new("weight", arrow::datatypes::DataType::Float64, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(0..n as i64)),
        Arc::new(Int32Array::from(driver_ids)),
        Arc::new(StringArray::from(cities)),
        Arc::new(TimestampMillisecondArray::from(times)),
        Arc::new(Float64Array::from_iter_values(
            (0..n).map(|i| i as f64 / 2.0),
        )),
    ];
    let all = RecordBatch::try_new(schema, columns).expect("labels");
    // Uneven batches, one of them empty.
    vec![
        all.slice(0, 100),
        all.slice(100, 0),
        all.slice(100, 7),
        all.slice(107, n - 107),
    ]
}
