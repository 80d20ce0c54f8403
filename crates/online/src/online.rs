//! Online rows: ordered, atomic-per-key writes and batched reads.

use std::sync::Arc;

use quiver_core::ResolvedView;
use quiver_core::semantics::{LogPosition, write_wins};
use quiver_core::value::{KeyValue, Row};
use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::keys::{check_key, encode_key_into};
use crate::online_store::EncodedRow;
use crate::row_cache::{Cached, Miss};
use crate::row_codec::{decode_order, decode_row};
use crate::stats::raise_newest_event;
use crate::store::{CF_ONLINE, RocksStore, stripe_of, synced};
use quiver_core::online_store::{StoredRow, WriteStats};

impl RocksStore {
    /// Writes rows of `view` with the ordering rule: a row replaces the stored one only if
    /// `write_wins((event_ts, created_ts), stored order)`. Atomic per key under concurrent
    /// callers: the keys' lock stripes are held (taken in sorted order) from the read of the
    /// stored orders (one multi-get) to the end of the write (one `WriteBatch`). Within one
    /// call, several rows for the same key keep the greatest by order (ties: the last one).
    /// Every row is validated first; an invalid one is [`Error::InvalidRow`] and nothing of
    /// the batch is written. `durable` syncs the WAL before returning (even when every row
    /// was skipped, since the newer stored row may come from a write not yet synced).
    pub fn write_rows(
        &self,
        view: &ResolvedView,
        rows: &[Row],
        durable: bool,
    ) -> Result<WriteStats> {
        self.write_rows_at(view, rows, None, durable)
    }

    /// [`RocksStore::write_rows`] for rows appended to the push log at `origin`
    /// ([`quiver_core::online_store::OnlineStore::write_rows_at`]): rows equal on order compare their tie tokens.
    pub fn write_rows_at(
        &self,
        view: &ResolvedView,
        rows: &[Row],
        origin: Option<&LogPosition>,
        durable: bool,
    ) -> Result<WriteStats> {
        // Latest row per encoded key, sorted by key for the multi-get.
        let encoded = crate::online_store::encode_rows(view, rows, origin)?;
        let cf = self.cf(CF_ONLINE)?;
        let guards = self.lock_keys(encoded.iter().map(|row| row.key.as_slice()));
        let stored = self
            .db
            .batched_multi_get_cf(cf, encoded.iter().map(|row| &row.key), true);
        let mut batch = WriteBatch::default();
        let mut written = 0u64;
        let mut newest = i64::MIN;
        for (row, stored) in encoded.iter().zip(stored) {
            let EncodedRow {
                key,
                order,
                tie,
                value,
            } = row;
            let stored = stored.map_err(Error::storage("read stored rows"))?;
            let stored_order = stored.as_deref().map(decode_order).transpose()?;
            if write_wins((*order, tie), stored_order) {
                batch.put_cf(cf, key, value);
                written += 1;
                newest = newest.max(order.0);
            }
        }
        if written > 0 {
            raise_newest_event(self, &mut batch, &view.name, newest)?;
            let options = if durable {
                synced()
            } else {
                rocksdb::WriteOptions::default()
            };
            let wrote = self.db.write_opt(batch, &options);
            // After the write, under the stripe locks: see `row_cache` for why this order.
            if let Some(cache) = &self.row_cache {
                for row in &encoded {
                    cache.invalidate(&row.key, stripe_of(&row.key));
                }
            }
            wrote.map_err(Error::storage("write online rows"))?;
        } else if durable && !rows.is_empty() {
            // Every row lost to a stored one, which may come from a write not yet synced.
            self.sync()?;
        }
        drop(guards);
        let stats = WriteStats {
            written,
            skipped_older: rows.len() as u64 - written,
        };
        tracing::debug!(
            feature_view = %view.name,
            rows = rows.len(),
            written = stats.written,
            skipped_older = stats.skipped_older,
            durable,
            "wrote online rows"
        );
        Ok(stats)
    }

    /// Reads the stored row for each key (in the view's canonical join key order): from the
    /// row cache, and the rest with one multi-get. A key that does not match
    /// `view.join_keys` is [`Error::KeyType`] (or [`Error::KeyArity`]), never a silent miss.
    pub fn read_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Vec<Option<Arc<StoredRow>>>> {
        let (rows, missed) = self.cached_rows(view, keys)?;
        if missed.is_empty() {
            return Ok(rows);
        }
        self.read_missed(rows, &missed)
    }

