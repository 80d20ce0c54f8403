//! RocksDB storage of one Quiver data directory: the online store (the latest row per entity
//! key per feature view), the durable registry state and the materialization watermarks, all
//! behind one [`RocksStore`].
//!
//! This crate is not a server and not a query engine: it depends on neither tonic nor
//! datafusion, resolves no definitions (callers pass [`quiver_core::ResolvedView`]s from the
//! registry state they hold in memory) and does not judge freshness (TTL is applied by the
//! reader with [`quiver_core::semantics::is_fresh`]).
//!
//! # Invariants
//!
//! - A stored row is replaced only by a row that is not older
//!   ([`quiver_core::semantics::write_wins`]), atomically per key under concurrent writers.
//! - A batch of `write_rows` is validated as a whole and written as one `WriteBatch`: all of
//!   it or nothing. A durable write returns only after the WAL is synced.
//! - Bytes read from disk are decoded with bounds checks: corruption is [`Error::Corrupt`],
//!   never a panic.
//! - A key of the wrong shape for its view is an `INVALID_ARGUMENT` error, never a miss.
//!
//! # Persisted formats
//!
//! Column families: `online`, `registry`, `meta`.
//!
//! - `online`: key = [`keys`] layout (format byte `0x01`, view *name* (not version) so rows
//!   survive compatible version bumps, then typed join key parts in canonical order); value
//!   = the row layout of `row_codec` (format byte `0x01`, writer view version, event and
//!   created times, then tagged values in the writer version's feature order):
//!
//!   ```text
//!   key   [0x01][u16 BE name len][name][per part: tag (1 int64, 2 int32, 3 string, 4 bytes),
//!         ints 8/4 bytes BE with the sign bit flipped, string/bytes u32 BE len + bytes]
//!   value [0x01][view_version u32 LE][event_ts i64 LE][created flag u8 (+ i64 LE)][u16 LE n]
//!         n x [tag (0 null, 1 bool, 2 int32, 3 int64, 4 float32, 5 float64, 6 string,
//!         7 bytes, 8 timestamp, 9 list)][payload: fixed LE widths; string/bytes u32 LE len +
//!         bytes; list u32 LE count + tagged scalar elements]
//!   ```
//!
//! - `registry`: `state/<registry version, 20 decimal digits>` -> the state as JSON; `head`
//!   -> the current version, same 20-digit text. Older states are kept.
//! - `meta`: `watermark/<view name>/<fingerprint>` and `newest/<view name>` (the newest event
//!   written online, merged by maximum) -> microseconds as i64, 8 bytes big-endian.
//!
//! A new layout gets a new format byte; readers refuse bytes they do not know.

pub mod keys;

mod error;
mod leases;
mod online;
mod online_store;
mod profiles;
mod reader;
mod registry_store;
mod row_cache;
mod row_codec;
mod stats;
mod store;
mod sync_group;
mod tags;
mod validate;

#[cfg(test)]
mod test_support;

pub use error::{Error, Result};
pub use online_store::{EncodedRow, INLINE_KEYS, blocking, encode_rows};
pub use row_cache::DEFAULT_ROW_CACHE_BYTES;
pub use row_codec::decode_row;
pub use stats::StoreStats;
pub use store::{DEFAULT_BLOCK_CACHE_BYTES, RocksStore, StoreOptions};
