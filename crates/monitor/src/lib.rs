//! Feature monitoring over Arrow: profiles (per feature counts, nulls and a summary by type,
//! with mergeable DataSketches sketches) and drift scores between two profiles.
//!
//! Pure computation: no files, no storage, no RPC. The server feeds it record batches (from
//! a window of a view's data or a training export) and stores what it returns.

mod b64;
pub mod builder;
pub mod categorical;
pub mod drift;
pub mod error;
pub mod numeric;
pub mod profile;
mod rules;

pub use builder::{ColumnSpec, ProfileBuilder};
pub use drift::{DriftReport, DriftRow, RowStatus, compare};
pub use error::{Error, Result};
pub use profile::{FeatureProfile, Origin, Profile, Subject, Summary};
