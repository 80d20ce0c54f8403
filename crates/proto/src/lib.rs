//! The `quiver.v1` wire API: code generated from `proto/` (the only public contract) and the
//! conversions between wire columns and domain values.
//!
//! This crate is not a client library and holds no logic beyond validation of wire data:
//! every conversion into domain types goes through [`convert`] and reports a
//! [`ProtocolError`] naming the field at fault.

pub mod convert;
pub mod selector;

pub use prost;
pub use tonic;

#[allow(
    clippy::all,
    missing_docs,
    unreachable_pub,
    missing_debug_implementations
)]
pub mod v1 {
    tonic::include_proto!("quiver.v1");
}

/// Descriptor set of every `quiver.v1` service, for gRPC reflection (grpcurl).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("quiver_descriptor");

pub use convert::ProtocolError;
