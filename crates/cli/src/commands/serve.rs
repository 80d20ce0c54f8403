//! `quiver serve`: build options, init tracing, bind, serve until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use quiver_server::{ServerOptions, SystemClock};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::commands::file_roots::FileRootsArgs;
use crate::commands::serve_security::SecurityArgs;
use crate::config::{ConfigFile, DEFAULT_DATA_DIR, DEFAULT_GRPC_ADDR, DEFAULT_LOG, LogFormat};
use crate::telemetry::{self, TraceArgs};

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Data directory (RocksDB, push logs).
    #[arg(long, env = "QUIVER_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC listen address (also serves Arrow Flight); port 0 picks a free port.
    #[arg(long, env = "QUIVER_GRPC_ADDR")]
    grpc_addr: Option<SocketAddr>,
    /// Write the bound address to this file once listening (for scripts and tests); with
    /// --metrics-addr, its bound address follows on a second line.
    #[arg(long, env = "QUIVER_LISTENER_ADDR_FILE")]
    listener_addr_file: Option<PathBuf>,
    /// HTTP address serving Prometheus metrics (`/metrics`) and the probes `/healthz` and
    /// `/readyz`; off when not given. Carries no data, only counts by registry names.
    #[arg(long, env = "QUIVER_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// Seconds a shutdown (SIGTERM/SIGINT) waits for calls in flight before cutting them; a
    /// second signal exits at once. [default: 30]
    #[arg(long, env = "QUIVER_SHUTDOWN_GRACE", value_name = "SECONDS")]
    shutdown_grace: Option<u64>,
    /// Seconds between looks for due scheduled drift checks (`monitoring.schedule` in
    /// manifests). [default: 10]
    #[arg(long, env = "QUIVER_MONITORING_INTERVAL", value_name = "SECONDS")]
    monitoring_interval: Option<u64>,
    /// Seconds between push-log compactions (runs of 8 or more small push-log files merged
    /// into one, so reads stay fast after many small pushes); 0 never compacts. [default: 30]
    #[arg(
        long,
        env = "QUIVER_PUSH_LOG_COMPACTION_INTERVAL",
        value_name = "SECONDS"
    )]
    push_log_compaction_interval: Option<u64>,
    /// RocksDB block cache for online rows, in bytes or with a unit (`512MiB`, `2GiB`): the
    /// hot rows' blocks stay in memory, so reads of them need no disk. [default: 256MiB]
    #[arg(long, env = "QUIVER_ONLINE_BLOCK_CACHE_BYTES", value_name = "SIZE")]
    online_block_cache_bytes: Option<super::limits::ByteSetting>,
    /// Cache of decoded online rows in front of RocksDB, in bytes or with a unit; 0 turns it
    /// off. A hot key is then served without a RocksDB lookup or a decode; writes replace
    /// what it holds before they are acknowledged. [default: 128MiB]
    #[arg(long, env = "QUIVER_ONLINE_ROW_CACHE_BYTES", value_name = "SIZE")]
    online_row_cache_bytes: Option<super::limits::ByteSetting>,
    /// Where online rows live: `rocksdb` (the data directory, the default) or a Redis
    /// Cluster / Valkey shared by several replicas:
    /// `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT][?replicas=N&timeout_ms=MS]`,
    /// or `rediss+cluster://...` for TLS (`&ca_file=PEM`, and `&cert_file=PEM&key_file=PEM`
    /// for a client certificate). Give a password through the environment variable, not
    /// the command line.
    #[arg(
        long,
        env = "QUIVER_ONLINE_STORE",
        value_name = "URL",
        hide_env_values = true
    )]
    online_store: Option<String>,
    /// Where registry versions live: the data directory (the default) or object storage
    /// shared by several replicas: `s3://BUCKET/PREFIX`, `gs://...`, `az://...` (credentials
    /// as for sources) or `file:///DIR`. Versions are immutable objects; a replica serves a
    /// version another one applied within `--registry-poll-interval`.
    #[arg(long, env = "QUIVER_REGISTRY_STORE", value_name = "URL")]
    registry_store: Option<String>,
    /// Seconds between looks for registry versions applied by other replicas (with
    /// `--registry-store`). [default: 5]
    #[arg(long, env = "QUIVER_REGISTRY_POLL_INTERVAL", value_name = "SECONDS")]
    registry_poll_interval: Option<u64>,
    /// Where push logs live when replicas share them, instead of `<data-dir>/offline`: a
    /// directory every replica mounts (a network file system) or object storage
    /// (`s3://BUCKET/PREFIX`, `gs://...`, `az://...`; credentials as for sources). Each
    /// replica's files carry its `--replica-id` (keep it stable across restarts), and every
    /// replica's joins and exports read them all.
    #[arg(long, env = "QUIVER_PUSH_LOG_DIR", value_name = "DIR|URL")]
    push_log_dir: Option<String>,
    /// Where label tables uploaded with Flight DoPut are also stored, so that an export or a
    /// Flight ticket naming one works on every replica: a directory every replica mounts or
    /// object storage (`s3://BUCKET/PREFIX`, ...). Tables are served for --upload-ttl after
    /// they were stored, then deleted. [default: each server keeps its uploads in memory]
    #[arg(long, env = "QUIVER_UPLOAD_DIR", value_name = "DIR|URL")]
    upload_dir: Option<String>,
    /// This replica's name among the replicas sharing an online store or a push log (in
    /// lease holders, logs and push-log file names): 1 to 200 of `A-Z a-z 0-9 . _ -`.
    /// [default: <host name>-<process id>]
    #[arg(long, env = "QUIVER_REPLICA_ID")]
    replica_id: Option<String>,
    /// Seconds a replica's lease on a view's materialization outlives its last renewal
    /// (renewed at a third of it); another replica may take it over after. [default: 30]
    #[arg(long, env = "QUIVER_LEASE_TTL", value_name = "SECONDS")]
    lease_ttl: Option<u64>,
    /// Seconds before the watermark an incremental materialization starts reading, so that
    /// rows a shared online store lost (a Redis failover) are written again. [default: 0]
    #[arg(long, env = "QUIVER_MATERIALIZE_LOOKBACK", value_name = "SECONDS")]
    materialize_lookback: Option<u64>,
    /// URL a scheduled drift check that ends in ALERT is POSTed to as JSON (retried, never
    /// on a request path); off when not given.
    #[arg(long, env = "QUIVER_ALERT_WEBHOOK", value_name = "URL")]
    alert_webhook: Option<String>,
    /// Days stored profiles are kept; 0 keeps them all. Each view's and service's newest
    /// training-export profile and profiles a schedule names are always kept. [default: 90]
    #[arg(long, env = "QUIVER_PROFILE_RETENTION_DAYS", value_name = "DAYS")]
    profile_retention_days: Option<u64>,
    /// Do not profile materialization runs (nor count their expectation violations):
    /// profiling every scanned row costs run throughput (see benches/README.md).
    #[arg(long, env = "QUIVER_NO_RUN_PROFILES")]
    no_run_profiles: bool,
    /// YAML config file (see deploy/quiver.example.yaml).
    #[arg(long, env = "QUIVER_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `quiver_server=debug`.
    #[arg(long, env = "QUIVER_LOG")]
    log: Option<String>,
    /// Log format on standard error: `text` (default) or `json` (one object per line).
    #[arg(long, env = "QUIVER_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    #[command(flatten)]
    security: SecurityArgs,
    #[command(flatten)]
    files: FileRootsArgs,
    #[command(flatten)]
    limits: super::limits::LimitSettings,
    #[command(flatten)]
    served_log: super::serve_log::ServedLogSettings,
    #[command(flatten)]
    trace: TraceArgs,
}

