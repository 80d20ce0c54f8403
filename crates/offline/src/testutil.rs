//! Test fixtures: views, Parquet files of rows, and the reference implementation the fast
//! paths are compared against (a nested loop over plain rows using `quiver_core::semantics`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use quiver_core::ResolvedView;
use quiver_core::model::{Feature, JoinKey, SourceSpec};
use quiver_core::selection::SelectedView;
use quiver_core::semantics::row_order;
use quiver_core::types::{KeyType, ValueType};
use quiver_core::value::{KeyValue, Row};

pub(crate) const SECOND: i64 = 1_000_000;

/// A store of `data_dir` that reads sources and label tables under `root`.
pub(crate) fn store(data_dir: &Path, root: &Path) -> crate::OfflineStore {
    let roots = |what, flag| crate::Roots::new(what, flag, &[root.to_path_buf()]).expect("roots");
    crate::OfflineStore::new(
        data_dir,
        roots("a source root", "--source-root"),
        roots("a labels root", "--labels-root"),
    )
}

pub(crate) fn feature(name: &str, value_type: &str) -> Feature {
    Feature {
        name: name.into(),
        value_type: ValueType::parse(value_type).expect("type"),
    }
}

/// `driver` view: key `driver_id` int64, source `<root>/<name>_src/` with a created column,
/// features `conv_rate` float32, `trips` int64 (source column `n_trips`), `note` string.
pub(crate) fn test_view(root: &Path, name: &str, ttl: i64) -> ResolvedView {
    let source_dir = root.join(format!("{name}_src"));
    ResolvedView {
        name: name.into(),
        version: 1,
        fingerprint: "fp".into(),
        entities: vec!["driver".into()],
        join_keys: vec![JoinKey {
            name: "driver_id".into(),
            key_type: KeyType::Int64,
        }],
        source_name: format!("{name}_source"),
        source: SourceSpec {
            parquet: Some(source_dir.to_string_lossy().into_owned()),
            push: true,
            event_time: "event_ts".into(),
            created_time: Some("created".into()),
            renames: BTreeMap::from([("n_trips".into(), "trips".into())]),
        },
        ttl,
        online: true,
        generation: 1,
        features: vec![
            feature("conv_rate", "float32"),
            feature("trips", "int64"),
            feature("note", "string"),
        ],
    }
}

/// `city` view: key `city` string, no created column, features `avg` float64 and
/// `tags` list<float32>; source `<root>/city_src/`.
pub(crate) fn city_view(root: &Path, ttl: i64) -> ResolvedView {
    ResolvedView {
        name: "city_stats".into(),
        version: 2,
        fingerprint: "fp2".into(),
        entities: vec!["city".into()],
        join_keys: vec![JoinKey {
            name: "city".into(),
            key_type: KeyType::String,
        }],
        source_name: "city_source".into(),
        source: SourceSpec {
            parquet: Some(root.join("city_src").to_string_lossy().into_owned()),
            push: true,
            event_time: "ts".into(),
            created_time: None,
            renames: BTreeMap::new(),
        },
        ttl,
        online: true,
        generation: 1,
        features: vec![feature("avg", "float64"), feature("tags", "list<float32>")],
    }
}

/// Writes `rows` as a source file of `view`, with time columns in `unit` (and `zone`).
pub(crate) fn write_rows(
    path: &Path,
    view: &ResolvedView,
    rows: &[Row],
    unit: TimeUnit,
    zone: Option<&str>,
) {
    let batch = crate::push_log::push_log_batch(view, rows).expect("rows fit the view");
    let target = DataType::Timestamp(unit, zone.map(Arc::from));
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        if matches!(field.data_type(), DataType::Timestamp(_, _)) {
            let cast = arrow::compute::cast(column, &target).expect("cast");
            fields.push(Field::new(field.name(), target.clone(), true));
            columns.push(cast);
        } else {
            fields.push(field.as_ref().clone());
            columns.push(Arc::clone(column));
        }
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
    write_batches(path, &[batch]);
}

pub(crate) fn write_batches(path: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    let file = std::fs::File::create(path).expect("create");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(64))
        .build();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), Some(props))
        .expect("writer");
    for batch in batches {
        writer.write(batch).expect("write");
    }
    writer.close().expect("close");
}

/// The chosen row for a label: the greatest candidate by (row order, position in `rows`).
pub(crate) fn reference_join<'a>(
    rows: &'a [Row],
    key: &[KeyValue],
    t: i64,
    ttl: i64,
    as_known_at: bool,
) -> Option<&'a Row> {
    rows.iter()
        .enumerate()
        .filter(|(_, r)| {
            // SEMANTICS.md "Point-in-time join", written out here rather than calling
            // `semantics::is_candidate`, which the join itself uses: the reference stays
            // independent of the code under test.
            let in_ttl = ttl <= 0 || r.event_ts >= t - ttl;
            let known = !as_known_at || r.created_ts.is_none_or(|c| c <= t);
            r.key == key && r.event_ts <= t && in_ttl && known
        })
        .max_by_key(|(i, r)| (row_order(r.event_ts, r.created_ts), *i))
        .map(|(_, r)| r)
}

/// Per key, the greatest row with `start <= event_ts < end` (later rows win ties).
pub(crate) fn reference_latest(rows: &[Row], start: i64, end: i64) -> BTreeMap<Vec<KeyValue>, Row> {
    let mut latest: BTreeMap<Vec<KeyValue>, Row> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| start <= r.event_ts && r.event_ts < end)
    {
        let order = row_order(row.event_ts, row.created_ts);
        let wins = latest
            .get(&row.key)
            .is_none_or(|best| order >= row_order(best.event_ts, best.created_ts));
        if wins {
            latest.insert(row.key.clone(), row.clone());
        }
    }
    latest
}

/// `features` of `view` as a selection with full-name prefix `prefix`.
pub(crate) fn selected(view: &ResolvedView, features: &[&str], prefix: &str) -> SelectedView {
    SelectedView {
        view: view.clone(),
        features: features.iter().map(|f| f.to_string()).collect(),
        positions: features
            .iter()
            .map(|f| {
                view.feature_position(f)
                    .expect("a feature of the test view")
            })
            .collect(),
        prefix: prefix.to_string(),
    }
}
