//! `quiver serve`'s served-row log settings: a flag (`--served-log-*`), a `QUIVER_SERVED_LOG_*`
//! variable and a key of the config file's `served_log:` section each. A feature service's
//! `logging: {sample_rate}` overrides the default rate.

use anyhow::{Result, ensure};
use quiver_server::ServedLogOptions;
use serde::Deserialize;

use super::limits::DurationSetting;

#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServedLogSettings {
    /// Fraction of entity keys logged for services without a `logging:` block [default: 0].
    #[arg(
        long = "served-log-sample-rate",
        env = "QUIVER_SERVED_LOG_SAMPLE_RATE",
        help_heading = "Served-row log"
    )]
    #[serde(default)]
    sample_rate: Option<f64>,
    /// Most bytes logged per second; more rows are dropped and counted; 0: no bound [default: 16 MiB].
    #[arg(
        long = "served-log-max-bytes-per-second",
        env = "QUIVER_SERVED_LOG_MAX_BYTES_PER_SECOND",
        help_heading = "Served-row log"
    )]
    #[serde(default)]
    max_bytes_per_second: Option<u64>,
    /// Most sampled rows waiting for the writer; more are dropped and counted [default: 100000].
    #[arg(
        long = "served-log-queue-rows",
        env = "QUIVER_SERVED_LOG_QUEUE_ROWS",
        help_heading = "Served-row log"
    )]
    #[serde(default)]
    queue_rows: Option<u64>,
    /// A log file is rotated (fsynced, made visible) at this size [default: 64 MiB].
    #[arg(
        long = "served-log-rotate-bytes",
        env = "QUIVER_SERVED_LOG_ROTATE_BYTES",
        help_heading = "Served-row log"
    )]
    #[serde(default)]
    rotate_bytes: Option<u64>,
    /// ... or at this age; a crash loses at most this much of the log [default: 5m].
    #[arg(
        long = "served-log-rotate-interval",
        env = "QUIVER_SERVED_LOG_ROTATE_INTERVAL",
        help_heading = "Served-row log"
    )]
    #[serde(default)]
    rotate_interval: Option<DurationSetting>,
    /// Days of log kept (whole UTC days); 0 keeps everything [default: 30].
    #[arg(
        long = "served-log-retention-days",
        env = "QUIVER_SERVED_LOG_RETENTION_DAYS",
        help_heading = "Served-row log"
    )]
    #[serde(default)]
    retention_days: Option<u64>,
}

impl ServedLogSettings {
    /// These settings (flags and env) over `lower` (the config file) over the defaults.
    pub(crate) fn options(self, lower: Option<ServedLogSettings>) -> Result<ServedLogOptions> {
        let lower = lower.unwrap_or_default();
        let mut options = ServedLogOptions::default();
        if let Some(rate) = self.sample_rate.or(lower.sample_rate) {
            ensure!(
                (0.0..=1.0).contains(&rate),
                "--served-log-sample-rate {rate}: give a fraction from 0.0 to 1.0"
            );
            options.default_sample_rate = rate;
        }
        if let Some(bytes) = self.max_bytes_per_second.or(lower.max_bytes_per_second) {
            options.max_bytes_per_second = bytes;
        }
        if let Some(rows) = self.queue_rows.or(lower.queue_rows) {
            options.queue_rows = rows;
        }
        if let Some(bytes) = self.rotate_bytes.or(lower.rotate_bytes) {
            options.rotate_bytes = bytes;
        }
        if let Some(interval) = self.rotate_interval.or(lower.rotate_interval) {
            ensure!(
                !interval.0.is_zero(),
                "--served-log-rotate-interval must be longer than 0"
            );
            options.rotate_interval = interval.0;
        }
        if let Some(days) = self.retention_days.or(lower.retention_days) {
            options.retention =
                (days > 0).then(|| std::time::Duration::from_secs(days.saturating_mul(86_400)));
        }
        Ok(options)
    }
}
