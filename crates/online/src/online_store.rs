//! [`OnlineStore`]: where online rows live, behind one trait. RocksDB in the data directory
//! ([`RocksStore`], the embedded default) implements it here; Redis Cluster or Valkey (crate
//! `quiver-redis`, shared by several Quiver replicas) implements it there. Both store the same
//! key and row layouts (`keys`, `row_codec`) and apply the same ordering rule
//! ([`quiver_core::semantics::write_wins`]) atomically per key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use quiver_core::ResolvedView;
use quiver_core::semantics::{LogPosition, RowOrder, row_order, write_wins};
use quiver_core::value::{KeyValue, Row};

use crate::error::Result;
use crate::keys::encode_key;
use crate::online::WriteStats;
use crate::row_codec::{StoredRow, encode_row};
use crate::store::RocksStore;
use crate::validate::validate_row;

/// Online rows: batched reads, ordered writes. Calls block (disk or network): callers run
/// them on the blocking pool, except [`OnlineStore::read_rows_cached`].
pub trait OnlineStore: Send + Sync + std::fmt::Debug {
    /// The stored row for each key (in the view's canonical join key order), `None` where
    /// there is none. A key of the wrong shape is an `INVALID_ARGUMENT` error.
    fn read_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Vec<Option<Arc<StoredRow>>>>;

    /// Like [`OnlineStore::read_rows`] from memory only, so that an async worker may call
    /// it; `None` when some row would need I/O. Stores without a memory tier return `None`.
    fn read_rows_cached(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Option<Vec<Option<Arc<StoredRow>>>>> {
        let _ = (view, keys);
        Ok(None)
    }

    /// Writes rows of `view` under the ordering rule, atomically per key; every row is
    /// validated first and an invalid one writes nothing of the batch. `durable` returns
    /// only once the store's durability level is reached ([`OnlineStore::sync`]).
    fn write_rows(&self, view: &ResolvedView, rows: &[Row], durable: bool) -> Result<WriteStats> {
        self.write_rows_at(view, rows, None, durable)
    }

    /// [`OnlineStore::write_rows`] for rows that were appended to the push log at `origin`
    /// (`rows[i]` at `origin.nth(i)`): each is stored with its tie token, so that among rows
    /// equal on (event, created) the one the offline path takes last is kept, whatever order
    /// the writes arrive in.
    fn write_rows_at(
        &self,
        view: &ResolvedView,
        rows: &[Row],
        origin: Option<&LogPosition>,
        durable: bool,
    ) -> Result<WriteStats>;

    /// Makes every write done before the call reach the store's durability level.
    fn sync(&self) -> Result<()>;

    /// The newest event time ever written online for the view named `view`.
    fn newest_event(&self, view: &str) -> Result<Option<i64>>;

    /// The materialization watermark of `view`'s definition (its fingerprint), if any.
    fn watermark(&self, view: &ResolvedView) -> Result<Option<i64>>;

    /// Moves the watermark of `view`'s definition to `end` when a run over `[start, end)`
    /// covers it ([`quiver_core::semantics::watermark_advances`]), atomically against every
    /// other writer of the store; true if it moved. Call it only once the run's rows reached
    /// the store's durability level.
    fn advance_watermark(&self, view: &ResolvedView, start: i64, end: i64) -> Result<bool>;

    /// Takes the lease `name` for `holder` for `ttl`, or renews it when `holder` has it.
    /// Leases keep one replica at a task (a view's materialization); they expire, so
    /// correctness never rests on them alone (the watermark is the fence).
    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Lease>;

    /// Extends the lease `name` by `ttl` while `holder` has it; false once it expired or
    /// another holder took it (a lost lease is never taken again by a renewal).
    fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease `name` up, if `holder` has it.
    fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Stores a small record (a job's progress) under `name` for `ttl`, replacing any; every
    /// replica on the store reads it with [`OnlineStore::record`].
    fn put_record(&self, name: &str, bytes: &[u8], ttl: Duration) -> Result<()>;

    /// The record under `name`, unless it expired.
    fn record(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// The backend's name, for logs (`rocksdb`, `redis-cluster`).
    fn backend(&self) -> &'static str;
}

/// The answer to [`OnlineStore::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The caller holds the lease for the asked time.
    Acquired,
    /// Another holder (named) has it.
    HeldBy(String),
}

impl OnlineStore for RocksStore {
    fn read_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Vec<Option<Arc<StoredRow>>>> {
        RocksStore::read_rows(self, view, keys)
    }

    fn read_rows_cached(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Option<Vec<Option<Arc<StoredRow>>>>> {
        RocksStore::read_rows_cached(self, view, keys)
    }

    fn write_rows_at(
        &self,
        view: &ResolvedView,
        rows: &[Row],
        origin: Option<&LogPosition>,
        durable: bool,
    ) -> Result<WriteStats> {
        RocksStore::write_rows_at(self, view, rows, origin, durable)
    }

    fn sync(&self) -> Result<()> {
        RocksStore::sync(self)
    }

    fn newest_event(&self, view: &str) -> Result<Option<i64>> {
        RocksStore::newest_event(self, view)
    }

    fn watermark(&self, view: &ResolvedView) -> Result<Option<i64>> {
        RocksStore::watermark(self, view)
    }

    fn advance_watermark(&self, view: &ResolvedView, start: i64, end: i64) -> Result<bool> {
        RocksStore::advance_watermark(self, view, start, end)
    }

    fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Lease> {
        Ok(self.leases.acquire(name, holder, ttl))
    }

    fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        Ok(self.leases.renew(name, holder, ttl))
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<()> {
        self.leases.release(name, holder);
        Ok(())
    }

    fn put_record(&self, name: &str, bytes: &[u8], ttl: Duration) -> Result<()> {
        self.leases.put_record(name, bytes, ttl);
        Ok(())
    }

    fn record(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.leases.record(name))
    }

    fn backend(&self) -> &'static str {
        "rocksdb"
    }
}

/// One row of a write batch, ready for a store: the greatest row of its key in the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedRow {
    /// The key layout of `keys` (view name, then the join key parts).
    pub key: Vec<u8>,
    pub order: RowOrder,
    /// The tie token (`LogPosition::tie_token`), empty for a row not from the push log.
    pub tie: Vec<u8>,
    /// The row layout of `row_codec`.
    pub value: Vec<u8>,
}

