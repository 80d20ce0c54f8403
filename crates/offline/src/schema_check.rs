//! Plan-time check of a view against its source files, from Parquet footers only.

use std::fs::File;
use std::path::Path;

use arrow::datatypes::{DataType, Schema};
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use quiver_core::ResolvedView;
use quiver_core::plan::SourceSchemaCheck;

use crate::arrow_types::{key_compatible, value_compatible};

/// Checks that every source file of a view has each join key, feature, event-time and
/// created-time column with a compatible type. Reads footers, never data. Reports at most one
/// problem per field (the first file where it shows).
#[derive(Debug, Default, Clone, Copy)]
pub struct ParquetSchemaCheck;

impl SourceSchemaCheck for ParquetSchemaCheck {
    fn check(&self, view: &ResolvedView) -> Vec<(String, String)> {
        let Some(location) = &view.source.parquet else {
            return Vec::new();
        };
        let files = match crate::files::resolve(location) {
            Ok(files) if files.is_empty() => {
                return vec![(
                    "source".into(),
                    format!(
                        "`{location}` matches no Parquet file; check the path of source `{}`",
                        view.source_name
                    ),
                )];
            }
            Ok(files) => files,
            Err(message) => return vec![("source".into(), message)],
        };
        let mut problems: Vec<(String, String)> = Vec::new();
        for path in &files {
            let schema = match read_schema(path) {
                Ok(schema) => schema,
                Err(message) => {
                    problems.push(("source".into(), message));
                    continue;
                }
            };
            for (field, message) in check_schema(view, &schema, path) {
                if !problems.iter().any(|(f, _)| *f == field) {
                    problems.push((field, message));
                }
            }
        }
        problems
    }
}

fn read_schema(path: &Path) -> Result<Schema, String> {
    let file = File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let metadata = ArrowReaderMetadata::load(&file, ArrowReaderOptions::new())
        .map_err(|e| format!("{} is not a readable Parquet file: {e}", path.display()))?;
    Ok(metadata.schema().as_ref().clone())
}

fn check_schema(view: &ResolvedView, schema: &Schema, path: &Path) -> Vec<(String, String)> {
    let source = &view.source;
    let shown = path.display();
    let mut problems = Vec::new();
    let missing = |column: &str, what: &str| {
        format!(
            "{shown} has no column `{column}` ({what}); it has: {}",
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    for key in &view.join_keys {
        let column = source.column_for(&key.name);
        match schema.field_with_name(&column) {
            Err(_) => problems.push((
                "entities".into(),
                missing(&column, &format!("join key `{}`", key.name)),
            )),
            Ok(field) if !key_compatible(field.data_type(), key.key_type, false) => {
                problems.push((
                    "entities".into(),
                    format!(
                        "column `{column}` in {shown} is {}, the join key `{}` is {}",
                        field.data_type(),
                        key.name,
                        key.key_type
                    ),
                ))
            }
            Ok(_) => {}
        }
    }
    let times = [
        ("source.event_time", Some(&source.event_time)),
        ("source.created_time", source.created_time.as_ref()),
    ];
    for (field_path, column) in times {
        let Some(column) = column else { continue };
        match schema.field_with_name(column) {
            Err(_) => problems.push((
                field_path.into(),
                missing(column, "a time column of the source"),
            )),
            Ok(field) if !matches!(field.data_type(), DataType::Timestamp(_, _)) => {
                problems.push((
                    field_path.into(),
                    format!(
                        "column `{column}` in {shown} is {}, it must be a timestamp",
                        field.data_type()
                    ),
                ))
            }
            Ok(_) => {}
        }
    }
    for (i, feature) in view.features.iter().enumerate() {
        let column = source.column_for(&feature.name);
        match schema.field_with_name(&column) {
            Err(_) => problems.push((
                format!("features[{i}].name"),
                missing(&column, &format!("feature `{}`", feature.name)),
            )),
            Ok(field) if !value_compatible(field.data_type(), feature.value_type) => {
                problems.push((
                    format!("features[{i}].type"),
                    format!(
                        "column `{column}` in {shown} is {}, the view declares {}",
                        field.data_type(),
                        feature.value_type
                    ),
                ))
            }
            Ok(_) => {}
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{SECOND, feature, test_view, write_rows};
    use arrow::datatypes::TimeUnit;
    use quiver_core::value::{KeyValue, Row, Value};

    #[test]
    fn footers_are_checked_against_the_view() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = test_view(dir.path(), "stats", 0);
        let source = dir.path().join("stats_src");
        let row = |values| Row {
            key: vec![KeyValue::Int64(1)],
            event_ts: SECOND,
            created_ts: None,
            values,
        };
        let good = [row(vec![
            Value::Float32(0.5),
            Value::Int64(3),
            Value::String("a".into()),
        ])];
        write_rows(
            &source.join("a.parquet"),
            &view,
            &good,
            TimeUnit::Nanosecond,
            None,
        );
        assert_eq!(
            ParquetSchemaCheck.check(&view),
            Vec::<(String, String)>::new()
        );

        let mut other = view.clone();
        other.features = vec![feature("conv_rate", "float64"), feature("note", "string")];
        let bad = [row(vec![Value::Float64(0.5), Value::String("a".into())])];
        write_rows(
            &source.join("b.parquet"),
            &other,
            &bad,
            TimeUnit::Second,
            Some("UTC"),
        );
        let problems = ParquetSchemaCheck.check(&view);
        let fields: Vec<&str> = problems.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["features[0].type", "features[1].name"],
            "{problems:?}"
        );
        assert!(
            problems[0]
                .1
                .contains("is Float64, the view declares float32"),
            "{problems:?}"
        );
        assert!(
            problems[1].1.contains("no column `n_trips`"),
            "{problems:?}"
        );

        let mut missing = view.clone();
        missing.source.parquet = Some(
            dir.path()
                .join("nothing/*.parquet")
                .to_string_lossy()
                .into_owned(),
        );
        let problems = ParquetSchemaCheck.check(&missing);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "source");
    }
}
