//! `quiver serve`'s limit settings: one flag (and `QUIVER_*` variable, and key of the config
//! file's `limits:` section) per field of [`quiver_server::Limits`], named after it. Unset
//! settings keep the server's documented defaults.

use std::str::FromStr;
use std::time::Duration;

use quiver_server::Limits;
use serde::Deserialize;

/// A duration setting: `30s`, `10m`, `1h`, `1d12h`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DurationSetting(pub(crate) Duration);

impl FromStr for DurationSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        quiver_core::types::parse_duration(text)
            .and_then(|micros| u64::try_from(micros).ok())
            .map(|micros| DurationSetting(Duration::from_micros(micros)))
            .ok_or_else(|| format!("`{text}` is not a duration (e.g. 30s, 10m, 1h, 500ms)"))
    }
}

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A size setting: bytes (`1073741824`) or with a unit (`512MiB`, `1GiB`; `1GB` is 10^9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSetting(pub(crate) u64);

impl FromStr for ByteSetting {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<bytesize::ByteSize>()
            .map(|size| ByteSetting(size.as_u64()))
            .map_err(|_| format!("`{text}` is not a size (e.g. 1073741824, 512MiB, 1GiB)"))
    }
}

impl<'de> Deserialize<'de> for ByteSetting {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A config file may give a number of bytes or a size with a unit.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Given {
            Bytes(u64),
            Text(String),
        }
        match Given::deserialize(deserializer)? {
            Given::Bytes(bytes) => Ok(ByteSetting(bytes)),
            Given::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

fn bytes(value: ByteSetting) -> u64 {
    value.0
}

/// Declares the settings once: the clap/serde struct, the merge, and the mapping to `Limits`.
macro_rules! limit_settings {
    ($($(#[doc = $doc:literal])* $field:ident: $type:ty => $env:literal, $to:expr;)*) => {
        /// Limits of `quiver serve` (defaults in README, "Limits").
        #[derive(Debug, Default, Clone, clap::Args, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(crate) struct LimitSettings {
            $(
                $(#[doc = $doc])*
                #[arg(long, env = $env, help_heading = "Limits")]
                #[serde(default)]
                pub(crate) $field: Option<$type>,
            )*
        }

        impl LimitSettings {
            /// These settings over `lower` (flags and env over the config file).
            pub(crate) fn or(self, lower: LimitSettings) -> LimitSettings {
                LimitSettings { $($field: self.$field.or(lower.$field),)* }
            }

            /// The server's limits: these settings over the defaults.
            pub(crate) fn limits(&self) -> Limits {
                let mut limits = Limits::default();
                $(
                    if let Some(value) = self.$field {
                        limits.$field = ($to)(value);
                    }
                )*
                limits
            }
        }
    };
}

fn same<T>(value: T) -> T {
    value
}

fn duration(value: DurationSetting) -> Duration {
    value.0
}

limit_settings! {
    /// Largest message of the data services (online, Flight), in bytes [default: 256 MiB].
    max_message_bytes: ByteSetting => "QUIVER_MAX_MESSAGE_BYTES", bytes;
    /// Largest message of the registry, job and offline services, in bytes [default: 4 MiB].
    max_control_message_bytes: ByteSetting => "QUIVER_MAX_CONTROL_MESSAGE_BYTES", bytes;
    /// Most rows in one Push [default: 1000000].
    max_push_rows: u64 => "QUIVER_MAX_PUSH_ROWS", same;
    /// Largest Push request, in bytes [default: 64 MiB].
    max_push_bytes: ByteSetting => "QUIVER_MAX_PUSH_BYTES", bytes;
    /// Most entity rows in one GetOnlineFeatures [default: 100000].
    max_online_entities: u64 => "QUIVER_MAX_ONLINE_ENTITIES", same;
    /// Largest GetOnlineFeatures request, in bytes [default: 16 MiB].
    max_online_request_bytes: ByteSetting => "QUIVER_MAX_ONLINE_REQUEST_BYTES", bytes;
    /// Largest label table uploaded with one DoPut, in bytes [default: 256 MiB].
    max_upload_bytes: ByteSetting => "QUIVER_MAX_UPLOAD_BYTES", bytes;
    /// Most rows in one uploaded label table [default: 10000000].
    max_upload_rows: u64 => "QUIVER_MAX_UPLOAD_ROWS", same;
    /// Total bytes of the label tables kept at once [default: 1 GiB].
    max_uploads_total_bytes: ByteSetting => "QUIVER_MAX_UPLOADS_TOTAL_BYTES", bytes;
    /// Most label tables kept at once [default: 32].
    max_uploads: u64 => "QUIVER_MAX_UPLOADS", same;
    /// How long an uploaded label table is kept [default: 1h].
    upload_ttl: DurationSetting => "QUIVER_UPLOAD_TTL", duration;
    /// Most Flight tickets waiting for their DoGet [default: 16].
    max_flight_tickets: u64 => "QUIVER_MAX_FLIGHT_TICKETS", same;
    /// How long a Flight ticket stays valid [default: 10m].
    flight_ticket_ttl: DurationSetting => "QUIVER_FLIGHT_TICKET_TTL", duration;
    /// Most materialization jobs running at once [default: 4].
    max_concurrent_jobs: u64 => "QUIVER_MAX_CONCURRENT_JOBS", same;
    /// Most logged rows a skew report compares without `--sample` [default: 1000000].
    max_skew_rows: u64 => "QUIVER_MAX_SKEW_ROWS", same;
    /// Most logged rows one export from the served-row log reads [default: 10000000].
    max_log_export_rows: u64 => "QUIVER_MAX_LOG_EXPORT_ROWS", same;
    /// Memory the point-in-time joins of all exports hold at once; a join over it spills to
    /// disk [default: half of the machine's memory].
    offline_memory_limit: ByteSetting => "QUIVER_OFFLINE_MEMORY_LIMIT", bytes;
    /// Disk the spill files of all exports too large for the memory limit take at once
    /// (under the data directory) [default: 100 GiB].
    max_spill_bytes: ByteSetting => "QUIVER_MAX_SPILL_BYTES", bytes;
    /// Most concurrent HTTP/2 streams per connection [default: 256].
    max_concurrent_streams: u32 => "QUIVER_MAX_CONCURRENT_STREAMS", same;
    /// Longest a request may run before DEADLINE_EXCEEDED [default: 10m].
    request_timeout: DurationSetting => "QUIVER_REQUEST_TIMEOUT", duration;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_unset_settings_keep_defaults() {
        let flags = LimitSettings {
            max_push_rows: Some(10),
            ..Default::default()
        };
        let file: LimitSettings =
            serde_norway::from_str("max_push_rows: 20\nupload_ttl: 90s\n").unwrap_or_default();
        let limits = flags.or(file).limits();
        assert_eq!(limits.max_push_rows, 10);
        assert_eq!(limits.upload_ttl, Duration::from_secs(90));
        assert_eq!(limits.max_uploads, Limits::default().max_uploads);
    }

    #[test]
    fn sizes_take_units_in_flags_and_the_file() {
        assert_eq!("1GiB".parse(), Ok(ByteSetting(1 << 30)));
        assert_eq!("512MiB".parse(), Ok(ByteSetting(512 << 20)));
        assert_eq!("1GB".parse(), Ok(ByteSetting(1_000_000_000)));
        assert_eq!("4096".parse(), Ok(ByteSetting(4096)));
        let error = "lots".parse::<ByteSetting>().expect_err("not a size");
        assert!(error.contains("512MiB"), "{error}");
        let file: LimitSettings =
            serde_norway::from_str("offline_memory_limit: 2GiB\nmax_push_bytes: 1024\n")
                .expect("sizes");
        let limits = file.limits();
        assert_eq!(limits.offline_memory_limit, 2 << 30);
        assert_eq!(limits.max_push_bytes, 1024);
        assert!(serde_norway::from_str::<LimitSettings>("max_push_bytes: lots\n").is_err());
    }

    #[test]
    fn durations_are_checked() {
        assert_eq!(
            "10m".parse::<DurationSetting>(),
            Ok(DurationSetting(Duration::from_secs(600)))
        );
        assert!("ten minutes".parse::<DurationSetting>().is_err());
        assert!(serde_norway::from_str::<LimitSettings>("max_push_rowz: 1").is_err());
    }
}