/// Validates `rows` (all of them, first) and keeps the greatest row per key by order and tie
/// token (`rows[i]` at `origin.nth(i)`; without an origin, ties: the last one), encoded,
/// sorted by key.
pub fn encode_rows(
    view: &ResolvedView,
    rows: &[Row],
    origin: Option<&LogPosition>,
) -> Result<Vec<EncodedRow>> {
    for (index, row) in rows.iter().enumerate() {
        validate_row(view, index, row)?;
    }
    let tokens = origin.map(LogPosition::tie_tokens);
    let tie_of = |index: usize| {
        tokens
            .as_ref()
            .map_or_else(Vec::new, |t| t.token(index as u64))
    };
    let mut latest: BTreeMap<Vec<u8>, (&Row, Vec<u8>)> = BTreeMap::new();
    for (index, row) in rows.iter().enumerate() {
        let key = encode_key(&view.name, &row.key);
        let tie = tie_of(index);
        let order = row_order(row.event_ts, row.created_ts);
        match latest.get(&key) {
            Some((kept, kept_tie))
                if !write_wins(
                    (order, &tie),
                    Some((row_order(kept.event_ts, kept.created_ts), kept_tie)),
                ) => {}
            _ => {
                latest.insert(key, (row, tie));
            }
        }
    }
    latest
        .into_iter()
        .map(|(key, (row, tie))| {
            Ok(EncodedRow {
                value: encode_row(
                    view.version,
                    row.event_ts,
                    row.created_ts,
                    &tie,
                    &row.values,
                )?,
                order: row_order(row.event_ts, row.created_ts),
                tie,
                key,
            })
        })
        .collect()
}
