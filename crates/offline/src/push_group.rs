//! Group commit of push-log appends: concurrent pushes share files and fsyncs. An append
//! queues its batches and waits; the first waiter that finds no write in progress becomes the
//! leader, takes everything queued (in arrival order), writes one durable file per view (a
//! new file where the schema changes, so a view's rows stay in arrival order across files
//! too), and wakes every waiter with its outcome. An append returns only once the file
//! holding its rows is committed (written, fsynced, renamed), as a lone append did, and
//! learns where its rows are (the file's name and its first row's index in it); pushes
//! that arrive while a group is written form the next group.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

use arrow::array::RecordBatch;

use crate::error::{Error, Result};

/// One append waiting to be written.
struct Append {
    ticket: u64,
    dir: PathBuf,
    batches: Vec<RecordBatch>,
}

#[derive(Default)]
struct State {
    waiting: Vec<Append>,
    /// Whether a leader is writing a group now.
    writing: bool,
    next_ticket: u64,
    /// Outcomes not collected yet, by ticket (an error as its code and text: one error fails
    /// every append of its file).
    done: HashMap<u64, Outcome>,
}

/// An append's outcome, shareable by the appends of one file.
type Outcome = Result<Placed, (quiver_core::ErrorCode, String)>;

/// Where an append's rows were written: the file's name `(micros, seq)` and the index of
/// the append's first row in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Placed {
    pub(crate) name: (i64, u64),
    pub(crate) first_row: u64,
}

/// The queue of push-log appends of one store.
#[derive(Default)]
pub(crate) struct PushQueue {
    state: Mutex<State>,
    written: Condvar,
}

/// The appends of one file: the directory, its batches in arrival order, their tickets with
/// the index of each one's first row in the file.
pub(crate) struct GroupFile {
    pub(crate) dir: PathBuf,
    pub(crate) batches: Vec<RecordBatch>,
    tickets: Vec<(u64, u64)>,
}

