//! The data directory's RocksDB as a [`OnlineStore`] (the embedded default), and what every
//! backend of the trait shares: [`encode_rows`] (validation, the greatest row per key, the
//! row layout) and [`blocking`] (how a backend with a synchronous client keeps its I/O off
//! the async workers).

use std::collections::BTreeMap;
use std::time::Duration;

use quiver_core::ResolvedView;
use quiver_core::online_store::{Lease, OnlineStore, StoredRows, WriteStats};
use quiver_core::semantics::{LogPosition, RowOrder, row_order, write_wins};
use quiver_core::value::{KeyValue, Row};

use crate::error::{Error, Result};
use crate::keys::encode_key;
use crate::row_codec::encode_row;
use crate::store::RocksStore;
use crate::validate::validate_row;

type CoreResult<T> = quiver_core::Result<T>;

impl From<Error> for quiver_core::Error {
    fn from(error: Error) -> Self {
        quiver_core::Error::backend(error.code(), error)
    }
}

/// Runs `f` on the blocking pool and waits for it without blocking the caller's worker. A
/// task that panicked is an `INTERNAL` error, never a panic of the caller.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> CoreResult<T>
where
    T: Send + 'static,
    E: Into<quiver_core::Error> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(error) => Err(quiver_core::Error::backend(
            quiver_core::ErrorCode::Internal,
            error,
        )),
    }
}

/// A read of more keys than this runs on the blocking pool whole; a smaller one first looks
/// in memory on the caller's task.
pub const INLINE_KEYS: usize = 128;

/// Reads of at most [`INLINE_KEYS`] keys first look in memory on the caller's task (the row
/// cache: no I/O); keys that need the disk, larger reads, and every write go to the blocking
/// pool with a handle of the store.
#[async_trait::async_trait]
impl OnlineStore for RocksStore {
    async fn read_rows(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> CoreResult<StoredRows> {
        if keys.len() > INLINE_KEYS {
            let (store, view, keys) = (self.clone(), view.clone(), keys.to_vec());
            return blocking(move || store.read_rows(&view, &keys)).await;
        }
        let (rows, missed) = self.cached_rows(view, keys)?;
        if missed.is_empty() {
            return Ok(rows);
        }
        let store = self.clone();
        blocking(move || store.read_missed(rows, &missed)).await
    }

    fn read_rows_cached(
        &self,
        view: &ResolvedView,
        keys: &[Vec<KeyValue>],
    ) -> CoreResult<Option<StoredRows>> {
        Ok(RocksStore::read_rows_cached(self, view, keys)?)
    }

    async fn write_rows_at(
        &self,
        view: &ResolvedView,
        rows: Vec<Row>,
        origin: Option<&LogPosition>,
        durable: bool,
    ) -> CoreResult<WriteStats> {
        let (store, view) = (self.clone(), view.clone());
        let origin = origin.cloned();
        // Durable: the shared WAL sync after the write (`sync_group`), in the same trip to
        // the blocking pool; the keys' stripe locks are not held across the fsync.
        blocking(move || {
            let stats = store.write_rows_at(&view, &rows, origin.as_ref(), false)?;
            if durable {
                store.sync()?;
            }
            Ok::<_, Error>(stats)
        })
        .await
    }

    async fn sync(&self) -> CoreResult<()> {
        let store = self.clone();
        blocking(move || store.sync()).await
    }

    async fn newest_event(&self, view: &str) -> CoreResult<Option<i64>> {
        let (store, view) = (self.clone(), view.to_string());
        blocking(move || store.newest_event(&view)).await
    }

    async fn watermark(&self, view: &ResolvedView) -> CoreResult<Option<i64>> {
        let (store, view) = (self.clone(), view.clone());
        blocking(move || store.watermark(&view)).await
    }

    async fn advance_watermark(
        &self,
        view: &ResolvedView,
        start: i64,
        end: i64,
    ) -> CoreResult<bool> {
        let (store, view) = (self.clone(), view.clone());
        blocking(move || store.advance_watermark(&view, start, end)).await
    }

    // Leases and records of one process live in memory: no I/O, answered here.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> CoreResult<Lease> {
        Ok(self.leases.acquire(name, holder, ttl))
    }

    async fn renew_lease(&self, name: &str, holder: &str, ttl: Duration) -> CoreResult<bool> {
        Ok(self.leases.renew(name, holder, ttl))
    }

    async fn release_lease(&self, name: &str, holder: &str) -> CoreResult<()> {
        self.leases.release(name, holder);
        Ok(())
    }

    async fn put_record(&self, name: &str, bytes: &[u8], ttl: Duration) -> CoreResult<()> {
        self.leases.put_record(name, bytes, ttl);
        Ok(())
    }

    async fn record(&self, name: &str) -> CoreResult<Option<Vec<u8>>> {
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
