//! A real S3-compatible server for the object storage tests: `moto_server` (PyPI `moto`,
//! installed by `scripts/setup`) on a free loopback port, stopped when dropped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use arrow::record_batch::RecordBatch;

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
}

impl Moto {
    /// Starts a server that accepts any credentials.
    pub fn start() -> Result<Moto> {
        Self::spawn(false)
    }

    /// Starts a server that authenticates every request: it knows no access key, so every
    /// request is refused (`InvalidAccessKeyId`).
    pub fn start_refusing() -> Result<Moto> {
        Self::spawn(true)
    }

    fn spawn(authenticate: bool) -> Result<Moto> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new("moto_server");
        command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if authenticate {
            command.env("INITIAL_NO_AUTH_ACTION_COUNT", "0");
        }
        let child = command
            .spawn()
            .context("cannot start moto_server; install it with `pip install 'moto[server]'` (scripts/setup does)")?;
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        // Any HTTP answer (a refusing server answers 403) means it is up.
        while let Err(e) = ureq::get(&moto.endpoint).call()
            && !matches!(e, ureq::Error::StatusCode(_))
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "moto_server did not start in 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    /// The client options a Quiver server needs for this endpoint (`--object-store-option`).
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "quiver-test"),
            ("aws_secret_access_key", "quiver-test-secret"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        ureq::put(&format!("{}/{bucket}", self.endpoint)).send_empty()?;
        Ok(())
    }

    /// Stores `bytes` at `bucket/key`.
    pub fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> Result<()> {
        ureq::put(&format!("{}/{bucket}/{key}", self.endpoint)).send(bytes)?;
        Ok(())
    }

    /// Stores `batches` as a Parquet file at `bucket/key`.
    pub fn put_parquet(&self, bucket: &str, key: &str, batches: &[RecordBatch]) -> Result<()> {
        let schema = batches.first().map(|b| b.schema()).context("no batches")?;
        let mut bytes = Vec::new();
        let mut writer = parquet::arrow::ArrowWriter::try_new(&mut bytes, schema, None)?;
        for batch in batches {
            writer.write(batch)?;
        }
        writer.close()?;
        self.put(bucket, key, &bytes)
    }

    /// The object at `bucket/key`, `None` if there is none (a signed read: objects the
    /// server wrote are not public).
    pub async fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        use object_store::ObjectStoreExt;
        let store = self
            .options()
            .into_iter()
            .fold(
                object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket),
                |b, (k, v)| match k.parse() {
                    Ok(key) => b.with_config(key, v),
                    Err(_) => b,
                },
            )
            .build()?;
        match store.get(&object_store::path::Path::from(key)).await {
            Ok(found) => Ok(Some(found.bytes().await?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
