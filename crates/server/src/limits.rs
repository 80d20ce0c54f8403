//! The server's limits: every request, upload, parked export and job is bounded by a setting
//! with a documented default. Each field is named after its setting (`max_push_rows` is
//! `--max-push-rows`, `QUIVER_MAX_PUSH_ROWS` and the config key `limits.max_push_rows`); a
//! request over a limit is `RESOURCE_EXHAUSTED` with a message naming the limit and the flag
//! that raises it ([`Error::ResourceExhausted`]).

use std::time::Duration;

use crate::error::{Error, Result};

const MIB: u64 = 1024 * 1024;

/// Limits of one server. `Default` gives the documented defaults (README, "Limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest gRPC message of the data services (OnlineService, Arrow Flight), in bytes.
    pub max_message_bytes: u64,
    /// Largest gRPC message of the control services (registry, jobs, offline), in bytes.
    pub max_control_message_bytes: u64,
    /// Most rows in one Push.
    pub max_push_rows: u64,
    /// Largest Push request (encoded), in bytes.
    pub max_push_bytes: u64,
    /// Most entity rows in one GetOnlineFeatures.
    pub max_online_entities: u64,
    /// Largest GetOnlineFeatures request (encoded), in bytes.
    pub max_online_request_bytes: u64,
    /// Largest label table uploaded with one DoPut, in bytes of Arrow IPC data.
    pub max_upload_bytes: u64,
    /// Most rows in one uploaded label table.
    pub max_upload_rows: u64,
    /// Total bytes of the label tables kept at once (uploads in progress included).
    pub max_uploads_total_bytes: u64,
    /// Most label tables kept at once.
    pub max_uploads: u64,
    /// How long an uploaded label table is kept.
    pub upload_ttl: Duration,
    /// Most prepared Flight exports (tickets) waiting for their DoGet.
    pub max_flight_tickets: u64,
    /// How long a Flight ticket stays valid.
    pub flight_ticket_ttl: Duration,
    /// Most materialization jobs running at once (and one per view at a time, always).
    pub max_concurrent_jobs: u64,
    /// Most logged rows one skew report compares without a `sample`.
    pub max_skew_rows: u64,
    /// Most logged rows one export from the served-row log reads.
    pub max_log_export_rows: u64,
    /// Bytes the point-in-time joins of all exports hold at once (their views' rows).
    pub offline_memory_limit: u64,
    /// Bytes the spill files of all joins too large for `offline_memory_limit` take at once.
    pub max_spill_bytes: u64,
    /// Most concurrent HTTP/2 streams (RPCs) per connection.
    pub max_concurrent_streams: u32,
    /// Longest a request handler may run before it is stopped (`DEADLINE_EXCEEDED`); streamed
    /// responses (DoGet, WatchJob) are bounded while they start, not while they stream.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 256 * MIB,
            max_control_message_bytes: 4 * MIB,
            max_push_rows: 1_000_000,
            max_push_bytes: 64 * MIB,
            max_online_entities: 100_000,
            max_online_request_bytes: 16 * MIB,
            max_upload_bytes: 256 * MIB,
            max_upload_rows: 10_000_000,
            max_uploads_total_bytes: 1024 * MIB,
            max_uploads: 32,
            upload_ttl: Duration::from_secs(3600),
            max_flight_tickets: 16,
            flight_ticket_ttl: Duration::from_secs(600),
            max_concurrent_jobs: 4,
            max_skew_rows: 1_000_000,
            max_log_export_rows: 10_000_000,
            offline_memory_limit: half_of_memory(),
            max_spill_bytes: 100 * 1024 * MIB,
            max_concurrent_streams: 256,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// `Err(ResourceExhausted)` when `actual > limit`: `what` describes the request ("push"),
/// `unit` what is counted ("rows"), `setting` the flag that raises the limit.
pub(crate) fn check(
    what: &str,
    actual: u64,
    unit: &str,
    limit: u64,
    setting: &'static str,
) -> Result<()> {
    if actual > limit {
        return Err(Error::ResourceExhausted {
            what: format!("{what} has {actual} {unit}"),
            limit: format!("{limit} {unit}"),
            setting,
        });
    }
    Ok(())
}

/// Half of this machine's memory (`MemTotal` of `/proc/meminfo`), or 4 GiB where that
/// cannot be read: the default offline memory limit.
fn half_of_memory() -> u64 {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        });
    total_kib.map_or(4096 * MIB, |kib| kib * 1024 / 2)
}

/// A `u64` setting as a `usize` (saturating on 32-bit targets).
pub(crate) fn as_usize(value: u64) -> usize {
    usize::try_from(value).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_limit_and_the_setting() {
        assert!(check("push", 10, "rows", 10, "--max-push-rows").is_ok());
        let error = check("push", 11, "rows", 10, "--max-push-rows").err();
        let message = error.map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            message,
            "push has 11 rows; the limit is 10 rows (--max-push-rows)"
        );
    }
}
