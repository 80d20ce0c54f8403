//! Coalesced fsyncs of the write-ahead log. A caller's sync is satisfied by any fsync that
//! started after it asked (its writes were in the log by then): while one fsync runs, the
//! callers that arrive wait for it to end, and then one of them runs a single fsync for all.
//! With 32 concurrent durable pushes this is about two fsyncs at a time instead of 32 in a row.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct State {
    /// Syncs asked for so far (the last ticket given out).
    asked: u64,
    /// Every ticket up to this one is durable.
    synced: u64,
    /// Whether an fsync is running.
    running: bool,
}

#[derive(Debug, Default)]
pub(crate) struct SyncGroup {
    state: Mutex<State>,
    finished: Condvar,
}

impl SyncGroup {
    /// Blocking: returns once an fsync (`sync`) that started after this call has succeeded,
    /// or with the error of the one this caller ran. A caller whose covering fsync failed
    /// runs its own (the store reports a persistent failure again).
    pub(crate) fn sync<E>(&self, sync: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.lock();
        state.asked += 1;
        let ticket = state.asked;
        loop {
            if state.synced >= ticket {
                return Ok(());
            }
            if state.running {
                state = self
                    .finished
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            let covers = state.asked;
            drop(state);
            let running = Running(self);
            let outcome = sync();
            drop(running);
            state = self.lock();
            if outcome.is_ok() {
                state.synced = state.synced.max(covers);
            }
            self.finished.notify_all();
            outcome?;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running fsync: clears `running` when it ends, even by unwinding.
struct Running<'a>(&'a SyncGroup);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.lock().running = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn concurrent_callers_share_fsyncs_and_each_is_covered() {
        let group = Arc::new(SyncGroup::default());
        let fsyncs = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..32)
            .map(|_| {
                let (group, fsyncs) = (Arc::clone(&group), Arc::clone(&fsyncs));
                std::thread::spawn(move || {
                    group.sync(|| {
                        fsyncs.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        Ok::<_, ()>(())
                    })
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().expect("thread"), Ok(()));
        }
        let n = fsyncs.load(Ordering::SeqCst);
        assert!((1..32).contains(&n), "{n} fsyncs for 32 callers");
        let state = group.lock();
        assert_eq!((state.synced, state.running), (32, false));
    }

    #[test]
    fn a_failed_fsync_fails_its_caller_and_the_next_caller_tries_again() {
        let group = SyncGroup::default();
        assert_eq!(group.sync(|| Err("disk")), Err("disk"));
        assert_eq!(group.sync(|| Ok::<_, &str>(())), Ok(()));
        assert_eq!(group.lock().synced, 2);
    }
}
