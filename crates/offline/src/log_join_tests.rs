//! The served-log join against a reference: a nested loop over the logged rows in log order.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Float32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::compute::concat_batches;
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema, SchemaRef, TimeUnit};
use futures::TryStreamExt;
use quiver_core::types::{KeyType, ValueType};

use crate::error::Error;
use crate::testutil::store;
use crate::{LabelInput, LogFeature, LogJoinRequest, LogMatch, ServedLogDir};

/// One logged row: driver, request, served_at, version, rate (v1 and v2), trips (v2 only).
#[derive(Debug, Clone)]
struct Logged {
    driver: i64,
    request: String,
    served: i64,
    version: i64,
    rate: Option<f32>,
    trips: Option<i64>,
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Deterministic pseudo-random numbers (an LCG; the test needs variety, not quality).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Writes `rows` as log files of four rows each, in order; version 2 files have `trips`.
fn write_log(dir: &ServedLogDir, rows: &[Logged]) {
    for (n, chunk) in rows.chunks(4).enumerate() {
        let version = chunk[0].version;
        let mut fields = vec![
            Field::new("request_id", DataType::Utf8, false),
            Field::new("served_at", ts_type(), false),
            Field::new("service_version", DataType::Int64, false),
            Field::new("driver_id", DataType::Int64, false),
            Field::new("trips__rate", DataType::Float32, true),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from_iter_values(
                chunk.iter().map(|r| &r.request),
            )),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(chunk.iter().map(|r| r.served))
                    .with_timezone("UTC"),
            ),
            Arc::new(Int64Array::from_iter_values(
                chunk.iter().map(|r| r.version),
            )),
            Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.driver))),
            Arc::new(Float32Array::from_iter(chunk.iter().map(|r| r.rate))),
        ];
        if version == 2 {
            fields.push(Field::new("trips__trips", DataType::Int64, true));
            columns.push(Arc::new(Int64Array::from_iter(
                chunk.iter().map(|r| r.trips),
            )));
        }
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
        // Names sort by the first micros: n keeps the files in write order.
        let mut file = dir
            .create("svc", version as u32, n as i64, batch.schema(), vec![])
            .expect("create");
        file.write(&batch).expect("write");
        file.commit().expect("commit");
    }
}

fn logged_rows(seed: u64) -> Vec<Logged> {
    let mut rng = Lcg(seed);
    (0..160)
        .map(|i| {
            let version = if i < 80 { 1 } else { 2 };
            Logged {
                driver: rng.next(6) as i64,
                // Some requests repeat (a client retrying with its id).
                request: format!("r{}", rng.next(120)),
                // Few distinct times: ties between rows of one driver.
                served: 100 + rng.next(40) as i64 * 10,
                version,
                rate: (rng.next(7) != 0).then(|| rng.next(1000) as f32 / 7.0),
                trips: (version == 2).then(|| rng.next(50) as i64),
            }
        })
        .collect()
}

/// Labels: `driver_id`, `request_id` (`by_request`) or `event_timestamp`, and `label`.
fn label_batch(drivers: &[i64], requests: &[&str], times: &[Option<i64>]) -> RecordBatch {
    let by_request = !requests.is_empty();
    let mut fields = vec![Field::new("driver_id", DataType::Int64, true)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(drivers.to_vec()))];
    if by_request {
        fields.push(Field::new("request_id", DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from(requests.to_vec())));
    } else {
        fields.push(Field::new("event_timestamp", ts_type(), true));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(times.to_vec()).with_timezone("UTC"),
        ));
    }
    fields.push(Field::new("label", DataType::Int64, true));
    columns.push(Arc::new(Int64Array::from_iter_values(
        0..drivers.len() as i64,
    )));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("labels")
}

fn request(labels: RecordBatch, dir: &ServedLogDir, on: LogMatch, max_rows: u64) -> LogJoinRequest {
    LogJoinRequest {
        labels: LabelInput::Batches(vec![labels]),
        on,
        log: dir.clone(),
        service: "svc".into(),
        version: None,
        window: (0, i64::MAX),
        keys: vec![("driver_id".into(), KeyType::Int64)],
        features: vec![
            feature("trips__rate", "rate", "float32"),
            feature("trips__trips", "trips", "int64"),
        ],
        max_rows: (max_rows, "--max-log-export-rows"),
    }
}

fn feature(column: &str, output: &str, value_type: &str) -> LogFeature {
    LogFeature {
        column: column.into(),
        output: output.into(),
        value_type: ValueType::parse(value_type).expect("type"),
    }
}

async fn run(dir: &ServedLogDir, labels: RecordBatch, on: LogMatch) -> crate::Result<RecordBatch> {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = store(tmp.path(), tmp.path());
    let output = store
        .served_log_join(request(labels, dir, on, 1000))
        .await?;
    let schema: SchemaRef = Arc::clone(&output.schema);
    let batches: Vec<RecordBatch> = output.stream.try_collect().await?;
    Ok(concat_batches(&schema, &batches)?)
}

/// The reference: the greatest (served_at, log position) among the rows `accepts` takes.
fn reference(rows: &[Logged], accepts: impl Fn(&Logged) -> bool) -> Option<&Logged> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| accepts(r))
        .max_by_key(|(i, r)| (r.served, *i))
        .map(|(_, r)| r)
}

