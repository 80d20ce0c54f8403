//! Step 2 of the partitioned join (`spilled_join`): a view's rows written to one spill file
//! per partition with labels, in (file, row) order within each. Units are read `parallelism` at a time on
//! the blocking pool but written strictly in unit order: each reader hands over a few split
//! batches at a time and waits while its turn has not come, so memory is a few batches per
//! reader plus what the writer gathers, all paid from the budget.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};

use arrow::array::{Array, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;

use crate::ViewReader;
use crate::error::{Error, Result};
use crate::memory::Held;
use crate::partition::{partitions, split};
use crate::scan::{ScanSpec, Unit, read_unit};
use crate::spill::{PartitionWriter, SpillDir};
use crate::view_index::ViewScan;

/// What a reader hands over: a batch's pieces by partition and the bytes they hold, or the
/// end of its unit (a unit whose channel closes without it failed).
enum Piece {
    Split(Vec<(usize, RecordBatch)>, usize),
    End,
}

/// Blocking-pool work of step 2; `stop` is set when the join is dropped.
pub(crate) async fn partition_rows(
    reader: &ViewReader,
    scan: &ViewScan,
    dir: &Arc<SpillDir>,
    (n, wanted): (usize, Vec<bool>),
    stop: &Arc<AtomicBool>,
) -> Result<Vec<PathBuf>> {
    let spec = Arc::clone(&scan.spec);
    let what = format!("partitioning view `{}` to disk", spec.view);
    let (held, gathered) = (
        Arc::new(reader.memory.reserve(what.clone())),
        reader.memory.reserve(what),
    );
    let (units, parallelism) = (scan.units.clone(), reader.parallelism.max(1));
    // The writer gathers small pieces into batches: at most a quarter of what is left.
    let gather = reader.memory.available() / 4;
    let readers = UnitReaders {
        handle: tokio::runtime::Handle::current(),
        spec: Arc::clone(&spec),
        held: Arc::clone(&held),
        stop: Arc::clone(stop),
        n,
        wanted: Arc::new(wanted),
    };
    let (dir, stop) = (Arc::clone(dir), Arc::clone(stop));
    tokio::task::spawn_blocking(move || {
        let mut writer =
            PartitionWriter::create(&dir, "rows", Arc::clone(&spec.schema), (n, gather))?;
        let mut units = units.into_iter();
        let mut running: VecDeque<_> = units
            .by_ref()
            .take(parallelism)
            .map(|u| readers.start(u))
            .collect();
        while let Some(pieces) = running.pop_front() {
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(stopped());
                }
                match pieces.recv() {
                    Ok(Ok(Piece::Split(pieces, bytes))) => {
                        for (p, batch) in pieces {
                            writer.write(p, batch)?;
                        }
                        held.shrink(bytes);
                        gathered.resize(writer.gathered_bytes())?;
                    }
                    Ok(Ok(Piece::End)) => break,
                    Ok(Err(e)) => return Err(e),
                    Err(_) => {
                        return Err(Error::io(
                            &spec.view,
                            std::io::Error::other(
                                "a reader of the view's rows stopped without finishing its unit",
                            ),
                        ));
                    }
                }
            }
            running.extend(units.next().map(|unit| readers.start(unit)));
        }
        Ok(writer.finish()?.0)
    })
    .await?
}

fn stopped() -> Error {
    Error::io(
        "spill",
        std::io::Error::other("the partitioned join was stopped"),
    )
}

/// Starts the readers of step 2.
struct UnitReaders {
    handle: tokio::runtime::Handle,
    spec: Arc<ScanSpec>,
    held: Arc<Held>,
    stop: Arc<AtomicBool>,
    n: usize,
    /// Partitions with labels; rows of the others are not written.
    wanted: Arc<Vec<bool>>,
}

impl UnitReaders {
    /// Reads `unit` on the blocking pool; its pieces arrive in order on the receiver.
    /// Dropping the receiver stops the reader at its next batch.
    fn start(&self, unit: Unit) -> Receiver<Result<Piece>> {
        let (tx, rx) = sync_channel::<Result<Piece>>(2);
        let (spec, held, n) = (Arc::clone(&self.spec), Arc::clone(&self.held), self.n);
        let wanted = Arc::clone(&self.wanted);
        let stop = Arc::clone(&self.stop);
        self.handle.spawn_blocking(move || {
            let mut parts = Vec::new();
            let read = read_unit(&unit, &spec, &mut |batch| {
                if stop.load(Ordering::Relaxed) {
                    return Err(stopped());
                }
                let (mut pieces, bytes) = split_batch(batch, &spec, n, &held, &mut parts)?;
                pieces.retain(|(p, _)| wanted[*p]);
                tx.send(Ok(Piece::Split(pieces, bytes)))
                    .map_err(|_| stopped())
            });
            // Nobody listens any more when the join stopped.
            let _ = tx.send(read.map(|()| Piece::End));
        });
        rx
    }
}

/// Blocking: one batch's rows split by partition, paid for until written. Rows with a null
/// key are left out: no label matches them.
fn split_batch(
    batch: RecordBatch,
    spec: &ScanSpec,
    n: usize,
    held: &Held,
    parts: &mut Vec<u32>,
) -> Result<(Vec<(usize, RecordBatch)>, usize)> {
    // The batch as read (with its builders' spare capacity) is paid for until it is split
    // into exactly sized pieces.
    let read = batch.get_array_memory_size();
    held.grow(read)?;
    let batch = without_null_keys(batch, spec.n_keys());
    let split = batch.and_then(|batch| {
        let keys = &batch.columns()[..spec.n_keys()];
        partitions(keys, batch.num_rows(), n, parts)?;
        split(&batch, parts, n)
    });
    held.shrink(read);
    let split = split?;
    // The pieces are slices of one batch: any of them reports its buffers.
    let kept = split.first().map_or(0, |(_, b)| b.get_array_memory_size());
    held.grow(kept)?;
    Ok((split, kept))
}

fn without_null_keys(batch: RecordBatch, n_keys: usize) -> Result<RecordBatch> {
    let keys = &batch.columns()[..n_keys];
    if keys.iter().all(|k| k.null_count() == 0) {
        return Ok(batch);
    }
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|row| Some(keys.iter().all(|k| k.is_valid(row))))
        .collect();
    Ok(filter_record_batch(&batch, &keep)?)
}
