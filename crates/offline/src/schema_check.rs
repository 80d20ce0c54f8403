//! Plan-time check of a view against its source files, from Parquet footers only.

use arrow::datatypes::Schema;
use parquet::errors::ParquetError;
use quiver_core::ResolvedView;
use quiver_core::plan::SourceSchemaCheck;

use crate::arrow_types::{ColumnRole, find_column};
use crate::data_file::{DataFile, FooterError};
use crate::error::Error;
use crate::roots::Roots;

/// Checks that every source file of a view has each join key, feature, event-time and
/// created-time column with a compatible type. Reads footers, never data. Reports at most one
/// problem per field (the first file where it shows). A source outside the source roots is a
/// problem of field `source`, reported without looking at the file system. Sources in object
/// storage are listed and their footers read remotely (ranged reads): the check blocks, so it
/// runs on the blocking pool.
#[derive(Debug, Clone)]
pub struct ParquetSchemaCheck {
    sources: Roots,
}

impl ParquetSchemaCheck {
    /// A check that accepts sources only under `sources`.
    pub fn new(sources: Roots) -> Self {
        ParquetSchemaCheck { sources }
    }
}

impl SourceSchemaCheck for ParquetSchemaCheck {
    fn check(&self, view: &ResolvedView) -> Vec<(String, String)> {
        let Some(location) = &view.source.parquet else {
            return Vec::new();
        };
        let files = match self.sources.locate("source", location) {
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
            Err(Error::InvalidArgument { message, .. }) => {
                return vec![(
                    "source".into(),
                    format!("{message} (source `{}`)", view.source_name),
                )];
            }
            Err(error) => return vec![("source".into(), error.to_string())],
        };
        let mut problems: Vec<(String, String)> = Vec::new();
        for file in &files {
            let name = file.name();
            let schema = match read_schema(file, &name) {
                Ok(schema) => schema,
                Err(message) => {
                    problems.push(("source".into(), message));
                    continue;
                }
            };
            for (field, message) in check_schema(view, &schema, &name) {
                if !problems.iter().any(|(f, _)| *f == field) {
                    problems.push((field, message));
                }
            }
        }
        problems
    }
}

fn read_schema(file: &DataFile, name: &str) -> Result<Schema, String> {
    let unreadable = |e: ParquetError| format!("{name} is not a readable Parquet file: {e}");
    let metadata = file.footer().map_err(|e| match e {
        FooterError::Read(e) => e.to_string(),
        FooterError::Parquet(e) => unreadable(e),
    })?;
    Ok(metadata.schema().as_ref().clone())
}

/// A column a view needs from its source files, and how to report it.
struct Expected {
    /// The manifest field to blame when the column is missing, and when its type is wrong.
    missing_field: String,
    type_field: String,
    column: String,
    role: ColumnRole,
    /// What the column is for (`join key `driver_id``).
    what: String,
    /// The type it must have, as a message tail (`the view declares float32`).
    wanted: String,
}

fn check_schema(view: &ResolvedView, schema: &Schema, shown: &str) -> Vec<(String, String)> {
    let source = &view.source;
    let missing = |column: &str, what: &str| {
        format!(
            "{shown} has no column `{column}` ({what}); it has: {}",
            crate::arrow_types::column_list(schema)
        )
    };
    let mut expected: Vec<Expected> = Vec::new();
    for key in &view.join_keys {
        expected.push(Expected {
            missing_field: "entities".into(),
            type_field: "entities".into(),
            column: source.column_for(&key.name),
            role: ColumnRole::Key(key.key_type),
            what: format!("join key `{}`", key.name),
            wanted: format!("the join key `{}` is {}", key.name, key.key_type),
        });
    }
    for (field_path, column) in [
        ("source.event_time", Some(&source.event_time)),
        ("source.created_time", source.created_time.as_ref()),
    ] {
        let Some(column) = column else { continue };
        expected.push(Expected {
            missing_field: field_path.into(),
            type_field: field_path.into(),
            column: column.clone(),
            role: ColumnRole::Time,
            what: "a time column of the source".into(),
            wanted: "it must be a timestamp".into(),
        });
    }
    for (i, feature) in view.features.iter().enumerate() {
        expected.push(Expected {
            missing_field: format!("features[{i}].name"),
            type_field: format!("features[{i}].type"),
            column: source.column_for(&feature.name),
            role: ColumnRole::Feature(feature.value_type),
            what: format!("feature `{}`", feature.name),
            wanted: format!("the view declares {}", feature.value_type),
        });
    }
    expected
        .into_iter()
        .filter_map(|e| match find_column(schema, &e.column, e.role) {
            Ok(Some(_)) => None,
            Ok(None) => Some((e.missing_field, missing(&e.column, &e.what))),
            Err(actual) => Some((
                e.type_field,
                format!("column `{}` in {shown} is {actual}, {}", e.column, e.wanted),
            )),
        })
        .collect()
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
        let check = ParquetSchemaCheck::new(
            Roots::new(
                "a source root",
                "--source-root",
                &[dir.path().to_path_buf()],
            )
            .expect("roots"),
        );
        assert_eq!(check.check(&view), Vec::<(String, String)>::new());

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
        let problems = check.check(&view);
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
        let problems = check.check(&missing);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "source");
    }
}