pub(crate) async fn run(args: ServeArgs) -> Result<()> {
    let file = match &args.config {
        Some(path) => ConfigFile::load(path)?,
        None => ConfigFile::default(),
    };
    let telemetry = telemetry::init(
        args.log
            .as_deref()
            .or(file.log.as_deref())
            .unwrap_or(DEFAULT_LOG),
        args.log_format.or(file.log_format).unwrap_or_default(),
        &args.trace.clone().or(&file),
    )?;
    raise_open_file_limit();
    let data_dir = args
        .data_dir
        .or(file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let default_addr: SocketAddr = DEFAULT_GRPC_ADDR.parse().context("default address")?;
    let addr = args.grpc_addr.or(file.grpc_addr).unwrap_or(default_addr);
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let mut bound = listener.local_addr()?.to_string();
    let metrics_listener = match args.metrics_addr.or(file.metrics_addr) {
        Some(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-addr)"))?;
            bound.push_str(&format!("\n{}", listener.local_addr()?));
            Some(listener)
        }
        None => None,
    };
    if let Some(path) = &args.listener_addr_file {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &bound).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)?;
    }
    let shutdown = CancellationToken::new();
    let signal_token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received: draining (a second signal exits at once)");
        signal_token.cancel();
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting now, without waiting for calls in flight");
        std::process::exit(130);
    });
    let files = args.files.resolve(&file, &data_dir)?;
    let mut options = ServerOptions::new(data_dir, Arc::new(SystemClock), files);
    options.auth = args.security.auth()?;
    options.tls = args.security.tls();
    options.limits = args.limits.or(file.limits.unwrap_or_default()).limits();
    options.served_log = args.served_log.options(file.served_log)?;
    if let Some(seconds) = args.shutdown_grace.or(file.shutdown_grace) {
        options.shutdown_grace = std::time::Duration::from_secs(seconds);
    }
    if let Some(seconds) = args.monitoring_interval.or(file.monitoring_interval) {
        anyhow::ensure!(
            seconds > 0,
            "--monitoring-interval must be at least 1 second"
        );
        options.monitoring_interval = std::time::Duration::from_secs(seconds);
    }
    if let Some(seconds) = args
        .push_log_compaction_interval
        .or(file.push_log_compaction_interval)
    {
        options.push_log_compaction =
            (seconds > 0).then(|| std::time::Duration::from_secs(seconds));
    }
    if let Some(size) = args
        .online_block_cache_bytes
        .or(file.online_block_cache_bytes)
    {
        options.online_caches.block_cache_bytes = usize::try_from(size.0).unwrap_or(usize::MAX);
    }
    options.online_store = args.online_store.or(file.online_store);
    options.registry_store = args.registry_store.or(file.registry_store);
    if let Some(seconds) = args.registry_poll_interval.or(file.registry_poll_interval) {
        anyhow::ensure!(
            seconds > 0,
            "--registry-poll-interval must be at least 1 second"
        );
        options.registry_poll_interval = std::time::Duration::from_secs(seconds);
    }
    let replica_id = args.replica_id.or(file.replica_id.clone());
    if let Some(id) = &replica_id {
        anyhow::ensure!(
            quiver_offline::valid_replica(id),
            "--replica-id must be 1 to 200 of A-Z a-z 0-9 . _ -, got `{id}`"
        );
        options.replica.id = id.clone();
    }
    options.push_log_dir = args.push_log_dir.or(file.push_log_dir.clone());
    options.upload_dir = args.upload_dir.or(file.upload_dir.clone());
    anyhow::ensure!(
        options.push_log_dir.is_none() || replica_id.is_some(),
        "--push-log-dir needs --replica-id: a name that stays the same across restarts (such as a StatefulSet pod name), since a replica compacts only the files it named"
    );
    if let Some(seconds) = args.lease_ttl.or(file.lease_ttl) {
        anyhow::ensure!(
            (1..=86_400).contains(&seconds),
            "--lease-ttl must be 1 to 86400 seconds"
        );
        options.replica.lease_ttl = std::time::Duration::from_secs(seconds);
    }
    if let Some(seconds) = args.materialize_lookback.or(file.materialize_lookback) {
        options.replica.materialize_lookback = std::time::Duration::from_secs(seconds);
    }
    if let Some(size) = args.online_row_cache_bytes.or(file.online_row_cache_bytes) {
        options.online_caches.row_cache_bytes = usize::try_from(size.0).unwrap_or(usize::MAX);
    }
    options.alert_webhook = args.alert_webhook.or(file.alert_webhook);
    options.run_profiles = !args.no_run_profiles && file.run_profiles.unwrap_or(true);
    if let Some(days) = args.profile_retention_days.or(file.profile_retention_days) {
        options.profile_retention =
            (days > 0).then(|| std::time::Duration::from_secs(days.saturating_mul(86_400)));
    }
    if let Some(url) = &options.alert_webhook {
        anyhow::ensure!(
            url.starts_with("http://") || url.starts_with("https://"),
            "--alert-webhook `{url}` must be an http:// or https:// URL"
        );
    }
    options.rpc_spans = telemetry.exports_traces();
    let served = quiver_server::serve_with(listener, metrics_listener, shutdown, options).await;
    telemetry.shutdown().await;
    Ok(served?)
}

/// Raises the soft limit on open files to the hard one: RocksDB keeps its table files open
/// and a join spilled to disk reads up to 256 partition files per view at once, more than a
/// soft limit of 1024 allows with several exports.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open file limit"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open file limit"),
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
