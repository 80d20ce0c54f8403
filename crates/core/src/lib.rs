//! Quiver's domain model: what entities, sources, feature views and feature services are, how
//! manifests declare them, how plan/apply versions and fingerprints them, and the semantic
//! rules (row order, TTL, statuses) that the online and offline paths share.
//!
//! This crate is not I/O: it reads no Parquet, opens no database and knows no RPC. It depends
//! on neither tonic nor rocksdb nor datafusion (checked in `.ci/run`).
//!
//! Invariants: a [`registry::RegistryState`] is a value; object versions in it never change
//! once created; fingerprints depend on meaning only (not on metadata, order of files, or the
//! process), see [`fingerprint`].

pub mod error;
pub mod expectations;
pub mod fingerprint;
pub mod lineage;
pub mod logging;
pub mod manifest;
pub mod model;
pub mod monitoring;
pub mod offline_log;
pub mod online_read;
pub mod online_store;
pub mod plan;
pub mod properties;
pub mod registry;
pub mod registry_store;
mod resolve;
pub mod selection;
pub mod semantics;
pub mod skew;
pub mod types;
pub mod value;

#[doc(hidden)]
pub mod testdata;

pub use error::{Error, ErrorCode, Problem, Result};
pub use model::{Kind, ResolvedService, ResolvedView};
pub use registry::RegistryState;

#[cfg(test)]
mod plan_tests;
