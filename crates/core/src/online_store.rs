//! [`OnlineStore`]: where online rows live, behind one async trait with no backend types.
//! RocksDB in the data directory (`quiver_online::RocksStore`, the embedded default) and
//! Redis Cluster or Valkey (`quiver_redis::RedisStore`, shared by several Quiver replicas)
//! implement it. Both store the same key and row layouts and apply the same ordering rule
//! ([`crate::semantics::write_wins`]) atomically per key.
//!
//! Every method but [`OnlineStore::read_rows_cached`] may do I/O: an implementation keeps
//! blocking work off the caller's async worker (RocksDB and the synchronous Redis client run
//! on the blocking pool). Errors are [`crate::Error::Backend`] with the code the backend chose.

use std::sync::Arc;
use std::time::Duration;

use crate::ResolvedView;
use crate::error::Result;
use crate::semantics::{LogPosition, RowOrder, row_order};
use crate::value::{KeyValue, Row, Value};

/// The rows of one read: for each key asked, its stored row or `None`.
pub type StoredRows = Vec<Option<Arc<StoredRow>>>;

/// One row as stored for a key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRow {
    pub event_ts: i64,
    pub created_ts: Option<i64>,
    /// The view version that wrote it; `values` are in THAT version's feature order.
    pub view_version: u32,
    pub values: Vec<Value>,
}

impl StoredRow {
    pub fn order(&self) -> RowOrder {
        row_order(self.event_ts, self.created_ts)
    }
}

/// What a write did: every row given is counted exactly once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Rows stored (at most one per key per call).
    pub written: u64,
    /// Rows older than the stored row or than another row for the same key in the call.
    pub skipped_older: u64,
}

/// The answer to [`OnlineStore::acquire_lease`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lease {
    /// The caller holds the lease for the asked time.
    Acquired,
    /// Another holder (named) has it.
    HeldBy(String),
}

/// Online rows: batched reads, ordered writes, watermarks, leases and small shared records.
#[async_trait::async_trait]
pub trait OnlineStore: Send + Sync + std::fmt::Debug {
    /// The stored row for each key (in the view's canonical join key order), `None` where
    /// there is none. A key of the wrong shape is an `INVALID_ARGUMENT` error.
    async fn read_rows(&self, view: &ResolvedView, keys: &[Vec<KeyValue>]) -> Result<StoredRows>;

    /// Like [`OnlineStore::read_rows`] from memory only, so that an async worker may call
    /// it without awaiting; `None` when some row would need I/O. Stores without a memory
    /// tier return `None`.
    fn read_rows_cached(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> Result<Option<StoredRows>> {
        let _ = (view, keys);
        Ok(None)
    }

    /// Writes rows of `view` under the ordering rule, atomically per key; every row is
    /// validated first and an invalid one writes nothing of the batch. `durable` returns
    /// only once the store's durability level is reached ([`OnlineStore::sync`]). The rows
    /// are given, so that a backend can take them to another thread without a copy.
    async fn write_rows(
        &self,
        view: &ResolvedView,
        rows: Vec<Row>,
        durable: bool,
    ) -> Result<WriteStats> {
        self.write_rows_at(view, rows, None, durable).await
    }

    /// [`OnlineStore::write_rows`] for rows that were appended to the push log at `origin`
    /// (`rows[i]` at `origin.nth(i)`): each is stored with its tie token, so that among rows
    /// equal on (event, created) the one the offline path takes last is kept, whatever order
    /// the writes arrive in.
    async fn write_rows_at(
        &self,
        view: &ResolvedView,
        rows: Vec<Row>,
        origin: Option<&LogPosition>,
        durable: bool,
    ) -> Result<WriteStats>;

    /// Makes every write done before the call reach the store's durability level.
    async fn sync(&self) -> Result<()>;

    /// The newest event time ever written online for the view named `view`.
    async fn newest_event(&self, view: &str) -> Result<Option<i64>>;

    /// The materialization watermark of `view`'s definition (its fingerprint), if any.
    async fn watermark(&self, view: &ResolvedView) -> Result<Option<i64>>;

    /// Moves the watermark of `view`'s definition to `end` when a run over `[start, end)`
    /// covers it ([`crate::semantics::watermark_advances`]), atomically against every other
    /// writer of the store; true if it moved. Call it only once the run's rows reached the
    /// store's durability level.
    async fn advance_watermark(&self, view: &ResolvedView, start: i64, end: i64) -> Result<bool>;

    /// Takes the lease `name` for `holder` for `ttl`, or renews it when `holder` has it.
    /// Leases keep one replica at a task (a view's materialization); they expire, so
    /// correctness never rests on them alone (the watermark is the fence).
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Lease>;

    /// Extends the lease `name` by `ttl` while `holder` has it; false once it expired or
    /// another holder took it (a lost lease is never taken again by a renewal).
    async fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease `name` up, if `holder` has it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<()>;

    /// Stores a small record (a job's progress) under `name` for `ttl`, replacing any; every
    /// replica on the store reads it with [`OnlineStore::record`].
    async fn put_record(&self, name: &str, bytes: &[u8], ttl: Duration) -> Result<()>;

    /// The record under `name`, unless it expired.
    async fn record(&self, name: &str) -> Result<Option<Vec<u8>>>;

    /// The backend's name, for logs (`rocksdb`, `redis-cluster`).
    fn backend(&self) -> &'static str;
}
