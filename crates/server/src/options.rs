//! What the library server is given: its options and where "now" comes from.

use std::path::PathBuf;
use std::sync::Arc;

use quiver_core::types::Micros;

use crate::auth::AuthOptions;
use crate::tls::TlsOptions;

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
    /// Who may call (off by default: then only a loopback address may be served).
    pub auth: AuthOptions,
    /// TLS on the gRPC port (off by default).
    pub tls: Option<TlsOptions>,
}

impl ServerOptions {
    /// Options with auth and TLS off, on `data_dir`.
    pub fn new(data_dir: PathBuf, clock: Arc<dyn Clock>) -> Self {
        ServerOptions {
            data_dir,
            clock,
            auth: AuthOptions::default(),
            tls: None,
        }
    }
}
