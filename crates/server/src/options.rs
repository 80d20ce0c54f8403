//! What the library server is given: its options and where "now" comes from.

use std::path::PathBuf;
use std::sync::Arc;

use quiver_core::types::Micros;

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
    /// Bounds on requests, uploads, parked exports and jobs.
    pub limits: Limits,
}
