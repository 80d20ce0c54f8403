//! TLS on the one port (gRPC and Flight alike), with rustls and the `ring` provider: the
//! certificate, key and optional client CA (mutual TLS) are reloaded when their files change,
//! so a renewed certificate needs no restart. Handshakes run in their own tasks, so a slow or
//! silent client cannot hold up others.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::reload::{Stamp, file_stamp};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the server's certificate and key (and, for mutual TLS, the client CA) are.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require client certificates signed by this CA (`--tls-client-ca`).
    pub client_ca: Option<PathBuf>,
}

impl TlsOptions {
    fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.cert.as_path(), self.key.as_path()];
        files.extend(self.client_ca.as_deref());
        files
    }
}

fn bad(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::FailedPrecondition(format!("TLS {what} {}: {e}", path.display()))
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(path, "certificate file", e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(path, "certificate file", e))?;
    if certs.is_empty() {
        return Err(bad(path, "certificate file", "no PEM certificate in it"));
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a server config from the files (HTTP/2 only, as gRPC needs).
fn load(options: &TlsOptions) -> Result<Arc<ServerConfig>> {
    let certs = certificates(&options.cert)?;
    let key =
        PrivateKeyDer::from_pem_file(&options.key).map_err(|e| bad(&options.key, "key file", e))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS protocol versions: {e}")))?;
    let builder = match &options.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| bad(path, "client CA", e))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| bad(path, "client CA", e))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| bad(&options.cert, "certificate and key", e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

type Stamps = Vec<Stamp>;

fn stamps(options: &TlsOptions) -> Stamps {
    options.files().into_iter().map(file_stamp).collect()
}

/// The current server config, replaced when the files change.
#[derive(Debug)]
pub struct TlsConfig {
    options: TlsOptions,
    current: RwLock<(Arc<ServerConfig>, Stamps)>,
}

impl TlsConfig {
    /// Loads the files; a bad certificate or key stops the server at start.
    pub fn open(options: &TlsOptions) -> Result<Arc<TlsConfig>> {
        let stamps = stamps(options);
        Ok(Arc::new(TlsConfig {
            options: options.clone(),
            current: RwLock::new((load(options)?, stamps)),
        }))
    }

    fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()).0)
    }

    /// Reloads if any file changed; keeps the old config when the new files are bad.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let now = stamps(&self.options);
        if now == self.current.read().unwrap_or_else(|e| e.into_inner()).1 {
            return Ok(false);
        }
        let config = load(&self.options)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (config, now);
        Ok(true)
    }
}

/// Accepted connections after their TLS handshake, each handshake in its own task.
pub(crate) fn incoming(
    listener: TcpListener,
    config: Arc<TlsConfig>,
    shutdown: CancellationToken,
) -> impl tokio_stream::Stream<Item = std::io::Result<TlsStream<TcpStream>>> {
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(error) = stream.set_nodelay(true) {
                tracing::warn!(%error, "cannot set TCP_NODELAY");
            }
            let acceptor = tokio_rustls::TlsAcceptor::from(config.current());
            let sender = sender.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = sender.send(Ok(tls)).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}
