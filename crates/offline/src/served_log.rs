//! Served-row logs on disk: what the server logs of GetOnlineFeatures, as plain Parquet that
//! DuckDB, pandas and Quiver itself (as a `parquet:` source) read as it is.
//!
//! Layout: `<data_dir>/served_log/<service>/date=YYYY-MM-DD/<first served_at micros:020>-v<service
//! version>-<n>.parquet`, one service version per file (its columns follow that version), the
//! day of the file's first row in the directory name (Hive-style, so readers can prune). A
//! file is written under a temporary name (`.<name>.<pid>.<nanos>.tmp`) and appears at its
//! name only when rotated: closed, fsynced, renamed, directory fsynced. A crash loses the
//! rows of the files not yet rotated; the temporaries it leaves are removed at start
//! ([`ServedLogDir::remove_unfinished`]).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Int64Type, Schema, SchemaRef, TimestampMicrosecondType};
use chrono::{DateTime, NaiveDate};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterPropertiesBuilder;
use parquet::schema::types::ColumnPath;

use crate::error::{Error, Result};
use crate::parquet_writer::DurableWriter;

/// The column of every log file that holds when a row was served (UTC microseconds).
pub const SERVED_AT: &str = "served_at";
/// The column of every log file that holds the request's id (`x-request-id`).
pub const REQUEST_ID: &str = "request_id";
/// The column of every log file that holds the service version served.
pub const SERVICE_VERSION: &str = "service_version";

/// Rows per Parquet row group of a log file (a row group is buffered in memory until full).
const ROW_GROUP_ROWS: usize = 16 * 1024;

/// The served-row logs of one data directory.
#[derive(Debug, Clone)]
pub struct ServedLogDir {
    root: PathBuf,
}

/// One log file being written; it appears at its name only when [`ServedLogFile::commit`]ted.
pub struct ServedLogFile {
    writer: DurableWriter,
}

impl std::fmt::Debug for ServedLogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedLogFile")
            .field("path", &self.writer.path())
            .finish_non_exhaustive()
    }
}

impl ServedLogFile {
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)
    }

    /// Encoded bytes so far, the buffered row group included.
    pub fn bytes(&self) -> u64 {
        self.writer.bytes()
    }

    /// Makes the file durable at its name; returns its rows.
    pub fn commit(self) -> Result<u64> {
        self.writer.commit()
    }
}

