//! Watermarks and leases in the cluster, so that replicas coordinate their jobs:
//!
//! - `quiver:watermark:<view>/<fingerprint>`: a view definition's materialization watermark,
//!   8 bytes little-endian, moved only by the Function `quiver_advance` (the fence).
//! - `quiver:lease:<name>`: a lease's holder, with the lease's time to live as the key's
//!   expiry (`quiver_lease`, `quiver_release`).
//! - `quiver:record:<name>`: a small record (a job's progress), expiring.
//!
//! Each key is one slot, so each call is atomic on its primary.

use std::time::Duration;

use quiver_core::ResolvedView;
use quiver_core::online_store::Lease;

use crate::RedisStore;
use crate::error::{Error, Result};

impl RedisStore {
    /// `GET key`.
    pub(crate) fn get_bytes(&self, key: &str, action: &'static str) -> Result<Option<Vec<u8>>> {
        self.with_connection(|connection| {
            redis::cmd("GET")
                .arg(key)
                .query(connection)
                .map_err(Error::redis(action))
        })
    }

    /// `GET key` of an i64 stored as 8 bytes little-endian.
    pub(crate) fn get_i64(&self, key: &str, action: &'static str) -> Result<Option<i64>> {
        self.get_bytes(key, action)?
            .map(|bytes| {
                <[u8; 8]>::try_from(bytes.as_slice())
                    .map(i64::from_le_bytes)
                    .map_err(|_| Error::Protocol(action))
            })
            .transpose()
    }

    pub(crate) fn read_watermark(&self, view: &ResolvedView) -> Result<Option<i64>> {
        self.get_i64(&watermark_key(view), "read a watermark")
    }

    pub(crate) fn advance(&self, view: &ResolvedView, start: i64, end: i64) -> Result<bool> {
        let key = watermark_key(view);
        let mut call = redis::cmd("FCALL");
        call.arg("quiver_advance")
            .arg(1)
            .arg(&key)
            .arg(&start.to_le_bytes()[..])
            .arg(&end.to_le_bytes()[..]);
        let moved: i64 = self.call_function(&call, key.as_bytes(), "move a watermark")?;
        Ok(moved == 1)
    }

    /// `FCALL function 1 quiver:lease:<name> holder [ttl in ms]`.
    fn lease_call<T: redis::FromRedisValue>(
        &self,
        (function, action): (&str, &'static str),
        name: &str,
        holder: &str,
        ttl: Option<Duration>,
    ) -> Result<T> {
        let key = lease_key(name);
        let mut call = redis::cmd("FCALL");
        call.arg(function).arg(1).arg(&key).arg(holder);
        if let Some(ttl) = ttl {
            call.arg(millis(ttl));
        }
        self.call_function(&call, key.as_bytes(), action)
    }

    pub(crate) fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Lease> {
        let now_held_by: String =
            self.lease_call(("quiver_lease", "take a lease"), name, holder, Some(ttl))?;
        Ok(if now_held_by == holder {
            Lease::Acquired
        } else {
            Lease::HeldBy(now_held_by)
        })
    }

    pub(crate) fn renew(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool> {
        let renewed: i64 =
            self.lease_call(("quiver_renew", "renew a lease"), name, holder, Some(ttl))?;
        Ok(renewed == 1)
    }

    pub(crate) fn release(&self, name: &str, holder: &str) -> Result<()> {
        let _released: i64 =
            self.lease_call(("quiver_release", "release a lease"), name, holder, None)?;
        Ok(())
    }
}

impl RedisStore {
    pub(crate) fn put(&self, name: &str, bytes: &[u8], ttl: Duration) -> Result<()> {
        let ttl_ms = millis(ttl);
        self.with_connection(|connection| {
            redis::cmd("SET")
                .arg(record_key(name))
                .arg(bytes)
                .arg("PX")
                .arg(ttl_ms)
                .exec(connection)
                .map_err(Error::redis("store a record"))
        })
    }

    pub(crate) fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        self.get_bytes(&record_key(name), "read a record")
    }
}

/// A time to live in whole milliseconds, at least 1.
fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn record_key(name: &str) -> String {
    format!("quiver:record:{name}")
}

fn watermark_key(view: &ResolvedView) -> String {
    format!("quiver:watermark:{}/{}", view.name, view.fingerprint)
}

fn lease_key(name: &str) -> String {
    format!("quiver:lease:{name}")
}
