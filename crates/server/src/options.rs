//! What the library server is given: its options and where "now" comes from.

use std::path::PathBuf;
use std::sync::Arc;

use quiver_core::types::Micros;
use quiver_offline::Roots;

use crate::auth::AuthOptions;
use crate::error::{Error, Result};
use crate::tls::TlsOptions;

pub use crate::limits::Limits;

/// Where "now" comes from. Tests inject a fixed clock to check the consistency invariant.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Micros;
}

#[derive(Debug)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Micros {
        chrono::Utc::now().timestamp_micros()
    }
}

/// Options of the library server (the CLI builds them from flags, env and config file).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub clock: Arc<dyn Clock>,
    /// The only directories requests may read or write files in.
    pub files: FileRoots,
    /// Who may call (off by default: then only a loopback address may be served).
    pub auth: AuthOptions,
    /// TLS on the gRPC port (off by default).
    pub tls: Option<TlsOptions>,
    /// Bounds on requests, uploads, parked exports and jobs.
    pub limits: Limits,
    /// How long a shutdown waits for calls in flight before cutting them.
    pub shutdown_grace: std::time::Duration,
    /// A tracing span per RPC (target `quiver::rpc`; off by default, it costs throughput),
    /// which joins the caller's trace and is exported over OTLP in builds with `otel`.
    pub rpc_spans: bool,
    /// How often the server looks for due scheduled drift checks (`monitoring.schedule`).
    pub monitoring_interval: std::time::Duration,
    /// Where a scheduled drift check that ends in ALERT is POSTed as JSON (none: no POST).
    pub alert_webhook: Option<String>,
    /// How long stored profiles are kept (None: forever); see `monitor::retention` for the
    /// ones drift checks still need, which stay.
    pub profile_retention: Option<std::time::Duration>,
    /// Whether each materialization run stores a profile of the rows it scanned, with their
    /// expectation violations (on by default; it costs run throughput, see benches/README.md).
    pub run_profiles: bool,
    /// Served-row logging: the default sample rate, the bounds and the rotation.
    pub served_log: crate::served_log::ServedLogOptions,
    /// How often push logs are compacted (runs of small files merged); None: never.
    pub push_log_compaction: Option<std::time::Duration>,
    /// The online store's caches: RocksDB's block cache (`--online-block-cache-bytes`) and
    /// the decoded rows (`--online-row-cache-bytes`).
    pub online_caches: quiver_online::StoreOptions,
    /// Where online rows live (`--online-store`): `None` for RocksDB in the data directory,
    /// or a `redis+cluster://` URL (crate `quiver-redis`).
    pub online_store: Option<String>,
    /// Where registry versions live (`--registry-store`): `None` for the data directory, or
    /// an object-store URL (`s3://bucket/prefix`, `gs://`, `az://`, `file:///dir`) shared
    /// by several replicas, polled every `registry_poll_interval`.
    pub registry_store: Option<String>,
    pub registry_poll_interval: std::time::Duration,
    /// Where push logs live (`--push-log-dir`): `None` for `<data_dir>/offline`, or a
    /// directory every replica mounts (a network file system) or an object-storage prefix
    /// (`s3://bucket/prefix`, `gs://`, `az://`): the replicas' files are then named by
    /// `replica.id`, and every replica's joins read them all.
    pub push_log_dir: Option<String>,
    /// Where label tables uploaded with DoPut are also stored (`--upload-dir`), so any
    /// replica sharing it finds them: a directory every replica mounts, or an
    /// object-storage prefix. `None`: each server keeps its uploads in memory only.
    pub upload_dir: Option<String>,
    /// This replica among those sharing the stores: its name, and how it holds jobs.
    pub replica: ReplicaOptions,
}

/// The default of [`ServerOptions::monitoring_interval`].
pub const DEFAULT_MONITORING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// The default of [`ServerOptions::profile_retention`]: 90 days.
pub const DEFAULT_PROFILE_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// The default of [`ServerOptions::push_log_compaction`].
pub const DEFAULT_PUSH_LOG_COMPACTION: std::time::Duration = std::time::Duration::from_secs(30);

/// The default of [`ServerOptions::shutdown_grace`].
pub const DEFAULT_SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

