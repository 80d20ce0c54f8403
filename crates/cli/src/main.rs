//! The `quiver` binary: parses arguments and hands over to [`quiver_cli::run`].

/// jemalloc for every allocation of the process (Rust's and RocksDB's): with glibc's malloc
/// the server's RSS kept growing under steady load (arenas per thread holding freed memtable
/// and request memory; benches/README.md, "Soak"), with jemalloc it stays in a band.
#[cfg(all(target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    quiver_cli::run()
}