impl ServedLogDir {
    pub fn new(data_dir: &Path) -> ServedLogDir {
        ServedLogDir {
            root: data_dir.join("served_log"),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the temporary files of log files a crash left unfinished; returns how many.
    pub fn remove_unfinished(&self) -> Result<usize> {
        let mut removed = 0;
        for dir in self.day_dirs(None)? {
            for entry in read_dir(&dir.path)? {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Starts a log file for `service` at `version` whose first row was served at `first`.
    pub fn create(
        &self,
        service: &str,
        version: u32,
        first: i64,
        schema: SchemaRef,
        metadata: Vec<(String, String)>,
    ) -> Result<ServedLogFile> {
        let dir = self.root.join(service).join(day_dir_name(first));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = (0..)
            .map(|n| dir.join(format!("{first:020}-v{version}-{n}.parquet")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| dir.join(format!("{first:020}-v{version}.parquet")));
        let mut writer = DurableWriter::create_with(&path, Arc::clone(&schema), metadata, |p| {
            log_properties(p, &schema)
        })?;
        writer.replace = false;
        Ok(ServedLogFile { writer })
    }

    /// The committed files of `service` (of `version` only, when given) in day partitions that
    /// overlap `[start, end)`, in name order (by first row).
    pub fn files(
        &self,
        service: &str,
        (start, end): (i64, i64),
        version: Option<u32>,
    ) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for dir in self.day_dirs(Some(service))? {
            if dir.start >= end || dir.start.saturating_add(DAY) <= start {
                continue;
            }
            for entry in read_dir(&dir.path)? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path();
                let wanted = version.is_none_or(|v| Self::file_version(&path) == Some(v));
                if !name.starts_with('.') && name.ends_with(".parquet") && wanted {
                    files.push(path);
                }
            }
        }
        files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
        Ok(files)
    }

    /// Removes the day partitions that end at or before `cutoff`; returns the files removed.
    pub fn remove_before(&self, cutoff: i64) -> Result<usize> {
        let mut removed = 0;
        for dir in self.day_dirs(None)? {
            if dir.start.saturating_add(DAY) <= cutoff {
                removed += read_dir(&dir.path)?.len();
                std::fs::remove_dir_all(&dir.path).map_err(|e| Error::io(&dir.path, e))?;
            }
        }
        Ok(removed)
    }

    /// Reads the rows of `service` served in `[start, end)` (of `version` only, when given),
    /// file by file in name order, giving each batch to `on_batch` in the schema of
    /// [`ServedLogDir::schema`] of `files`; stops early when `on_batch` returns false.
    pub fn read(
        &self,
        files: &[PathBuf],
        schema: &SchemaRef,
        (start, end): (i64, i64),
        version: Option<u32>,
        on_batch: &mut dyn FnMut(RecordBatch) -> Result<bool>,
    ) -> Result<()> {
        for path in files {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let reader = ParquetRecordBatchReaderBuilder::try_new(file)
                .and_then(|b| b.with_batch_size(8192).build())
                .map_err(|e| Error::parquet(path, e))?;
            for batch in reader {
                let batch = batch?;
                let mask = row_mask(&batch, (start, end), version, path)?;
                let batch = filter_record_batch(&batch, &mask)?;
                if batch.num_rows() > 0 && !on_batch(conform(&batch, schema)?)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The rows of `files` served in `[start, end)`, reading only the time column.
    pub fn count(&self, files: &[PathBuf], (start, end): (i64, i64)) -> Result<u64> {
        let mut rows = 0u64;
        for path in files {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| Error::parquet(path, e))?;
            let Some(index) = builder.schema().index_of(SERVED_AT).ok() else {
                continue;
            };
            let mask = ProjectionMask::roots(builder.parquet_schema(), [index]);
            let reader = builder
                .with_projection(mask)
                .with_batch_size(64 * 1024)
                .build()
                .map_err(|e| Error::parquet(path, e))?;
            for batch in reader {
                let batch = batch?;
                let Some(served) = batch
                    .column(0)
                    .as_primitive_opt::<TimestampMicrosecondType>()
                else {
                    continue;
                };
                rows += served
                    .iter()
                    .flatten()
                    .filter(|t| *t >= start && *t < end)
                    .count() as u64;
            }
        }
        Ok(rows)
    }

    /// The service version a log file holds, from its name.
    pub fn file_version(path: &Path) -> Option<u32> {
        let name = path.file_stem()?.to_str()?;
        name.split('-').nth(1)?.strip_prefix('v')?.parse().ok()
    }

    /// One schema for `files` (their columns merged by name; a column missing from a file is
    /// null there); a column whose type differs between files is refused, naming it.
    pub fn schema(&self, files: &[PathBuf]) -> Result<SchemaRef> {
        let mut schemas = Vec::new();
        for path in files {
            let file = File::open(path).map_err(|e| Error::io(path, e))?;
            let builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| Error::parquet(path, e))?;
            // Nullable: a column one file lacks is null in the merged rows.
            let fields = builder.schema().fields().iter();
            schemas.push(Schema::new(
                fields
                    .map(|f| f.as_ref().clone().with_nullable(true))
                    .collect::<Vec<_>>(),
            ));
        }
        let merged = Schema::try_merge(schemas).map_err(|e| {
            Error::invalid(
                "version",
                format!(
                    "the logged service versions disagree on a column's type ({e}); ask for one version"
                ),
            )
        })?;
        Ok(Arc::new(merged))
    }

    fn day_dirs(&self, service: Option<&str>) -> Result<Vec<DayDir>> {
        let services = match service {
            Some(s) => vec![self.root.join(s)],
            None if self.root.exists() => read_dir(&self.root)?
                .into_iter()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect(),
            None => Vec::new(),
        };
        let mut days = Vec::new();
        for dir in services.into_iter().filter(|d| d.is_dir()) {
            for entry in read_dir(&dir)? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if let Some(start) = day_start(&name).filter(|_| is_dir) {
                    days.push(DayDir {
                        path: entry.path(),
                        start,
                    });
                }
            }
        }
        Ok(days)
    }
}

const DAY: i64 = 86_400_000_000;

/// A log file's encoding, chosen for the writer's CPU (it shares the machine with serving):
/// zstd at level 1, and dictionaries only for the columns that repeat (service, statuses,
/// versions), not for values and keys, where hashing every value costs more than it saves.
fn log_properties(properties: WriterPropertiesBuilder, schema: &Schema) -> WriterPropertiesBuilder {
    let repeated = |name: &str| {
        name == "service"
            || name == "service_fingerprint"
            || name.ends_with(".status")
            || name.ends_with(".version")
    };
    let mut properties = properties
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).unwrap_or_default()))
        .set_dictionary_enabled(false);
    for field in schema.fields().iter().filter(|f| repeated(f.name())) {
        properties =
            properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), true);
    }
    properties
}

struct DayDir {
    path: PathBuf,
    start: i64,
}

fn read_dir(dir: &Path) -> Result<Vec<std::fs::DirEntry>> {
    std::fs::read_dir(dir)
        .and_then(|entries| entries.collect::<std::io::Result<Vec<_>>>())
        .map_err(|e| Error::io(dir, e))
}

/// `date=YYYY-MM-DD` of the UTC day of `micros`.
fn day_dir_name(micros: i64) -> String {
    let day = DateTime::from_timestamp_micros(micros).map_or_else(
        || "1970-01-01".to_string(),
        |t| t.date_naive().format("%Y-%m-%d").to_string(),
    );
    format!("date={day}")
}