impl PushQueue {
    /// Blocking: queues `batches` for `dir` and returns once they are durable (or failed);
    /// `write` writes a group's files in order (called on whichever thread leads) and
    /// returns each file's name.
    pub(crate) fn append(
        &self,
        dir: PathBuf,
        batches: Vec<RecordBatch>,
        write: &dyn Fn(&GroupFile) -> Result<(i64, u64)>,
    ) -> Result<Placed> {
        let ticket = {
            let mut state = self.lock();
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting.push(Append {
                ticket,
                dir,
                batches,
            });
            ticket
        };
        let mut state = self.lock();
        loop {
            if let Some(outcome) = state.done.remove(&ticket) {
                return outcome.map_err(|(code, message)| Error::GroupCommit { code, message });
            }
            if state.writing {
                state = self
                    .written
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.writing = true;
            let group = std::mem::take(&mut state.waiting);
            drop(state);
            let mut leading = Leading {
                queue: self,
                outcomes: Vec::new(),
                tickets: group.iter().map(|a| a.ticket).collect(),
            };
            for file in files(group) {
                let outcome = write(&file).map_err(|e| (e.code(), e.to_string()));
                leading
                    .outcomes
                    .extend(file.tickets.iter().map(|&(t, first_row)| {
                        let placed = outcome.clone().map(|name| Placed { name, first_row });
                        (t, placed)
                    }));
            }
            drop(leading); // Hands the outcomes over and wakes the waiters.
            state = self.lock();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A leader's group: on drop (also by unwinding) its outcomes are handed over, appends
/// without one failed, and the next leader may start.
struct Leading<'a> {
    queue: &'a PushQueue,
    outcomes: Vec<(u64, Outcome)>,
    tickets: Vec<u64>,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.writing = false;
        state.done.extend(self.outcomes.drain(..));
        for ticket in &self.tickets {
            state.done.entry(*ticket).or_insert_with(|| {
                let stopped = "the group's write stopped".to_string();
                Err((quiver_core::ErrorCode::Internal, stopped))
            });
        }
        drop(state);
        self.queue.written.notify_all();
    }
}

/// The files of a group: per directory in arrival order, a new file where the schema changes.
fn files(group: Vec<Append>) -> Vec<GroupFile> {
    let mut files: Vec<GroupFile> = Vec::new();
    let mut last_of_dir: HashMap<PathBuf, usize> = HashMap::new();
    for append in group {
        let schema = append.batches.first().map(RecordBatch::schema);
        let joins = last_of_dir.get(&append.dir).copied().filter(|&i| {
            let last = files[i].batches.last().map(RecordBatch::schema);
            last == schema
        });
        match joins {
            Some(i) => {
                let first_row = files[i].batches.iter().map(|b| b.num_rows() as u64).sum();
                files[i].batches.extend(append.batches);
                files[i].tickets.push((append.ticket, first_row));
            }
            None => {
                last_of_dir.insert(append.dir.clone(), files.len());
                files.push(GroupFile {
                    dir: append.dir,
                    batches: append.batches,
                    tickets: vec![(append.ticket, 0)],
                });
            }
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(name: &str, value: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Int64, true)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![value]))]).expect("batch")
    }

    #[test]
    fn a_view_gets_one_file_per_schema_run_in_arrival_order() {
        let append = |ticket, dir: &str, b| Append {
            ticket,
            dir: PathBuf::from(dir),
            batches: vec![b],
        };
        let group = vec![
            append(0, "a", batch("x", 0)),
            append(1, "b", batch("x", 1)),
            append(2, "a", batch("x", 2)),
            append(3, "a", batch("y", 3)),
            append(4, "a", batch("x", 4)),
        ];
        let files = files(group);
        let shape: Vec<(String, Vec<u64>)> = files
            .iter()
            .map(|f| {
                let tickets = f.tickets.iter().map(|(t, _)| *t).collect();
                (f.dir.display().to_string(), tickets)
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("a".into(), vec![0, 2]),
                ("b".into(), vec![1]),
                ("a".into(), vec![3]),
                ("a".into(), vec![4]),
            ]
        );
    }

    #[test]
    fn concurrent_appends_share_writes_and_each_learns_its_outcome() {
        let queue = Arc::new(PushQueue::default());
        let writes = Arc::new(Mutex::new(Vec::<Vec<i64>>::new()));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (queue, writes) = (Arc::clone(&queue), Arc::clone(&writes));
                std::thread::spawn(move || {
                    let dir = PathBuf::from(if i == 7 { "bad" } else { "good" });
                    queue.append(dir, vec![batch("x", i)], &|file: &GroupFile| {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        if file.dir == std::path::Path::new("bad") {
                            return Err(Error::invalid("x", "refused"));
                        }
                        let values = file.batches.iter().map(|b| {
                            let c = b.column(0).as_any().downcast_ref::<Int64Array>();
                            c.map_or(-1, |c| c.value(0))
                        });
                        let mut writes = writes.lock().expect("lock");
                        writes.push(values.collect());
                        Ok((writes.len() as i64, 0))
                    })
                })
            })
            .collect();
        let outcomes: Vec<Result<Placed>> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        let writes = writes.lock().expect("lock");
        for (i, outcome) in outcomes.iter().enumerate() {
            assert_eq!(outcome.is_ok(), i != 7, "append {i}");
            // Each append learns its file and the index of its row in it.
            if let Ok(placed) = outcome {
                let file = &writes[placed.name.0 as usize - 1];
                assert_eq!(file[placed.first_row as usize], i as i64, "append {i}");
            }
        }
        let mut written: Vec<i64> = writes.iter().flatten().copied().collect();
        written.sort_unstable();
        assert_eq!(written, (0..16).filter(|i| *i != 7).collect::<Vec<_>>());
        assert!(writes.len() < 15, "some appends shared a file: {writes:?}");
        let state = queue.lock();
        assert!(state.done.is_empty() && !state.writing);
    }
}