    /// Completes a read that [`RocksStore::cached_rows`] began: one multi-get for the keys
    /// the row cache missed, filled into `rows` (and the cache).
    pub(crate) fn read_missed(
        &self,
        mut rows: Vec<Cached>,
        missed: &[Missed],
    ) -> Result<Vec<Option<Arc<StoredRow>>>> {
        let cf = self.cf(CF_ONLINE)?;
        let stored = self.db.batched_multi_get_cf_opt(
            cf,
            missed.iter().map(|missed| &missed.key),
            false,
            &rocksdb::ReadOptions::default(),
        );
        for (missed, stored) in missed.iter().zip(stored) {
            let row = decode_stored(stored)?;
            self.fill(missed, &row);
            if let Some(slot) = rows.get_mut(missed.index) {
                *slot = row;
            }
        }
        Ok(rows)
    }

    /// Like [`RocksStore::read_rows`], from memory only (the row cache, memtables and the
    /// block cache: no I/O, so it may run on an async worker); `None` when some key would
    /// need a disk read. One point lookup per missed key: RocksDB's batched MultiGet does not
    /// honour the block-cache read tier (it reads the disk), single gets do.
    pub fn read_rows_cached(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Option<Vec<Option<Arc<StoredRow>>>>> {
        let (mut rows, missed) = self.cached_rows(view, keys)?;
        let mut options = rocksdb::ReadOptions::default();
        options.set_read_tier(rocksdb::ReadTier::BlockCache);
        let cf = self.cf(CF_ONLINE)?;
        for missed in &missed {
            let row = match self.db.get_pinned_cf_opt(cf, &missed.key, &options) {
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => return Ok(None),
                stored => decode_stored(stored)?,
            };
            // An async worker never waits for a writer: with the key's stripe locked, the
            // read goes to the blocking pool (which waits, see `row_cache`).
            if !self.try_fill(missed, &row) {
                return Ok(None);
            }
            if let Some(slot) = rows.get_mut(missed.index) {
                *slot = row;
            }
        }
        Ok(Some(rows))
    }

    /// Checks `keys` and looks each up in the row cache (encoding into one reused buffer);
    /// returns the rows found there and the keys to read from RocksDB.
    pub(crate) fn cached_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<(Vec<Cached>, Vec<Missed>)> {
        for key in keys {
            check_key(view, key)?;
        }
        let mut rows = vec![None; keys.len()];
        let mut missed = Vec::new();
        let mut buffer = Vec::with_capacity(64);
        for (index, (key, slot)) in keys.iter().zip(&mut rows).enumerate() {
            buffer.clear();
            encode_key_into(&mut buffer, &view.name, key);
            let ticket = match &self.row_cache {
                Some(cache) => match cache.get(&buffer) {
                    Some(cached) => {
                        *slot = cached;
                        continue;
                    }
                    None => Some(cache.miss(stripe_of(&buffer))),
                },
                None => None,
            };
            missed.push(Missed {
                index,
                key: buffer.clone(),
                ticket,
            });
        }
        Ok((rows, missed))
    }

    /// Caches a row read after a miss, under the key's stripe lock (see `row_cache`: the
    /// row may be returned only once no write of the key is in progress).
    fn fill(&self, missed: &Missed, row: &Cached) {
        if let (Some(cache), Some(ticket)) = (&self.row_cache, missed.ticket) {
            let _guard = self.lock_stripe(stripe_of(&missed.key));
            cache.fill(&missed.key, ticket, row.clone());
        }
    }

    /// Like [`RocksStore::fill`] without waiting: `false` when a writer holds the stripe
    /// (then the row must not be returned).
    fn try_fill(&self, missed: &Missed, row: &Cached) -> bool {
        let (Some(cache), Some(ticket)) = (&self.row_cache, missed.ticket) else {
            return true;
        };
        match self.try_lock_stripe(stripe_of(&missed.key)) {
            Some(_guard) => {
                cache.fill(&missed.key, ticket, row.clone());
                true
            }
            None => false,
        }
    }
}

/// A key the row cache did not hold: its position in the read, its encoding, and the
/// cache's ticket for filling it.
#[derive(Debug)]
pub(crate) struct Missed {
    index: usize,
    key: Vec<u8>,
    ticket: Option<Miss>,
}

fn decode_stored(
    stored: std::result::Result<Option<rocksdb::DBPinnableSlice<'_>>, rocksdb::Error>,
) -> Result<Cached> {
    match stored.map_err(Error::storage("read online rows"))? {
        None => Ok(None),
        Some(bytes) => decode_row(&bytes).map(|row| Some(Arc::new(row))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::encode_key;
    use crate::test_support::view;
    use quiver_core::ErrorCode;
    use quiver_core::types::KeyType;
    use quiver_core::value::Value;

    fn driver_view() -> ResolvedView {
        view(
            "driver_stats",
            &[("driver_id", KeyType::Int64)],
            &[("trips", "int64"), ("embedding", "list<float32>")],
        )
    }

    fn row(id: i64, event_ts: i64, created_ts: Option<i64>, trips: i64) -> Row {
        Row {
            key: vec![KeyValue::Int64(id)],
            event_ts,
            created_ts,
            values: vec![
                Value::Int64(trips),
                Value::List(vec![Value::Float32(0.5), Value::Null]),
            ],
        }
    }

    fn trips(
        store: &RocksStore,
        view: &ResolvedView,
        id: i64,
    ) -> Option<(i64, Option<i64>, Value)> {
        let rows = store
            .read_rows(view, &[vec![KeyValue::Int64(id)]])
            .expect("read");
        rows.into_iter()
            .next()
            .flatten()
            .map(|stored| (stored.event_ts, stored.created_ts, stored.values[0].clone()))
    }

    fn stats(written: u64, skipped_older: u64) -> WriteStats {
        WriteStats {
            written,
            skipped_older,
        }
    }

    #[test]
    fn older_rows_never_overwrite_newer_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        // (row, expected stats, expected stored (event, created, trips) afterwards)
        let table = [
            (row(1, 10, None, 1), stats(1, 0), (10, None, 1)),
            (row(1, 9, Some(99), 2), stats(0, 1), (10, None, 1)),
            (row(1, 10, Some(0), 3), stats(1, 0), (10, Some(0), 3)),
            (row(1, 10, None, 4), stats(0, 1), (10, Some(0), 3)),
            (row(1, 10, Some(5), 5), stats(1, 0), (10, Some(5), 5)),
            (row(1, 10, Some(4), 6), stats(0, 1), (10, Some(5), 5)),
            (row(1, 10, Some(5), 7), stats(1, 0), (10, Some(5), 7)),
            (row(1, 11, None, 8), stats(1, 0), (11, None, 8)),
        ];
        for (index, (row, want_stats, (event_ts, created_ts, n))) in table.into_iter().enumerate() {
            let got = store.write_rows(&view, &[row], true).expect("write");
            assert_eq!(got, want_stats, "step {index}");
            assert_eq!(
                trips(&store, &view, 1),
                Some((event_ts, created_ts, Value::Int64(n))),
                "step {index}"
            );
        }
    }

    #[test]
    fn one_call_keeps_the_greatest_row_per_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        let rows = [
            row(1, 5, None, 1),
            row(2, 1, None, 10),
            row(1, 7, None, 2),
            row(1, 6, Some(9), 3),
            row(1, 7, None, 4), // ties with the greatest: the last one wins
            row(2, 0, None, 11),
        ];
        assert_eq!(
            store.write_rows(&view, &rows, false).expect("write"),
            stats(2, 4)
        );
        assert_eq!(trips(&store, &view, 1), Some((7, None, Value::Int64(4))));
        assert_eq!(trips(&store, &view, 2), Some((1, None, Value::Int64(10))));
        assert_eq!(trips(&store, &view, 3), None);
        assert_eq!(
            store.write_rows(&view, &[], true).expect("empty"),
            stats(0, 0)
        );
    }

    #[test]
    fn concurrent_writers_leave_the_greatest_row() {
        const N_THREADS: i64 = 8;
        const N_EVENTS: i64 = 300;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        for round in 0..6 {
            std::thread::scope(|scope| {
                for thread in 0..N_THREADS {
                    let (store, view) = (&store, &view);
                    scope.spawn(move || {
                        // Thread t owns event times t, t+8, t+16, ...; rounds vary the order.
                        let mut events: Vec<i64> =
                            (0..N_EVENTS).map(|i| i * N_THREADS + thread).collect();
                        if (round + thread) % 2 == 1 {
                            events.reverse();
                        }
                        for event_ts in events {
                            let rows = [
                                row(round, event_ts, None, event_ts),
                                row(99, event_ts, None, 0),
                            ];
                            store.write_rows(view, &rows, false).expect("write");
                        }
                    });
                }
            });
            let max = N_EVENTS * N_THREADS - 1;
            assert_eq!(
                trips(&store, &view, round),
                Some((max, None, Value::Int64(max)))
            );
        }
    }

    /// The block-cache tier on its own: no row cache.
    #[test]
    fn cached_reads_answer_from_memory_or_not_at_all() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = driver_view();
        let options = crate::StoreOptions {
            row_cache_bytes: 0,
            ..Default::default()
        };
        // Keys 0 and 1 are stored, -1 is not; 50,000 rows make the table larger than what
        // opening it reads (its tail), so a reopened store holds no data block in memory.
        let keys: Vec<Vec<KeyValue>> = [0, 1, -1].map(|id| vec![KeyValue::Int64(id)]).to_vec();
        {
            let store = RocksStore::open_with(dir.path(), options).expect("open");
            let rows: Vec<Row> = (0..50_000).map(|id| row(id, 5, None, id * 10)).collect();
            store.write_rows(&view, &rows, true).expect("write");
            // In the memtable: the cached read answers, and agrees with the full read.
            let cached = store.read_rows_cached(&view, &keys).expect("read");
            assert_eq!(cached, Some(store.read_rows(&view, &keys).expect("read")));
            let cf = store.cf(crate::store::CF_ONLINE).expect("cf");
            store.db.flush_cf(cf).expect("flush");
        }
        // Reopened, the rows are only on disk: a memory-only read declines; once a full read
        // has loaded their blocks, it answers.
        let store = RocksStore::open_with(dir.path(), options).expect("reopen");
        assert_eq!(
            store.read_rows_cached(&view, &keys[..1]).expect("read"),
            None
        );
        let full = store.read_rows(&view, &keys).expect("read");
        assert!(full[0].is_some() && full[1].is_some() && full[2].is_none());
        assert_eq!(
            store.read_rows_cached(&view, &keys).expect("read"),
            Some(full)
        );
        // Key checks come first, as for full reads.
        let error = store
            .read_rows_cached(&view, &[vec![KeyValue::Int32(1)]])
            .expect_err("int32 key");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn wrong_keys_on_read_are_invalid_arguments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        store
            .write_rows(&view, &[row(1, 1, None, 1)], true)
            .expect("write");
        let error = store
            .read_rows(&view, &[vec![KeyValue::Int32(1)]])
            .expect_err("int32 key for an int64 join key");
        assert!(
            matches!(error, Error::KeyType { position: 0, .. }),
            "{error}"
        );
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let error = store
            .read_rows(&view, &[vec![KeyValue::Int64(1), KeyValue::Int64(2)]])
            .expect_err("too many parts");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let read = store
            .read_rows(&view, &[vec![KeyValue::Int64(2)], vec![KeyValue::Int64(1)]])
            .expect("read");
        assert_eq!(read.len(), 2);
        assert!(read[0].is_none());
        assert_eq!(read[1].as_ref().map(|r| r.view_version), Some(1));
    }

