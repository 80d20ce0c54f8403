//! The push log: pushed rows appended to a view's offline data as small Parquet files.
//!
//! Each append writes one file `<micros>-<seq>[+<replica>].parquet` (both numbers zero-padded
//! to 20 digits, so names sort in append order; the replica only in a shared log) into the
//! push log directory of the view version's data generation (`<view>[@<g>]`, see
//! `files::log_dir_name`): the file is encoded in memory, then appended through core's
//! `OfflineLog` (`local_log.rs`, `remote_log.rs`), durable and create-only, seen by readers
//! whole or not at all. Columns carry the source's column names and the view's canonical types, so
//! a push-log file reads like a source file. An append learns its rows' place in the log
//! (`LogPosition`), which the online store keeps as their tie token.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, TimestampMicrosecondArray};
use arrow::datatypes::{Field, Schema};
use quiver_core::ResolvedView;
use quiver_core::semantics::LogPosition;
use quiver_core::value::Row;

use crate::OfflineStore;
use crate::arrow_types::{UTC, key_type, timestamp_type, value_type};
use crate::data_file::DataFile;
use crate::error::{Error, Result};
use crate::files::{log_dir_name, log_file_name, log_stem};
use crate::local_log::real_entries;
use crate::remote_log::MemoryWriter;
use crate::values::{key_column, value_column};

impl OfflineStore {
    /// Appends `rows` (keys in the view's key order, values in its feature order) to the
    /// view's push log and returns once the file is durable, with the first row's place in
    /// the log. No rows, no file (and no place).
    pub fn append_push_log(
        &self,
        view: &ResolvedView,
        rows: &[Row],
    ) -> Result<Option<LogPosition>> {
        if rows.is_empty() {
            return Ok(None);
        }
        self.append_push_log_batches(view, &[push_log_batch(view, rows)?])
    }

    /// Appends record batches built by [`push_log_batch`] (a large push converts its rows a
    /// chunk at a time) to the view's push log; returns once they are durable, with the
    /// first row's place in the log (the rows follow it in order). Concurrent appends are
    /// written together (one file per view and schema, in arrival order).
    pub fn append_push_log_batches(
        &self,
        view: &ResolvedView,
        batches: &[RecordBatch],
    ) -> Result<Option<LogPosition>> {
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if rows == 0 {
            return Ok(None);
        }
        // Concurrent appends share a file and its sync (`push_group`), keyed by directory.
        let dir = std::path::PathBuf::from(log_dir_name(view));
        let placed = self.push_queue.append(dir, batches.to_vec(), &|file| {
            let name = self.next_push_name();
            let stem = log_stem(name);
            let file_name = log_file_name(&stem, &stem, &self.log_replica);
            let written = encode_file(&file.batches).and_then(|(bytes, rows)| {
                let dir = file.dir.to_string_lossy();
                self.log_root.append(&dir, &file_name, bytes).map(|()| rows)
            });
            self.push_names().in_flight.remove(&name);
            let written = written?;
            tracing::debug!(rows = written, file = %file_name, "appended to push log");
            Ok(name)
        })?;
        tracing::trace!(view = %view.name, rows, "pushed rows are durable in the push log");
        Ok(Some(LogPosition {
            replica: self.log_replica.clone(),
            micros: placed.name.0,
            seq: placed.name.1,
            row: placed.first_row,
        }))
    }

