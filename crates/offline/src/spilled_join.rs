//! The partitioned point-in-time join of a view whose rows do not fit the memory budget (a
//! "grace" hash join with an as-of probe). Keys are hashed into `n` partitions
//! (`crate::partition`), so a label and every row it may choose land in the same one:
//!
//! 1. the labels' keys and times are written to one spill file per partition, in label order;
//! 2. the view's rows are scanned once and written the same way, each partition in (file,
//!    row) order, so the tie rule (the last equal row wins) holds within a partition; rows of
//!    partitions without labels are not written;
//! 3. partitions are joined `parallelism` at a time: one partition's rows indexed in memory
//!    (paid from the budget), its labels probed, the chosen features written to a result
//!    file, again in label order;
//! 4. the output streams the labels a last time and, for each label row, takes the next
//!    result row of that row's partition: exactly one row per label, in label order.
//!
//! Memory is one partition's index per concurrent task plus one batch per open file; a
//! partition that still does not fit (one key holding most rows) is refused naming the
//! setting.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::{concat_batches, interleave};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType};
use arrow::ipc::writer::StreamWriter;
use futures::{StreamExt, TryStreamExt};
use quiver_core::types::KeyType;

use crate::ViewReader;
use crate::arrow_types::{key_type, normalize_key, timestamp_type};
use crate::error::{Error, Result};
use crate::join::label_times;
use crate::labels::Labels;
use crate::partition::{partitions, split};
use crate::scan::ScanSpec;
use crate::spill::{MAX_GATHERED_BYTES, PartitionWriter, SpillDir, read_spilled, remove};
use crate::spill_rows::partition_rows;
use crate::view_index::{ViewIndex, ViewScan};

/// At most this many partitions (and open spill files per join and view).
const MAX_PARTITIONS: usize = 256;

/// How many partitions a view of about `estimated` bytes needs so that `parallelism`
/// partitions indexed at once take about half of the `available` bytes.
pub(crate) fn partition_count(estimated: usize, available: usize, parallelism: usize) -> usize {
    let share = (available / 2 / parallelism.max(1)).max(1);
    estimated
        .div_ceil(share)
        .checked_next_power_of_two()
        .unwrap_or(MAX_PARTITIONS)
        .clamp(2, MAX_PARTITIONS)
}

/// Partitions indexed at once: `parallelism`, or fewer when fewer partitions of about
/// `estimated / n` bytes (twice that while an index is built) fit in `available`.
fn concurrency(estimated: usize, n: usize, available: usize, parallelism: usize) -> usize {
    let partition = (estimated / n.max(1)).saturating_mul(2).max(1);
    (available / partition).clamp(1, parallelism.max(1))
}