/// The first instant of the day a `date=YYYY-MM-DD` directory holds.
fn day_start(name: &str) -> Option<i64> {
    let date = NaiveDate::parse_from_str(name.strip_prefix("date=")?, "%Y-%m-%d").ok()?;
    Some(date.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros())
}

fn row_mask(
    batch: &RecordBatch,
    (start, end): (i64, i64),
    version: Option<u32>,
    path: &Path,
) -> Result<BooleanArray> {
    let column = |name: &str| {
        batch.column_by_name(name).ok_or_else(|| {
            Error::invalid(
                "service",
                format!(
                    "{} has no `{name}` column: not a served-row log",
                    path.display()
                ),
            )
        })
    };
    let served = column(SERVED_AT)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::invalid(SERVED_AT, format!("{} is not a log", path.display())))?;
    let versions = column(SERVICE_VERSION)?
        .as_primitive_opt::<Int64Type>()
        .ok_or_else(|| {
            Error::invalid(SERVICE_VERSION, format!("{} is not a log", path.display()))
        })?;
    Ok((0..batch.num_rows())
        .map(|i| {
            let t = served.value(i);
            let in_version = version.is_none_or(|v| versions.value(i) == i64::from(v));
            Some(served.is_valid(i) && t >= start && t < end && in_version)
        })
        .collect())
}

/// `batch` in `schema`: its columns by name, nulls for those it lacks.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|field| match batch.column_by_name(field.name()) {
            Some(column) => Arc::clone(column),
            None => new_null_array(field.data_type(), batch.num_rows()),
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use arrow::datatypes::{DataType, Field, TimeUnit};

    use super::*;

    fn batch(version: i64, served: &[i64], extra: Option<&str>) -> RecordBatch {
        let mut fields = vec![
            Field::new(
                SERVED_AT,
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new(SERVICE_VERSION, DataType::Int64, false),
        ];
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(TimestampMicrosecondArray::from(served.to_vec()).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![version; served.len()])),
        ];
        if let Some(name) = extra {
            fields.push(Field::new(name, DataType::Utf8, true));
            columns.push(Arc::new(StringArray::from(vec![Some("x"); served.len()])));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("test")
    }

    fn write(
        dir: &ServedLogDir,
        version: u32,
        served: &[i64],
        extra: Option<&str>,
    ) -> ServedLogFile {
        let b = batch(i64::from(version), served, extra);
        let mut file = dir
            .create("svc", version, served[0], b.schema(), vec![])
            .expect("test");
        file.write(&b).expect("test");
        file
    }

    #[test]
    fn files_appear_when_committed_and_read_back_by_range_and_version() {
        let tmp = tempfile::tempdir().expect("test");
        let dir = ServedLogDir::new(tmp.path());
        let day2 = DAY + 5;
        write(&dir, 1, &[10, 20, 30], None).commit().expect("test");
        write(&dir, 2, &[day2, day2 + 1], Some("new_feature"))
            .commit()
            .expect("test");
        let pending = write(&dir, 2, &[day2 + 2], None);
        // Uncommitted: not listed; a crash leaves the temporary, removed at start.
        let files = dir.files("svc", (0, i64::MAX), None).expect("test");
        assert_eq!(files.len(), 2);
        assert!(files[0].to_string_lossy().contains("date=1970-01-01"));
        assert!(files[1].to_string_lossy().contains("date=1970-01-02"));
        std::mem::forget(pending);
        assert_eq!(dir.remove_unfinished().expect("test"), 1);
        // The range prunes day partitions, then rows.
        assert_eq!(
            dir.files("svc", (day2, i64::MAX), None)
                .expect("test")
                .len(),
            1
        );
        let schema = dir.schema(&files).expect("test");
        assert_eq!(schema.fields().len(), 3);
        let mut seen = Vec::new();
        dir.read(&files, &schema, (20, day2 + 1), None, &mut |b| {
            let served = b.column(0).as_primitive::<TimestampMicrosecondType>();
            seen.extend(served.values().iter().copied());
            assert_eq!(b.num_columns(), 3);
            Ok(true)
        })
        .expect("test");
        assert_eq!(seen, vec![20, 30, day2]);
        let mut rows = 0;
        dir.read(&files, &schema, (0, i64::MAX), Some(2), &mut |b| {
            rows += b.num_rows();
            Ok(true)
        })
        .expect("test");
        assert_eq!(rows, 2);
        assert_eq!(dir.count(&files, (20, day2 + 1)).expect("test"), 3);
        let versions: Vec<_> = files
            .iter()
            .map(|f| ServedLogDir::file_version(f))
            .collect();
        assert_eq!(versions, [Some(1), Some(2)]);
        // Retention drops whole days that ended before the cutoff.
        assert_eq!(dir.remove_before(DAY).expect("test"), 1);
        assert_eq!(
            dir.files("svc", (0, i64::MAX), None).expect("test").len(),
            1
        );
    }
}