    /// Removes the temporary files that interrupted appends left in a push log on this
    /// machine (`<root>/<view>/.<name>.tmp`; readers skip them, but they would stay
    /// forever); in a shared log, only this replica's. Reads two directory levels, follows
    /// no symlink. Call it before serving: an append in flight would lose its temporary
    /// file. Returns how many were removed.
    pub fn remove_interrupted_appends(&self) -> Result<usize> {
        let Some(root) = self.log_root.local_root() else {
            return Ok(0); // An append to object storage leaves nothing behind.
        };
        let mut removed = 0;
        let own = format!("+{}.parquet.", self.log_replica);
        for dir in self.log_root.dirs()? {
            let dir = root.join(dir);
            for entry in real_entries(&dir)? {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let is_file = entry.file_type().map_err(|e| Error::io(&dir, e))?.is_file();
                let ours = self.log_replica.is_empty() || name.contains(&own);
                if is_file && ours && name.starts_with('.') && name.ends_with(".tmp") {
                    let path = entry.path();
                    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
                    tracing::info!(path = %path.display(), "removed an interrupted push-log write");
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    /// Every committed push-log file of every view and generation (what the join reads;
    /// writes in progress are hidden `.tmp` files and left out), as paths relative to the data
    /// directory; none when the log is shared (it is outside the data directory, and backed
    /// up with its storage). Committed files never change again, so a backup may link or
    /// copy them while pushes go on.
    /// Hold a [`PushLogGuard`](crate::PushLogGuard) ([`OfflineStore::hold_push_log`]) until
    /// the files are linked or copied: compaction may delete them otherwise.
    pub fn committed_push_log(&self) -> Result<Vec<std::path::PathBuf>> {
        let mut files = Vec::new();
        if self.shares_push_log() {
            return Ok(files);
        }
        for dir in self.log_root.dirs()? {
            for listed in self.log_root.files(&dir)? {
                if let DataFile::Local(path) = listed
                    && let Ok(relative) = path.strip_prefix(&self.data_dir)
                {
                    files.push(relative.to_path_buf());
                }
            }
        }
        Ok(files)
    }

    /// Moves the push-log name clock past every name of this replica in the log (call it
    /// at start, before any append): a name must sort after every file already there, also
    /// when the wall clock went back across a restart, or a merged file's range
    /// (`compaction.rs`) could cover, hide and delete the new file. Returns the greatest
    /// `(micros, seq)` found.
    pub fn resume_push_names(&self) -> Result<(i64, u64)> {
        let mut greatest = (0i64, 0u64);
        for dir in self.log_root.dirs()? {
            let (visible, covered) = self.log_root.listing(&dir)?;
            let ranges = visible.into_iter().chain(covered).filter_map(|l| l.range);
            for range in ranges.filter(|r| r.replica == self.log_replica) {
                let parsed = range
                    .last
                    .split_once('-')
                    .and_then(|(m, s)| Some((m.parse::<i64>().ok()?, s.parse::<u64>().ok()?)));
                if let Some(name) = parsed {
                    greatest = greatest.max(name);
                }
            }
        }
        let mut names = self.push_names();
        names.last = names.last.max(greatest);
        Ok(greatest)
    }

    /// `(micros, seq)` greater than any name this store gave before (and, after
    /// [`OfflineStore::resume_push_names`], than any name on disk).
    /// The name is in flight until the caller removes it (once its file is committed or
    /// failed).
    pub(crate) fn next_push_name(&self) -> (i64, u64) {
        let now = chrono::Utc::now().timestamp_micros().max(0);
        let mut names = self.push_names();
        names.last = if now > names.last.0 {
            (now, 0)
        } else {
            (names.last.0, names.last.1 + 1)
        };
        let name = names.last;
        names.in_flight.insert(name);
        name
    }

    /// The stem below which every push-log name given out so far is committed (or failed):
    /// a file named at or above it may still appear. Compaction merges only below it, so no
    /// file can later appear inside a merged file's range.
    pub(crate) fn push_horizon(&self) -> String {
        let names = self.push_names();
        log_stem(match names.in_flight.first() {
            Some(oldest) => *oldest,
            None => (names.last.0, names.last.1.saturating_add(1)),
        })
    }

    pub(crate) fn push_names(&self) -> std::sync::MutexGuard<'_, crate::PushNames> {
        self.push_clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The entries of `dir` (none if it does not exist), without following symlinks.
/// `batches` encoded as one Parquet file (zstd; `quiver.rows` in its metadata), and the rows.
fn encode_file(batches: &[RecordBatch]) -> Result<(Vec<u8>, u64)> {
    let Some(first) = batches.first() else {
        return Err(Error::invalid("push", "a push-log file of no batches"));
    };
    let mut writer = MemoryWriter::new(first.schema(), Vec::new())?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()
}

/// The push-log batch for `rows` (keys in the view's key order, values in its feature order),
/// validated against the view.
pub fn push_log_batch(view: &ResolvedView, rows: &[Row]) -> Result<RecordBatch> {
    let source = &view.source;
    for (i, row) in rows.iter().enumerate() {
        if row.key.len() != view.join_keys.len() {
            return Err(Error::invalid(
                format!("rows[{i}].key"),
                format!(
                    "view `{}` is keyed by {} key(s) ({}), the row has {}",
                    view.name,
                    view.join_keys.len(),
                    key_names(view),
                    row.key.len()
                ),
            ));
        }
        if row.values.len() != view.features.len() {
            return Err(Error::invalid(
                format!("rows[{i}].values"),
                format!(
                    "view `{}` has {} feature(s), the row has {} value(s)",
                    view.name,
                    view.features.len(),
                    row.values.len()
                ),
            ));
        }
    }
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (k, key) in view.join_keys.iter().enumerate() {
        let column = key_column(key.key_type, rows.iter().map(|r| &r.key[k])).map_err(|i| {
            Error::invalid(
                format!("rows[{i}].key[{k}]"),
                format!(
                    "key `{}` is {}, got {}",
                    key.name,
                    key.key_type,
                    rows[i].key[k].key_type()
                ),
            )
        })?;
        fields.push(Field::new(
            source.column_for(&key.name),
            key_type(key.key_type),
            false,
        ));
        columns.push(column);
    }
    let event = TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.event_ts));
    fields.push(Field::new(&source.event_time, timestamp_type(), false));
    columns.push(Arc::new(event.with_timezone(UTC)));
    if let Some(created_time) = &source.created_time {
        let created = TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.created_ts));
        fields.push(Field::new(created_time, timestamp_type(), true));
        columns.push(Arc::new(created.with_timezone(UTC)));
    }
    for (j, feature) in view.features.iter().enumerate() {
        let column =
            value_column(feature.value_type, rows.iter().map(|r| &r.values[j])).map_err(|i| {
                Error::invalid(
                    format!("rows[{i}].values[{j}]"),
                    format!(
                        "feature `{}` is {}; the value does not fit it",
                        feature.name, feature.value_type
                    ),
                )
            })?;
        fields.push(Field::new(
            source.column_for(&feature.name),
            value_type(feature.value_type),
            true,
        ));
        columns.push(column);
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn key_names(view: &ResolvedView) -> String {
    view.join_keys
        .iter()
        .map(|k| k.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