/// Sets its flag when dropped unless disarmed: blocking work of a join whose future was
/// dropped (the export cancelled) stops at its next batch.
struct StopOnDrop(Option<Arc<AtomicBool>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

/// What the join of a label batch needs from the label table for one view.
#[derive(Debug, Clone)]
pub(crate) struct LabelSide {
    /// Label column index and key type of each join key, in the view's key order.
    pub(crate) keys: Vec<(usize, KeyType)>,
    pub(crate) t_index: usize,
    pub(crate) as_known_at: bool,
}

/// A view joined partition by partition: its result files, read back in label order.
#[derive(Debug)]
pub(crate) struct SpilledView {
    /// Removed (with every file in it) when the reader is dropped.
    _dir: Arc<SpillDir>,
    results: Vec<PathBuf>,
    /// The result files' schema: the features, the chosen row's event time, the label time.
    schema: SchemaRef,
    keys: Vec<(usize, KeyType)>,
    t_index: usize,
    view: String,
}

impl SpilledView {
    /// Runs steps 1 to 3 for the rows of `scan` and the labels.
    pub(crate) async fn join(
        reader: &ViewReader,
        scan: ViewScan,
        labels: &Labels,
        side: LabelSide,
        n: usize,
    ) -> Result<SpilledView> {
        let estimated = scan.estimated_bytes();
        if scan.spec.n_keys() == 0 {
            // Every row would land in one partition.
            let what = format!(
                "the join's index of view `{}`, which has no join key to partition it by,",
                scan.spec.view
            );
            return Err(reader.memory.refused(&what, estimated));
        }
        let (data_dir, quota) = (reader.data_dir.clone(), Arc::clone(&reader.spill_quota));
        let what = format!("view `{}`", scan.spec.view);
        let dir = tokio::task::spawn_blocking(move || SpillDir::create(&data_dir, quota, what));
        let dir = Arc::new(dir.await??);
        tracing::info!(
            view = %scan.spec.view,
            partitions = n,
            estimated_bytes = estimated,
            "the view does not fit the offline memory budget: joining it in partitions spilled to disk"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let mut stop_on_drop = StopOnDrop(Some(Arc::clone(&stop)));
        // Labels first: view rows of partitions without labels need not be written.
        let (label_files, label_rows) = partition_labels(labels, &side, &dir, n).await?;
        let wanted: Vec<bool> = label_rows.iter().map(|rows| *rows > 0).collect();
        let rows = partition_rows(reader, &scan, &dir, (n, wanted), &stop).await?;
        let (spec, ttl) = (Arc::clone(&scan.spec), scan.ttl);
        drop(scan); // Read: compaction may remove merged files now.
        let at_once = concurrency(estimated, n, reader.memory.available(), reader.parallelism);
        let work = (0..n).map(|p| {
            let task = Partition {
                spec: Arc::clone(&spec),
                rows: rows[p].clone(),
                labels: label_files[p].clone(),
                result: dir.file(&format!("result-{p}.arrow")),
                dir: Arc::clone(&dir),
                has_labels: label_rows[p] > 0,
                stop: Arc::clone(&stop),
                ttl,
                as_known_at: side.as_known_at,
                what: format!(
                    "the join's index of view `{}` (partition {p} of {n})",
                    spec.view
                ),
            };
            let memory = reader.memory.clone();
            async move { tokio::task::spawn_blocking(move || task.run(&memory)).await? }
        });
        let results: Vec<PathBuf> = futures::stream::iter(work)
            .buffered(at_once)
            .try_collect()
            .await?;
        stop_on_drop.0 = None;
        Ok(SpilledView {
            _dir: dir,
            results,
            schema: result_schema(&spec),
            keys: side.keys,
            t_index: side.t_index,
            view: spec.view.clone(),
        })
    }
}

impl SpilledView {
    pub(crate) fn partitions(&self) -> usize {
        self.results.len()
    }
}

/// The schema of a label partition: the view's keys (canonical types), then the label time.
fn label_schema(keys: &[(usize, KeyType)]) -> SchemaRef {
    let mut fields: Vec<Field> = keys
        .iter()
        .enumerate()
        .map(|(i, (_, key))| Field::new(format!("k{i}"), key_type(*key), true))
        .collect();
    fields.push(label_time_field());
    Arc::new(Schema::new(fields))
}

/// The label batch's join keys, normalized to the view's key types.
fn label_keys(batch: &RecordBatch, keys: &[(usize, KeyType)]) -> Result<Vec<ArrayRef>> {
    Ok(keys
        .iter()
        .map(|(i, key)| normalize_key(batch.column(*i), *key))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Step 1: the labels' keys and times, in label order within each partition; with the
/// number of labels in each.
async fn partition_labels(
    labels: &Labels,
    side: &LabelSide,
    dir: &Arc<SpillDir>,
    n: usize,
) -> Result<(Vec<PathBuf>, Vec<usize>)> {
    let schema = label_schema(&side.keys);
    let mut writer = {
        let (dir, schema) = (Arc::clone(dir), Arc::clone(&schema));
        tokio::task::spawn_blocking(move || {
            PartitionWriter::create(&dir, "labels", schema, (n, MAX_GATHERED_BYTES))
        })
        .await??
    };
    let mut stream = labels.stream().await?;
    while let Some(batch) = stream.try_next().await? {
        let (side, schema) = (side.clone(), Arc::clone(&schema));
        // The writer goes to the blocking write and comes back with it.
        writer = tokio::task::spawn_blocking(move || {
            let mut columns = label_keys(&batch, &side.keys)?;
            let mut parts = Vec::new();
            partitions(&columns, batch.num_rows(), n, &mut parts)?;
            let t = label_times(&batch, side.t_index)?.with_timezone_opt(None::<String>);
            columns.push(Arc::new(t));
            let keyed = RecordBatch::try_new(schema, columns)?;
            for (p, piece) in split(&keyed, &parts, n)? {
                writer.write(p, piece)?;
            }
            Ok::<_, Error>(writer)
        })
        .await??;
    }
    drop(stream);
    tokio::task::spawn_blocking(move || writer.finish()).await?
}

/// Step 3 for one partition.
struct Partition {
    spec: Arc<ScanSpec>,
    rows: PathBuf,
    labels: PathBuf,
    result: PathBuf,
    /// Charged for the results; a task the join no longer waits for (it failed) keeps the
    /// directory until it ends.
    dir: Arc<SpillDir>,
    has_labels: bool,
    /// Set when the join was dropped.
    stop: Arc<AtomicBool>,
    ttl: i64,
    as_known_at: bool,
    /// Names the index in a refusal.
    what: String,
}

impl Partition {
    /// Blocking: indexes the partition's rows, probes its labels and writes, in label order,
    /// the chosen rows' features and event times (null where none) and the label times.
    fn run(self, memory: &crate::memory::Budget) -> Result<PathBuf> {
        let schema = result_schema(&self.spec);
        let file = std::fs::File::create(&self.result).map_err(|e| Error::io(&self.result, e))?;
        let mut out = StreamWriter::try_new(std::io::BufWriter::new(file), &schema)?;
        if self.has_labels && !self.stop.load(Ordering::Relaxed) {
            let held = Arc::new(memory.reserve(self.what));
            // Uncompressed IPC takes in memory what it takes on disk (the batches' columns
            // share one buffer per message, which `get_array_memory_size` would count again
            // for every column); twice that while the index copies the features out.
            let on_disk = std::fs::metadata(&self.rows).map_err(|e| Error::io(&self.rows, e))?;
            let on_disk = usize::try_from(on_disk.len()).unwrap_or(usize::MAX);
            held.grow(on_disk.saturating_mul(2))?;
            let batches = read_spilled(&self.rows)?.collect::<Result<Vec<_>>>()?;
            remove(&self.rows);
            let options = (self.as_known_at, true);
            let index = ViewIndex::from_read(&self.spec, vec![batches], self.ttl, options, held)?;
            for batch in read_spilled(&self.labels)? {
                let batch = batch?;
                let n_keys = batch.num_columns() - 1;
                let t = batch
                    .column(n_keys)
                    .as_primitive::<TimestampMicrosecondType>();
                let chosen = index.probe(&batch.columns()[..n_keys], t)?;
                let mut columns = index.gather(&chosen)?;
                columns.push(Arc::new(index.event_times(&chosen)));
                columns.push(Arc::clone(batch.column(n_keys)));
                let result = RecordBatch::try_new(Arc::clone(&schema), columns)?;
                self.dir.charge(result.get_array_memory_size())?;
                out.write(&result)?;
            }
        } else {
            remove(&self.rows);
        }
        out.finish()?;
        remove(&self.labels);
        Ok(self.result)
    }
}

/// A result file's columns: the view's features, the chosen row's event time, and the label
/// time (to check the label table read back is the one joined).
fn result_schema(spec: &ScanSpec) -> SchemaRef {
    let mut fields: Vec<Field> = spec
        .features
        .iter()
        .map(|(name, value)| Field::new(name, crate::arrow_types::value_type(*value), true))
        .collect();
    fields.push(Field::new("event_time", timestamp_type(), true));
    fields.push(label_time_field());
    Arc::new(Schema::new(fields))
}

fn label_time_field() -> Field {
    Field::new("t", DataType::Timestamp(TimeUnit::Microsecond, None), true)
}

fn changed_labels(view: &str) -> Error {
    Error::invalid(
        "labels",
        format!(
            "the label table changed while it was being exported (its rows differ from those joined with view `{view}`); export it again once nothing writes to it"
        ),
    )
}

/// A spilled view's columns for one label batch.
pub(crate) struct SpilledColumns {
    pub(crate) features: Vec<ArrayRef>,
    /// The chosen rows' event times (null where none was chosen).
    pub(crate) events: ArrayRef,
}

type Batches = Box<dyn Iterator<Item = Result<RecordBatch>> + Send>;

/// Step 4: reads a spilled view's results back in label order.
pub(crate) struct SpilledReader {
    view: SpilledView,
    /// Per partition: its open result file, and the rows of its current batch not yet taken.
    files: Vec<Option<Batches>>,
    current: Vec<Option<RecordBatch>>,
    parts: Vec<u32>,
}

impl SpilledReader {
    pub(crate) fn new(view: SpilledView) -> Self {
        let n = view.results.len();
        SpilledReader {
            view,
            files: (0..n).map(|_| None).collect(),
            current: vec![None; n],
            parts: Vec::new(),
        }
    }

    /// Blocking: the result columns for the rows of a label batch, the next one in label
    /// order.
    pub(crate) fn take(&mut self, labels: &RecordBatch) -> Result<SpilledColumns> {
        let n = self.view.results.len();
        let keys = label_keys(labels, &self.view.keys)?;
        let mut parts = std::mem::take(&mut self.parts);
        partitions(&keys, labels.num_rows(), n, &mut parts)?;
        let mut counts = vec![0usize; n];
        for p in &parts {
            counts[*p as usize] += 1;
        }
        let chunks = (0..n)
            .map(|p| self.next_rows(p, counts[p]))
            .collect::<Result<Vec<_>>>()?;
        let mut next = vec![0usize; n];
        let indices: Vec<(usize, usize)> = parts
            .iter()
            .map(|p| {
                let p = *p as usize;
                next[p] += 1;
                (p, next[p] - 1)
            })
            .collect();
        self.parts = parts;
        let column = |c: usize| -> Result<ArrayRef> {
            let arrays: Vec<&dyn arrow::array::Array> =
                chunks.iter().map(|b| b.column(c).as_ref()).collect();
            Ok(interleave(&arrays, &indices)?)
        };
        // The result schema: the features, the event time, the label time.
        let n_features = self.view.schema.fields().len() - 2;
        let joined_at = column(n_features + 1)?;
        let t = label_times(labels, self.view.t_index)?.with_timezone_opt(None::<String>);
        if joined_at.to_data() != t.to_data() {
            return Err(changed_labels(&self.view.view));
        }
        Ok(SpilledColumns {
            features: (0..n_features).map(column).collect::<Result<_>>()?,
            events: column(n_features)?,
        })
    }

    /// Blocking: checks that every result row was taken (the label table read back had all
    /// the rows that were joined).
    pub(crate) fn finish(&mut self) -> Result<()> {
        for p in 0..self.view.results.len() {
            if self.files[p].is_none() {
                self.files[p] = Some(Box::new(read_spilled(&self.view.results[p])?));
            }
            let left_in_batch = self.current[p].as_ref().map_or(0, RecordBatch::num_rows);
            let left = match self.files[p].as_mut().and_then(Iterator::next) {
                Some(batch) => batch?.num_rows(),
                None => 0,
            };
            if left_in_batch + left > 0 {
                return Err(changed_labels(&self.view.view));
            }
        }
        Ok(())
    }

    /// The next `k` rows of partition `p`'s results.
    fn next_rows(&mut self, p: usize, k: usize) -> Result<RecordBatch> {
        if k == 0 {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.view.schema)));
        }
        let path = &self.view.results[p];
        if self.files[p].is_none() {
            self.files[p] = Some(Box::new(read_spilled(path)?));
        }
        let mut pieces = Vec::new();
        let mut wanted = k;
        loop {
            let current = match self.current[p].take() {
                Some(batch) if batch.num_rows() > 0 => batch,
                _ => match self.files[p].as_mut().and_then(Iterator::next) {
                    Some(batch) => batch?,
                    None => {
                        return Err(Error::io(
                            path,
                            std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "a spilled join result ended before its labels",
                            ),
                        ));
                    }
                },
            };
            let taken = wanted.min(current.num_rows());
            pieces.push(current.slice(0, taken));
            self.current[p] = Some(current.slice(taken, current.num_rows() - taken));
            wanted -= taken;
            if wanted == 0 {
                break;
            }
        }
        Ok(concat_batches(&self.view.schema, &pieces)?)
    }
}
