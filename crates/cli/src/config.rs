//! Server configuration. Precedence, highest first: command-line flag, environment variable
//! (`QUIVER_*`), config file (`--config`, YAML), built-in default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

pub(crate) const DEFAULT_DATA_DIR: &str = "./quiver-data";
pub(crate) const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
pub(crate) const DEFAULT_LOG: &str = "info";

/// How `quiver serve` writes its log to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, the event's fields
    /// flattened, and the enclosing spans (`span`, `spans`) with their fields.
    Json,
}

/// The config file: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfigFile {
    /// Format version of this file; only 1 exists.
    #[serde(default)]
    pub version: Option<u32>,
    pub data_dir: Option<PathBuf>,
    pub grpc_addr: Option<SocketAddr>,
    pub log: Option<String>,
    /// `text` (default) or `json` (`--log-format`).
    pub log_format: Option<LogFormat>,
    /// HTTP address of `/metrics`, `/healthz` and `/readyz` (`--metrics-addr`).
    pub metrics_addr: Option<SocketAddr>,
    /// OTLP/gRPC endpoint for a span per RPC (`--otlp-endpoint`, builds with `otel`).
    pub otlp_endpoint: Option<String>,
    /// Fraction of traces starting here that are sampled (`--otlp-sample-ratio`).
    pub otlp_sample_ratio: Option<f64>,
    /// Seconds a shutdown waits for calls in flight (`--shutdown-grace`).
    pub shutdown_grace: Option<u64>,
    /// Seconds between looks for due scheduled drift checks (`--monitoring-interval`).
    pub monitoring_interval: Option<u64>,
    /// Seconds between push-log compactions, 0 for never (`--push-log-compaction-interval`).
    pub push_log_compaction_interval: Option<u64>,
    /// RocksDB block cache for online rows (`--online-block-cache-bytes`).
    pub online_block_cache_bytes: Option<crate::commands::limits::ByteSetting>,
    /// Cache of decoded online rows, 0 for none (`--online-row-cache-bytes`).
    pub online_row_cache_bytes: Option<crate::commands::limits::ByteSetting>,
    /// Where online rows live (`--online-store`): `rocksdb` or a `redis+cluster://` URL.
    pub online_store: Option<String>,
    /// Where registry versions live (`--registry-store`).
    pub registry_store: Option<String>,
    /// Seconds between looks for versions applied elsewhere (`--registry-poll-interval`).
    pub registry_poll_interval: Option<u64>,
    /// Where uploaded label tables are shared by replicas (`--upload-dir`).
    pub upload_dir: Option<String>,
    /// A push-log directory shared by replicas (`--push-log-dir`).
    pub push_log_dir: Option<String>,
    /// This replica's name among those sharing an online store (`--replica-id`).
    pub replica_id: Option<String>,
    /// Seconds a materialization lease outlives its last renewal (`--lease-ttl`).
    pub lease_ttl: Option<u64>,
    /// Seconds before the watermark incremental runs start reading (`--materialize-lookback`).
    pub materialize_lookback: Option<u64>,
    /// URL scheduled drift ALERTs are POSTed to (`--alert-webhook`).
    pub alert_webhook: Option<String>,
    /// Days stored profiles are kept, 0 for ever (`--profile-retention-days`).
    pub profile_retention_days: Option<u64>,
    /// false: materialization runs are not profiled (`--no-run-profiles`).
    pub run_profiles: Option<bool>,
    /// Where server-side exports are written (`--export-dir`).
    pub export_dir: Option<PathBuf>,
    /// Where label tables may be read by path (`--labels-root`).
    pub labels_roots: Option<Vec<PathBuf>>,
    /// Where manifest `parquet:` sources must lie (`--source-root`).
    pub source_roots: Option<Vec<PathBuf>>,
    /// Object storage client options (`--object-store-option`), for example
    /// `{aws_endpoint: "http://127.0.0.1:9000", aws_allow_http: "true"}`.
    pub object_store_options: Option<std::collections::BTreeMap<String, String>>,
    /// Limit settings, keyed like their flags (`max_push_rows: 1000000`).
    pub limits: Option<crate::commands::limits::LimitSettings>,
    /// Served-row log settings (`served_log: {sample_rate: 0.01, retention_days: 30}`).
    pub served_log: Option<crate::commands::serve_log::ServedLogSettings>,
}

impl ConfigFile {
    pub(crate) fn load(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let config: ConfigFile = serde_norway::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        if let Some(version) = config.version
            && version != 1
        {
            anyhow::bail!(
                "config file {}: `version: {version}` is unknown; use `version: 1`",
                path.display()
            );
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/quiver.example.yaml");
        let config = ConfigFile::load(&path).expect("example config loads");
        assert_eq!(config.grpc_addr.map(|a| a.port()), Some(50051));
        assert!(config.data_dir.is_some());
        assert!(config.export_dir.is_some());
        assert_eq!(config.labels_roots.map(|r| r.len()), Some(1));
        assert_eq!(config.source_roots.map(|r| r.len()), Some(1));
        assert_eq!(
            config.online_block_cache_bytes.map(|b| b.0),
            Some(256 << 20)
        );
        assert_eq!(config.online_row_cache_bytes.map(|b| b.0), Some(128 << 20));
    }

    #[test]
    fn object_store_options_are_a_map() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        let text = "source_roots: [s3://bucket/features]\nobject_store_options: {aws_region: eu-west-1, aws_allow_http: \"true\"}\n";
        std::fs::write(&path, text).expect("write");
        let config = ConfigFile::load(&path).expect("loads");
        let options = config.object_store_options.expect("options");
        assert_eq!(
            options.get("aws_region").map(String::as_str),
            Some("eu-west-1")
        );
        assert_eq!(options.len(), 2);
        let roots = config.source_roots.expect("roots");
        assert_eq!(roots, [PathBuf::from("s3://bucket/features")]);
    }

    #[test]
    fn unknown_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "data_dir: x\ngrpc_port: 1\n").expect("write");
        let error = ConfigFile::load(&path).expect_err("unknown key");
        assert!(format!("{error:#}").contains("grpc_port"), "{error:#}");
    }
}
