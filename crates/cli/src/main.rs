//! The `quiver` binary: parses arguments and hands over to [`quiver_cli::run`].

fn main() -> std::process::ExitCode {
    quiver_cli::run()
}
