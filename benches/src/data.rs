//! Driver-style benchmark data: `entities x hours` hourly rows with 9 features of mixed types,
//! about 1 % duplicate event times with another created time, gaps longer than the 2h TTL,
//! label sets whose times fall before, between, on and after feature rows, and manifests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int32Array, Int64Array, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rand::{Rng, SeedableRng};

const HOUR: i64 = 3_600_000_000;
/// 2026-01-01T00:00:00Z.
pub(crate) const START: i64 = 1_767_225_600_000_000;

#[derive(Debug, clap::Args)]
pub(crate) struct GenArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    entities: i64,
    #[arg(long, default_value_t = 720)]
    hours: i64,
    /// Label set sizes to write (`labels_<n>.parquet`).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    labels: Vec<usize>,
}

pub(crate) const MANIFEST: &str = r#"kind: Entity
name: driver
join_keys: [{name: driver_id, type: int64}]
---
kind: Source
name: driver_hourly
parquet: driver_hourly.parquet
event_time: event_timestamp
created_time: created
---
kind: FeatureView
name: driver_hourly_stats
entities: [driver]
source: driver_hourly
ttl: 2h
features:
  - {name: conv_rate, type: float32}
  - {name: acc_rate, type: float32}
  - {name: avg_daily_trips, type: int64}
  - {name: rating, type: float64}
  - {name: vehicle_type, type: string}
  - {name: zone, type: string}
  - {name: active, type: bool}
  - {name: trips_today, type: int32}
  - {name: last_trip, type: timestamp}
---
kind: FeatureService
name: driver_model
features: [{view: driver_hourly_stats}]
"#;

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn features_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("created", ts_type(), false),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
        Field::new("rating", DataType::Float64, true),
        Field::new("vehicle_type", DataType::Utf8, true),
        Field::new("zone", DataType::Utf8, true),
        Field::new("active", DataType::Boolean, true),
        Field::new("trips_today", DataType::Int32, true),
        Field::new("last_trip", ts_type(), true),
    ]))
}

fn writer(path: &Path, schema: Arc<Schema>) -> Result<ArrowWriter<std::fs::File>> {
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(256 * 1024))
        .build();
    Ok(ArrowWriter::try_new(
        std::fs::File::create(path)?,
        schema,
        Some(props),
    )?)
}

/// One hour of rows for every entity, skipping each entity's gap hours.
fn hour_batch(rng: &mut rand::rngs::StdRng, entities: i64, hour: i64) -> Result<RecordBatch> {
    const VEHICLES: [&str; 4] = ["sedan", "suv", "van", "bike"];
    const ZONES: [&str; 6] = ["north", "south", "east", "west", "center", "airport"];
    let n = entities as usize;
    let (mut ids, mut ev, mut cr) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (
        mut conv,
        mut acc,
        mut trips,
        mut rating,
        mut vehicle,
        mut zone,
        mut active,
        mut today,
        mut last,
    ) = (
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
        vec![],
    );
    for entity in 0..entities {
        // Gaps: every entity skips 6 hours somewhere each 120 hours (longer than the 2h TTL).
        let gap_start = (entity * 37) % 114;
        let in_cycle = hour % 120;
        if in_cycle >= gap_start && in_cycle < gap_start + 6 {
            continue;
        }
        let event = START + hour * HOUR;
        let copies = if rng.random_range(0..100) == 0 { 2 } else { 1 };
        for copy in 0..copies {
            ids.push(1001 + entity);
            ev.push(event);
            cr.push(event + 60_000_000 + copy * 1_000_000 + rng.random_range(0..1_000_000));
            conv.push(rng.random_range(0.0f32..1.0));
            acc.push(rng.random_range(0.5f32..1.0));
            trips.push(rng.random_range(0..400i64));
            rating.push(if rng.random_range(0..50) == 0 {
                None
            } else {
                Some(rng.random_range(1.0f64..5.0))
            });
            vehicle.push(VEHICLES[(entity as usize) % 4]);
            zone.push(ZONES[rng.random_range(0..ZONES.len())]);
            active.push(rng.random_bool(0.8));
            today.push(rng.random_range(0..40i32));
            last.push(event - rng.random_range(0..HOUR));
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(ev).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(cr).with_timezone("UTC")),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Float32Array::from(acc)),
        Arc::new(Int64Array::from(trips)),
        Arc::new(Float64Array::from(rating)),
        Arc::new(StringArray::from(vehicle)),
        Arc::new(StringArray::from(zone)),
        Arc::new(BooleanArray::from(active)),
        Arc::new(Int32Array::from(today)),
        Arc::new(TimestampMicrosecondArray::from(last).with_timezone("UTC")),
    ];
    Ok(RecordBatch::try_new(features_schema(), columns)?)
}

fn labels(
    rng: &mut rand::rngs::StdRng,
    entities: i64,
    hours: i64,
    n: usize,
) -> Result<RecordBatch> {
    let (mut ids, mut ts, mut label) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        // 2 % unknown entities.
        ids.push(1001 + rng.random_range(0..entities + entities / 50));
        let t = match rng.random_range(0..10) {
            0 => START - rng.random_range(0..3 * HOUR), // before the first row
            1 => START + rng.random_range(0..hours) * HOUR, // exactly on a row
            2 => START + hours * HOUR + rng.random_range(0..3 * HOUR), // after the last row
            _ => START + rng.random_range(0..hours * HOUR), // between rows
        };
        ts.push(t);
        label.push(rng.random_range(0..2i64));
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        Field::new("event_timestamp", ts_type(), false),
        Field::new("label", DataType::Int64, false),
    ]));
    Ok(RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")),
            Arc::new(Int64Array::from(label)),
        ],
    )?)
}

pub(crate) fn generate(args: &GenArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let path = args.out.join("driver_hourly.parquet");
    let mut w = writer(&path, features_schema())?;
    let mut rows = 0;
    for hour in 0..args.hours {
        let batch = hour_batch(&mut rng, args.entities, hour)?;
        rows += batch.num_rows();
        w.write(&batch)?;
    }
    w.close()?;
    println!("{}: {rows} rows", path.display());
    for &n in &args.labels {
        let batch = labels(&mut rng, args.entities, args.hours, n)?;
        let path = args.out.join(format!("labels_{n}.parquet"));
        let mut w = writer(&path, batch.schema())?;
        w.write(&batch)?;
        w.close()?;
        println!("{}: {n} labels", path.display());
    }
    std::fs::write(args.out.join("features.yaml"), MANIFEST)?;
    Ok(())
}
