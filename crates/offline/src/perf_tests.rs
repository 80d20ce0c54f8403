//! Throughput check at the target scale (7.2M rows x 9 features), ignored by default:
//! `cargo test --release -p quiver-offline perf -- --ignored --nocapture`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use arrow::array::{
    ArrayRef, Float32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use futures::TryStreamExt;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use quiver_core::model::Feature;
use quiver_core::types::ValueType;

use crate::testutil::{SECOND, selected, test_view};
use crate::{JoinRequest, LabelInput};

const N_KEYS: i64 = 100_000;
const N_HOURS: i64 = 72;

fn features() -> Vec<(&'static str, &'static str)> {
    vec![
        ("conv_rate", "float32"),
        ("acc_rate", "float32"),
        ("avg_daily_trips", "int64"),
        ("f_a", "float64"),
        ("f_b", "float64"),
        ("f_c", "int32"),
        ("f_d", "float32"),
        ("f_e", "int64"),
        ("f_s", "string"),
    ]
}

fn batch(start: i64, n: i64) -> RecordBatch {
    let rows = start..start + n;
    let mut fields = vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new(
            "event_ts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new(
            "created",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ];
    let event = |i: i64| (i / N_KEYS) * 3600 * SECOND;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(
            rows.clone().map(|i| i % N_KEYS),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.clone().map(event),
        )),
        Arc::new(TimestampMicrosecondArray::from_iter_values(
            rows.clone().map(|i| event(i) + SECOND),
        )),
    ];
    for (name, value_type) in features() {
        let column: ArrayRef = match value_type {
            "float32" => Arc::new(Float32Array::from_iter_values(
                rows.clone().map(|i| (i % 997) as f32),
            )),
            "float64" => Arc::new(Float64Array::from_iter_values(
                rows.clone().map(|i| (i % 991) as f64),
            )),
            "int32" => Arc::new(Int32Array::from_iter_values(
                rows.clone().map(|i| (i % 83) as i32),
            )),
            "int64" => Arc::new(Int64Array::from_iter_values(rows.clone().map(|i| i % 7919))),
            _ => Arc::new(StringArray::from_iter_values(
                rows.clone().map(|i| format!("t{}", i % 50)),
            )),
        };
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch")
}

fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "performance check; run in release"]
async fn perf_scan_latest_and_join_at_target_scale() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut view = test_view(dir.path(), "perf", 2 * 3600 * SECOND);
    view.source.renames.clear();
    view.features = features()
        .into_iter()
        .map(|(name, t)| Feature {
            name: name.into(),
            value_type: ValueType::parse(t).expect("type"),
        })
        .collect();
    let total = N_KEYS * N_HOURS;
    let path = dir.path().join("perf_src/data.parquet");
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let started = Instant::now();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let first = batch(0, 1);
    let file = std::fs::File::create(&path).expect("create");
    let mut writer = ArrowWriter::try_new(file, first.schema(), Some(props)).expect("writer");
    let chunk = 100_000;
    for start in (0..total).step_by(chunk as usize) {
        writer
            .write(&batch(start, chunk.min(total - start)))
            .expect("write");
    }
    writer.close().expect("close");
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    println!(
        "wrote {total} rows ({} MiB) in {:?}",
        size >> 20,
        started.elapsed()
    );

    let store = crate::testutil::store(&dir.path().join("data"), dir.path());
    let scanned = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let latest = store
        .scan_latest(&view, i64::MIN, i64::MAX, scanned.clone())
        .await
        .expect("scan");
    let reduced = started.elapsed();
    let n_rows: usize = latest.map(|rows| rows.len()).sum();
    let elapsed = started.elapsed();
    let rows = scanned.load(Ordering::Relaxed);
    println!(
        "scan_latest: {rows} rows -> {n_rows} keys in {elapsed:?} (reduce {reduced:?}): {:.2} M rows/s, peak RSS {} MiB",
        rows as f64 / elapsed.as_secs_f64() / 1e6,
        peak_rss_mib()
    );
    assert_eq!(n_rows as i64, N_KEYS);

    let n_labels = 200_000;
    let labels = RecordBatch::try_from_iter(vec![
        (
            "driver_id",
            Arc::new(Int64Array::from_iter_values(
                (0..n_labels).map(|i| (i * 7919) % (N_KEYS + 10)),
            )) as ArrayRef,
        ),
        (
            "event_timestamp",
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                (0..n_labels).map(|i| (i % (N_HOURS * 3600)) * SECOND),
            )),
        ),
    ])
    .expect("labels");
    let started = Instant::now();
    let output = store
        .point_in_time_join(JoinRequest {
            labels: LabelInput::Batches(vec![labels]),
            timestamp_column: "event_timestamp".into(),
            views: vec![selected(
                &view,
                &view
                    .features
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>(),
                "perf",
            )],
            full_names: false,
            as_known_at: false,
            event_times: false,
        })
        .await
        .expect("join");
    let built = started.elapsed();
    let stats = Arc::clone(&output.stats);
    let batches: Vec<RecordBatch> = output.stream.try_collect().await.expect("stream");
    let out_rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    println!(
        "join: {out_rows} labels, {} matched, index built in {built:?}, total {:?}, peak RSS {} MiB",
        stats.matched[0].1.load(Ordering::Relaxed),
        started.elapsed(),
        peak_rss_mib()
    );
    assert_eq!(out_rows, n_labels as usize);
}
