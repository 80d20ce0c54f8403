//! Generates the `quiver.v1` tonic/prost code from the workspace's top-level `proto/` directory
//! into OUT_DIR, plus a file descriptor set for gRPC reflection. Needs `protoc` (PATH or
//! $PROTOC; Debian's protobuf-compiler). Generated code is not checked in.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let files = [
        "types",
        "registry",
        "online",
        "jobs",
        "offline",
        "admin",
        "monitoring",
    ]
    .map(|name| root.join(format!("quiver/v1/{name}.proto")));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("quiver_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .compile_protos(&files, &[root])?;
    Ok(())
}
