//! The in-process test harness: a real Quiver server on `127.0.0.1:0` with a temporary data
//! directory, real gRPC clients, and helpers to write Parquet and manifests.

pub mod certs;
pub mod moto;
pub mod redis_cluster;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;
use quiver_proto::v1;
use quiver_server::{Clock, FileRoots, ServerOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig};

/// A clock tests set by hand (the consistency invariant is checked at a chosen `now`).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now: i64) -> Arc<Self> {
        Arc::new(ManualClock(AtomicI64::new(now)))
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[derive(Debug)]
pub struct TestServer {
    pub url: String,
    /// `http://127.0.0.1:PORT` of `/metrics`, `/healthz` and `/readyz`.
    pub http_url: String,
    pub dir: tempfile::TempDir,
    pub clock: Arc<ManualClock>,
    token: CancellationToken,
    handle: JoinHandle<quiver_server::Result<()>>,
}

/// Adds a bearer token to every call (when there is one).
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthChannel = InterceptedService<Channel, Bearer>;

#[derive(Debug, Clone)]
pub struct Clients {
    pub registry: v1::registry_service_client::RegistryServiceClient<AuthChannel>,
    pub online: v1::online_service_client::OnlineServiceClient<AuthChannel>,
    pub jobs: v1::job_service_client::JobServiceClient<AuthChannel>,
    pub offline: v1::offline_service_client::OfflineServiceClient<AuthChannel>,
    pub monitoring: v1::monitoring_service_client::MonitoringServiceClient<AuthChannel>,
    pub channel: AuthChannel,
    /// The channel without credentials (for raw calls and clients generic over `Channel`).
    pub plain: Channel,
}

impl Clients {
    fn new(channel: Channel, token: Option<&str>) -> Result<Clients> {
        let bearer = Bearer(token.map(|t| format!("Bearer {t}").parse()).transpose()?);
        let plain = channel.clone();
        let channel = InterceptedService::new(channel, bearer);
        let limit = 256 * 1024 * 1024;
        Ok(Clients {
            registry: v1::registry_service_client::RegistryServiceClient::new(channel.clone()),
            online: v1::online_service_client::OnlineServiceClient::new(channel.clone())
                .max_decoding_message_size(limit),
            jobs: v1::job_service_client::JobServiceClient::new(channel.clone()),
            offline: v1::offline_service_client::OfflineServiceClient::new(channel.clone()),
            monitoring: v1::monitoring_service_client::MonitoringServiceClient::new(
                channel.clone(),
            ),
            channel,
            plain,
        })
    }
}

impl TestServer {
    pub async fn start() -> Result<TestServer> {
        Self::start_in(
            tempfile::tempdir()?,
            ManualClock::new(chrono::Utc::now().timestamp_micros()),
        )
        .await
    }

    /// Starts a server with the given limits.
    pub async fn start_limited(limits: quiver_server::Limits) -> Result<TestServer> {
        Self::start_with(
            tempfile::tempdir()?,
            ManualClock::new(chrono::Utc::now().timestamp_micros()),
            |o| o.limits = limits,
        )
        .await
    }

    /// Starts a server on an existing directory (restart tests) with a given clock. The
    /// directory is its one labels and source root; exports go to `data/exports`.
    pub async fn start_in(dir: tempfile::TempDir, clock: Arc<ManualClock>) -> Result<TestServer> {
        Self::start_with(dir, clock, |_| {}).await
    }

    /// Starts a server on `dir` (data directory `dir/data`; `dir` its one labels and source
    /// root) with options changed by `configure` (file roots, auth, TLS, ...). With TLS the
    /// URL is `https://localhost:PORT`.
    pub async fn start_with(
        dir: tempfile::TempDir,
        clock: Arc<ManualClock>,
        configure: impl FnOnce(&mut ServerOptions),
    ) -> Result<TestServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let http_url = format!("http://{}", http_listener.local_addr()?);
        let token = CancellationToken::new();
        let root = dir.path().to_path_buf();
        let files = FileRoots {
            labels_roots: vec![root.clone()],
            ..FileRoots::defaults(&root.join("data"), root.clone())
        };
        let mut options = ServerOptions::new(
            root.join("data"),
            Arc::clone(&clock) as Arc<dyn Clock>,
            files,
        );
        configure(&mut options);
        let port = listener.local_addr()?.port();
        let url = match options.tls {
            Some(_) => format!("https://localhost:{port}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let handle = tokio::spawn(quiver_server::serve_with(
            listener,
            Some(http_listener),
            token.clone(),
            options,
        ));
        // Storage opens on the blocking pool: wait until the server says it is ready (or
        // stopped: a test of a failing start looks at the handle).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !handle.is_finished() && std::time::Instant::now() < deadline {
            if matches!(http_get(&format!("{http_url}/readyz")).await, Ok((200, _))) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Ok(TestServer {
            url,
            http_url,
            dir,
            clock,
            token,
            handle,
        })
    }

    pub async fn clients(&self) -> Result<Clients> {
        self.connect(None, None).await
    }

    /// Clients that send `authorization: Bearer <token>` (when given) over an optionally
    /// configured TLS channel.
    pub async fn connect(
        &self,
        token: Option<&str>,
        tls: Option<ClientTlsConfig>,
    ) -> Result<Clients> {
        let mut endpoint = Channel::from_shared(self.url.clone())?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let mut last = None;
        for _ in 0..50 {
            match endpoint.connect().await {
                Ok(channel) => return Clients::new(channel, token),
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
        Err(last
            .map(anyhow::Error::from)
            .unwrap_or_else(|| anyhow::anyhow!("no connection")))
    }

    /// `GET path` on the metrics port: the status and the body.
    pub async fn http_get(&self, path: &str) -> Result<(u16, String)> {
        http_get(&format!("{}{path}", self.http_url)).await
    }

    /// Starts the graceful shutdown (see [`TestServer::stop`] to wait for its end).
    pub fn begin_shutdown(&self) {
        self.token.cancel();
    }

    /// Graceful shutdown; returns the data directory for a restart.
    pub async fn stop(self) -> Result<(tempfile::TempDir, Arc<ManualClock>)> {
        self.token.cancel();
        self.handle
            .await
            .context("server task")?
            .context("server result")?;
        Ok((self.dir, self.clock))
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }
}

/// `GET url` (HTTP/1.1): the status and the body; error statuses are answers too.
pub async fn http_get(url: &str) -> Result<(u16, String)> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || -> Result<(u16, String)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let mut response = agent.get(&url).call()?;
        let status = response.status().as_u16();
        Ok((status, response.body_mut().read_to_string()?))
    })
    .await?
}

