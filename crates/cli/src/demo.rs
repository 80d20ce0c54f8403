//! The quickstart's demo project: driver statistics as Parquet, labels, and manifests.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::array::{
    ArrayRef, Float32Array, Float32Builder, Int64Array, ListBuilder, StringArray,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use rand::{Rng, SeedableRng};

pub const HOUR: i64 = 3_600_000_000;

/// The demo manifests; `data/` paths are relative to this file.
pub const MANIFEST: &str = r#"kind: Entity
name: driver
join_keys: [{name: driver_id, type: int64}]
description: A ride-hailing driver
---
kind: Source
name: driver_stats_source
parquet: ../data/driver_stats.parquet
event_time: event_timestamp
created_time: created
push: true
---
kind: FeatureView
name: driver_stats
entities: [driver]
source: driver_stats_source
ttl: 2h
features:
  - {name: conv_rate, type: float32}
  - {name: acc_rate, type: float32}
  - {name: avg_daily_trips, type: int64}
  - {name: vehicle_type, type: string}
  - {name: embedding, type: list<float32>}
owner: quickstart@example.com
monitoring:
  max_staleness: 2h
  # Checked on every push; `on_violation: reject` would refuse a violating push.
  expectations:
    conv_rate: {not_null: true, min: 0, max: 1}
    vehicle_type: {allowed: [sedan, suv, van, bike]}
---
kind: FeatureService
name: driver_model
features: [{view: driver_stats, features: [conv_rate, acc_rate, avg_daily_trips, vehicle_type]}]
# Every hour the server scores the last day of data against the latest training export.
monitoring:
  schedule: {every: 1h, window: 24h, reference: latest_export}
# Log what is served (every driver here; production services sample a fraction of keys), so
# that `quiver skew` can check served values against the training join; every hour the
# server checks the last day and exports the skew rate to Prometheus.
logging:
  sample_rate: 1.0
  skew_check: {every: 1h, window: 24h}
"#;

/// Shape of the generated data.
#[derive(Debug, Clone, Copy)]
pub struct DemoShape {
    pub drivers: i64,
    pub hours: i64,
    /// Last event time (exclusive upper bound of the data), micros.
    pub end: i64,
    pub labels: usize,
}

fn timestamp_field(name: &str) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        false,
    )
}

/// Hourly rows per driver over `[end - hours, end)`; every 7th driver skips a few hours so
/// that some lookups fall outside the TTL.
pub fn driver_stats(shape: DemoShape) -> Result<RecordBatch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut ids, mut events, mut created, mut conv, mut acc, mut trips, mut vehicle) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut embedding = ListBuilder::new(Float32Builder::new()).with_field(Arc::new(Field::new(
        "item",
        DataType::Float32,
        true,
    )));
    let vehicles = ["sedan", "suv", "van", "bike"];
    for driver in 0..shape.drivers {
        let id = 1001 + driver;
        let hours = if driver % 7 == 3 {
            shape.hours - 4
        } else {
            shape.hours
        };
        for h in 0..hours {
            let event = shape.end - (shape.hours - h) * HOUR;
            ids.push(id);
            events.push(event);
            created.push(event + rng.random_range(0..600) * 1_000_000);
            conv.push(rng.random_range(0.0f32..1.0));
            acc.push(rng.random_range(0.5f32..1.0));
            trips.push(rng.random_range(0..40i64));
            vehicle.push(vehicles[(id as usize + h as usize / 24) % vehicles.len()]);
            for _ in 0..4 {
                embedding
                    .values()
                    .append_value(rng.random_range(-1.0f32..1.0));
            }
            embedding.append(true);
        }
    }
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        timestamp_field("event_timestamp"),
        timestamp_field("created"),
        Field::new("conv_rate", DataType::Float32, true),
        Field::new("acc_rate", DataType::Float32, true),
        Field::new("avg_daily_trips", DataType::Int64, true),
        Field::new("vehicle_type", DataType::Utf8, true),
        Field::new(
            "embedding",
            DataType::List(Arc::new(Field::new("item", DataType::Float32, true))),
            true,
        ),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(TimestampMicrosecondArray::from(events).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
        Arc::new(Float32Array::from(conv)),
        Arc::new(Float32Array::from(acc)),
        Arc::new(Int64Array::from(trips)),
        Arc::new(StringArray::from(vehicle)),
        Arc::new(embedding.finish()),
    ];
    Ok(RecordBatch::try_new(Arc::new(schema), columns)?)
}

/// Labels: random drivers (a few unknown) at random times, with a `trip_completed` label.
pub fn labels(shape: DemoShape) -> Result<RecordBatch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut ids = Vec::with_capacity(shape.labels);
    let mut times = Vec::with_capacity(shape.labels);
    let mut outcome = Vec::with_capacity(shape.labels);
    for _ in 0..shape.labels {
        ids.push(1001 + rng.random_range(0..shape.drivers + 2));
        times.push(shape.end - rng.random_range(0..shape.hours * 3600) * 1_000_000);
        outcome.push(rng.random_range(0..2i64));
    }
    let schema = Schema::new(vec![
        Field::new("driver_id", DataType::Int64, false),
        timestamp_field("event_timestamp"),
        Field::new("trip_completed", DataType::Int64, false),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Int64Array::from(ids)),
            Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
            Arc::new(Int64Array::from(outcome)),
        ],
    )?)
}

pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None)?;
    writer.write(batch)?;
    writer.close()?;
    Ok(())
}

/// Writes the whole demo project under `dir`: `data/`, `features/`, `labels.parquet`.
pub fn write_project(dir: &Path, shape: DemoShape) -> Result<()> {
    write_parquet(
        &dir.join("data/driver_stats.parquet"),
        &driver_stats(shape)?,
    )?;
    write_parquet(&dir.join("data/labels.parquet"), &labels(shape)?)?;
    let features = dir.join("features");
    std::fs::create_dir_all(&features)?;
    std::fs::write(features.join("driver.yaml"), MANIFEST)?;
    Ok(())
}