/// Checks output row `i` against the reference's choice.
fn check_row(out: &RecordBatch, i: usize, want: Option<&Logged>) {
    let rate = out.column(3).as_primitive::<Float32Type>();
    let trips = out.column(4).as_primitive::<Int64Type>();
    let served = out
        .column(5)
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>();
    let version = out.column(6).as_primitive::<Int64Type>();
    let get = |a: &dyn Array| a.is_valid(i);
    match want {
        None => {
            assert!(!get(served) && !get(version) && !get(rate), "row {i}");
        }
        Some(row) => {
            assert_eq!(served.value(i), row.served, "row {i}");
            assert_eq!(version.value(i), row.version, "row {i}");
            let got_rate = get(rate).then(|| rate.value(i));
            assert_eq!(
                got_rate.map(f32::to_bits),
                row.rate.map(f32::to_bits),
                "row {i}"
            );
            assert_eq!(get(trips).then(|| trips.value(i)), row.trips, "row {i}");
        }
    }
}

#[tokio::test]
async fn keys_join_takes_the_latest_logged_row_at_or_before_the_label_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ServedLogDir::new(tmp.path());
    let rows = logged_rows(7);
    write_log(&dir, &rows);
    let mut rng = Lcg(11);
    let n = 120;
    // Drivers 0..7 (6 is never logged); times on, between and around the logged times.
    let drivers: Vec<i64> = (0..n).map(|_| rng.next(7) as i64).collect();
    let times: Vec<Option<i64>> = (0..n)
        .map(|_| (rng.next(12) != 0).then(|| 95 + rng.next(420) as i64))
        .collect();
    for max_age in [0, 25] {
        let labels = label_batch(&drivers, &[], &times);
        let on = LogMatch::Keys {
            timestamp_column: "event_timestamp".into(),
            max_age,
        };
        let out = run(&dir, labels, on).await.expect("join");
        assert_eq!(out.num_rows(), n);
        assert_eq!(out.schema().field(7).name(), "served_request_id");
        let matched_request = out.column(7).as_string::<i32>();
        for i in 0..n {
            let want = times[i].and_then(|t| {
                reference(&rows, |r| {
                    r.driver == drivers[i]
                        && r.served <= t
                        && (max_age == 0 || r.served >= t - max_age)
                })
            });
            check_row(&out, i, want);
            if let Some(row) = want {
                assert_eq!(matched_request.value(i), row.request, "row {i}");
            }
        }
    }
}

#[tokio::test]
async fn request_id_join_takes_the_row_logged_for_the_request_and_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ServedLogDir::new(tmp.path());
    let rows = logged_rows(3);
    write_log(&dir, &rows);
    let mut rng = Lcg(5);
    let n = 150;
    let picks: Vec<(i64, String)> = (0..n)
        .map(|_| match rng.next(4) {
            // A wrong driver for a logged request, or an unknown request.
            0 => (rng.next(7) as i64, format!("r{}", rng.next(140))),
            _ => {
                let row = &rows[rng.next(rows.len() as u64) as usize];
                (row.driver, row.request.clone())
            }
        })
        .collect();
    let drivers: Vec<i64> = picks.iter().map(|(d, _)| *d).collect();
    let requests: Vec<&str> = picks.iter().map(|(_, r)| r.as_str()).collect();
    let labels = label_batch(&drivers, &requests, &[]);
    let on = LogMatch::RequestId {
        column: "request_id".into(),
    };
    let out = run(&dir, labels, on).await.expect("join");
    assert_eq!(out.num_columns(), 7, "no request_id column added");
    for (i, (driver, request)) in picks.iter().enumerate() {
        check_row(
            &out,
            i,
            reference(&rows, |r| r.driver == *driver && &r.request == request),
        );
    }
}

/// The error of a join that fails, once its stream is read (the log is read then).
async fn drained(store: &crate::OfflineStore, request: LogJoinRequest) -> Error {
    match store.served_log_join(request).await {
        Ok(output) => {
            let read: crate::Result<Vec<RecordBatch>> = output.stream.try_collect().await;
            read.expect_err("the join fails")
        }
        Err(error) => error,
    }
}

#[tokio::test]
async fn a_log_over_the_row_limit_or_of_another_type_is_refused_before_joining() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = ServedLogDir::new(tmp.path());
    write_log(&dir, &logged_rows(1));
    let data = tempfile::tempdir().expect("tmp");
    let store = store(data.path(), data.path());
    let labels = || label_batch(&[1], &["r1"], &[]);
    let on = LogMatch::RequestId {
        column: "request_id".into(),
    };
    let error = drained(&store, request(labels(), &dir, on.clone(), 159)).await;
    assert!(
        matches!(&error, Error::TooLarge(m) if m.contains("160 rows") && m.contains("--max-log-export-rows")),
        "{error}"
    );
    let mut wrong = request(labels(), &dir, on, 1000);
    wrong.features[0].value_type = ValueType::parse("float64").expect("type");
    let error = drained(&store, wrong).await;
    assert!(
        matches!(&error, Error::InvalidArgument { field, .. } if field == "trips__rate"),
        "{error}"
    );
}