pub fn write_parquet(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let schema = batches.first().map(|b| b.schema()).context("no batches")?;
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path)?, schema, None)?;
    for batch in batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(())
}

/// Reads manifests from `dir` as API files.
pub fn manifests(dir: &Path) -> Result<Vec<v1::ManifestFile>> {
    Ok(quiver_core::manifest::read_manifests(dir)?
        .into_iter()
        .map(|f| v1::ManifestFile {
            path: f.path,
            content: f.content,
        })
        .collect())
}

/// Applies the manifests under `dir` against the current registry version.
pub async fn apply(clients: &mut Clients, dir: &Path, force: bool) -> Result<v1::ApplyResponse> {
    let files = manifests(dir)?;
    let plan = clients
        .registry
        .plan(v1::PlanRequest {
            manifests: files.clone(),
        })
        .await?
        .into_inner();
    Ok(clients
        .registry
        .apply(v1::ApplyRequest {
            manifests: files,
            expected_version: Some(plan.base_version),
            force,
            tag: String::new(),
        })
        .await?
        .into_inner())
}

pub fn int64_column(values: Vec<i64>) -> v1::Column {
    v1::Column {
        values: Some(v1::column::Values::Int64Values(v1::Int64Values { values })),
        nulls: vec![],
    }
}

pub fn timestamp_column(micros: Vec<i64>) -> v1::Column {
    v1::Column {
        values: Some(v1::column::Values::TimestampValues(v1::TimestampValues {
            micros,
        })),
        nulls: vec![],
    }
}

pub fn named(name: &str, column: v1::Column) -> v1::NamedColumn {
    v1::NamedColumn {
        name: name.to_string(),
        column: Some(column),
    }
}

/// Sends `body` as the request message of the unary method `path` without encoding it, so
/// tests can send bytes that are not a valid protobuf message.
pub async fn raw_unary(
    channel: Channel,
    path: &'static str,
    body: Vec<u8>,
) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary::<_, (), _>(tonic::Request::new(body), path, RawCodec)
        .await
        .map(|_| ())
}

#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(
        &mut self,
        item: Vec<u8>,
        buf: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;

    fn decode(
        &mut self,
        buf: &mut tonic::codec::DecodeBuf<'_>,
    ) -> Result<Option<()>, tonic::Status> {
        bytes::Buf::advance(buf, bytes::Buf::remaining(buf));
        Ok(Some(()))
    }
}

/// Runs a server-side export to the end: its summary, or the status it failed with.
pub async fn export_to_end(
    clients: &mut Clients,
    request: v1::ExportRequest,
) -> Result<v1::ExportProgress, tonic::Status> {
    let mut stream = clients
        .offline
        .export_training_data(request)
        .await?
        .into_inner();
    let mut last = None;
    while let Some(item) = futures::StreamExt::next(&mut stream).await {
        last = Some(item?);
    }
    last.ok_or_else(|| tonic::Status::unknown("no summary"))
}

/// Runs `tests/python/<script>` with `args` off the async workers; its standard output, or an
/// error with both streams when it fails.
pub async fn run_python(script: &str, args: Vec<String>) -> Result<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .arg(script)
            .args(args)
            .output()
    })
    .await??;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "python failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(stdout)
}

/// Runs a future to its end from synchronous test code (a plain `#[test]` or a thread it
/// started), on one runtime shared by the test binary: the storage traits are async, and
/// their backends need a runtime for the blocking pool. Not for use inside an async test.
pub trait Block: std::future::Future + Sized {
    fn block(self) -> Self::Output {
        static RUNTIME: std::sync::LazyLock<tokio::runtime::Runtime> =
            std::sync::LazyLock::new(|| {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap_or_else(|error| panic!("the test runtime did not start: {error}"))
            });
        RUNTIME.block_on(self)
    }
}

impl<F: std::future::Future> Block for F {}