impl ServerOptions {
    /// Options with auth and TLS off and the default limits, on `data_dir`, with the given file roots.
    pub fn new(data_dir: PathBuf, clock: Arc<dyn Clock>, files: FileRoots) -> Self {
        ServerOptions {
            data_dir,
            clock,
            files,
            auth: AuthOptions::default(),
            tls: None,
            limits: Limits::default(),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            rpc_spans: false,
            monitoring_interval: DEFAULT_MONITORING_INTERVAL,
            alert_webhook: None,
            profile_retention: Some(DEFAULT_PROFILE_RETENTION),
            run_profiles: true,
            served_log: crate::served_log::ServedLogOptions::default(),
            push_log_compaction: Some(DEFAULT_PUSH_LOG_COMPACTION),
            online_caches: quiver_online::StoreOptions::default(),
            online_store: None,
            registry_store: None,
            registry_poll_interval: std::time::Duration::from_secs(5),
            push_log_dir: None,
            upload_dir: None,
            replica: ReplicaOptions::default(),
        }
    }
}

/// How a replica shares jobs with the others on the same online store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaOptions {
    /// The replica's name in lease holders and logs (`--replica-id`).
    pub id: String,
    /// How long a lease on a view's materialization outlives its holder's last renewal
    /// (`--lease-ttl`); holders renew at a third of it.
    pub lease_ttl: std::time::Duration,
    /// How far before the watermark an incremental materialization starts reading
    /// (`--materialize-lookback`): rows a store lost in a failover are written again.
    pub materialize_lookback: std::time::Duration,
}

/// The default of [`ReplicaOptions::lease_ttl`].
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Default for ReplicaOptions {
    fn default() -> Self {
        ReplicaOptions {
            id: default_replica_id(),
            lease_ttl: DEFAULT_LEASE_TTL,
            materialize_lookback: std::time::Duration::ZERO,
        }
    }
}

/// `<host name>-<process id>`: the pod's name under Kubernetes.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "quiver".to_string());
    format!("{host}-{}", std::process::id())
}

/// The directories requests may name files in (see ARCHITECTURE.md, "Files the server
/// touches"): nothing outside them is read or written for a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRoots {
    /// Where server-side exports are written, named relative to it; created at start.
    pub export_dir: PathBuf,
    /// Where label tables named by path (`labels_path`) may be read; none = uploads only.
    pub labels_roots: Vec<PathBuf>,
    /// Where manifest `parquet:` sources must lie, checked at plan/apply and at every read.
    pub source_roots: Vec<PathBuf>,
    /// Options of the object storage clients (`aws_endpoint`, `aws_region`, ...), applied
    /// after the environment; used by roots that are URLs (`s3://bucket/prefix`).
    pub object_store_options: Vec<(String, String)>,
}

impl FileRoots {
    /// The defaults: exports in `<data_dir>/exports`, no labels root, and `working_dir` (the
    /// server's working directory, where the README's tour keeps its data) as source root.
    pub fn defaults(data_dir: &std::path::Path, working_dir: PathBuf) -> FileRoots {
        FileRoots {
            export_dir: data_dir.join("exports"),
            labels_roots: Vec::new(),
            source_roots: vec![working_dir],
            object_store_options: Vec::new(),
        }
    }
}

/// The opened [`FileRoots`]: each directory made absolute and canonical.
#[derive(Debug, Clone)]
pub(crate) struct OpenedRoots {
    pub(crate) exports: Roots,
    pub(crate) labels: Roots,
    pub(crate) sources: Roots,
}

impl FileRoots {
    /// Creates the export directory and opens every root; a root that does not exist stops
    /// the server with a message naming its option. Roots in object storage are not
    /// contacted: a missing bucket or refused credentials show in the requests that use them.
    pub(crate) fn open(&self) -> Result<OpenedRoots> {
        let stores = quiver_offline::ObjectStores::new(self.object_store_options.clone());
        let remote_exports = self.export_dir.to_str().is_some_and(|d| d.contains("://"));
        if !remote_exports {
            std::fs::create_dir_all(&self.export_dir).map_err(|e| {
                Error::FailedPrecondition(format!(
                    "cannot create the export directory {} (--export-dir): {e}",
                    self.export_dir.display()
                ))
            })?;
        }
        let open = |what: &'static str, flag: &'static str, dirs: &[PathBuf]| {
            Roots::open(what, flag, dirs, &stores).map_err(|e| {
                Error::FailedPrecondition(format!("{flag}: {e}; give existing directories"))
            })
        };
        Ok(OpenedRoots {
            exports: open(
                "the export directory",
                "--export-dir",
                std::slice::from_ref(&self.export_dir),
            )?,
            labels: open("a labels root", "--labels-root", &self.labels_roots)?,
            sources: open("a source root", "--source-root", &self.source_roots)?,
        })
    }
}