    #[test]
    fn an_invalid_row_writes_nothing_of_its_batch() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        let mut wrong_key = row(2, 1, None, 1);
        wrong_key.key = vec![KeyValue::String("2".into())];
        let mut wrong_type = row(2, 1, None, 1);
        wrong_type.values[1] = Value::List(vec![Value::Float64(1.0)]);
        let mut wrong_len = row(2, 1, None, 1);
        wrong_len.values.pop();
        for (bad, field) in [
            (wrong_key, "rows[1].key"),
            (wrong_type, "rows[1].values[1]"),
            (wrong_len, "rows[1].values"),
        ] {
            let error = store
                .write_rows(&view, &[row(1, 1, None, 1), bad], true)
                .expect_err("invalid");
            assert!(
                matches!(&error, Error::InvalidRow { field: f, .. } if f == field),
                "{error}"
            );
            assert_eq!(error.code(), ErrorCode::InvalidArgument);
            assert_eq!(trips(&store, &view, 1), None);
        }
    }

    #[test]
    fn corrupt_stored_rows_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        let cf = store.cf(CF_ONLINE).expect("cf");
        let key = encode_key(&view.name, &[KeyValue::Int64(1)]);
        store.db.put_cf(cf, key, [1, 0, 0]).expect("put");
        let read = store.read_rows(&view, &[vec![KeyValue::Int64(1)]]);
        assert!(matches!(read, Err(Error::Corrupt { .. })));
        let write = store.write_rows(&view, &[row(1, 1, None, 1)], true);
        assert!(matches!(write, Err(Error::Corrupt { .. })));
    }

    #[test]
    fn rows_persist_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let view = view(
            "composite",
            &[("a", KeyType::String), ("b", KeyType::Int32)],
            &[("x", "float64")],
        );
        let key = vec![KeyValue::String("k".into()), KeyValue::Int32(-3)];
        let row = Row {
            key: key.clone(),
            event_ts: 42,
            created_ts: Some(43),
            values: vec![Value::Float64(2.5)],
        };
        {
            let store = RocksStore::open(dir.path()).expect("open");
            store.write_rows(&view, &[row], false).expect("write");
            store.sync().expect("sync");
        }
        let store = RocksStore::open(dir.path()).expect("reopen");
        let read = store.read_rows(&view, &[key]).expect("read");
        let want = StoredRow {
            event_ts: 42,
            created_ts: Some(43),
            view_version: 1,
            values: vec![Value::Float64(2.5)],
        };
        assert_eq!(read, vec![Some(Arc::new(want))]);
    }

    /// Readers racing writers through the row cache never see a row older than one they
    /// already saw, and once the writers stop every read sees the newest row (a stale fill
    /// would stay in the cache and fail here).
    #[test]
    fn the_row_cache_never_serves_an_older_row_than_the_store() {
        const N_WRITES: i64 = 2_000;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        let keys: Vec<Vec<KeyValue>> = (0..4).map(|id| vec![KeyValue::Int64(id)]).collect();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let (store, view, keys, done) = (&store, &view, &keys, &done);
            for reader in 0..3 {
                scope.spawn(move || {
                    let mut seen = vec![i64::MIN; keys.len()];
                    while !done.load(std::sync::atomic::Ordering::SeqCst) {
                        // Alternate the multi-get and the memory-only path, which declines
                        // (None) while a writer holds a key's stripe.
                        let rows = if reader % 2 == 0 {
                            store.read_rows(view, keys).expect("read")
                        } else {
                            match store.read_rows_cached(view, keys).expect("read") {
                                Some(rows) => rows,
                                None => continue,
                            }
                        };
                        for (seen, row) in seen.iter_mut().zip(rows) {
                            let event_ts = row.map_or(i64::MIN, |row| row.event_ts);
                            assert!(event_ts >= *seen, "went back from {seen} to {event_ts}");
                            *seen = event_ts;
                        }
                    }
                });
            }
            for event_ts in 1..=N_WRITES {
                let rows: Vec<Row> = (0..4).map(|id| row(id, event_ts, None, id)).collect();
                store.write_rows(view, &rows, false).expect("write");
            }
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        for id in 0..4 {
            assert_eq!(
                trips(&store, &view, id).map(|(event_ts, ..)| event_ts),
                Some(N_WRITES)
            );
        }
    }

    #[test]
    fn reads_agree_with_and_without_the_row_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = RocksStore::open(dir.path()).expect("open");
        let view = driver_view();
        let rows: Vec<Row> = (0..100).map(|id| row(id, id, None, id * 2)).collect();
        store.write_rows(&view, &rows, false).expect("write");
        let keys: Vec<Vec<KeyValue>> = (-5..105).map(|id| vec![KeyValue::Int64(id)]).collect();
        let cold = store.read_rows(&view, &keys).expect("cold");
        let warm = store.read_rows(&view, &keys).expect("warm");
        assert_eq!(cold, warm);
        assert_eq!(cold.iter().filter(|row| row.is_some()).count(), 100);
        let stats = store.stats().expect("stats");
        assert_eq!((stats.row_cache_hits, stats.row_cache_misses), (110, 110));
        assert!(stats.row_cache_bytes > 0);
        // A write replaces what the cache holds.
        store
            .write_rows(&view, &[row(3, 500, None, 7)], false)
            .expect("write");
        assert_eq!(trips(&store, &view, 3), Some((500, None, Value::Int64(7))));
    }
}
