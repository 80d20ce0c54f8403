//! The `quiver` command line: the server (`serve`), client commands that reach it over gRPC
//! (`plan`, `apply`, `list`, `describe`, `materialize`, `get`, `export`) and `quickstart`.
//!
//! Only this crate knows clap and initialises tracing; everything it runs lives in the
//! library crates.

mod client;
mod commands;
mod config;
pub mod demo;
mod output;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::commands::{
    backup, delivery, export, monitor, online, quickstart, registry, serve, skew, token,
};

/// Default server address of client commands.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

#[derive(Debug, Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: one feature store server for training and serving"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ServerArg {
    /// Server to talk to (`https://` for TLS).
    #[arg(long, env = "QUIVER_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Bearer token (from `quiver token create`, or a JWT) sent with every call.
    #[arg(long, env = "QUIVER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that signed the server's certificate, for `https://` URLs
    /// (default: the system's roots).
    #[arg(long, env = "QUIVER_TLS_CA", global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
}

impl ServerArg {
    /// A plain connection to `url` (the embedded quickstart server).
    pub fn local(url: &str) -> ServerArg {
        ServerArg {
            server: url.to_string(),
            token: None,
            tls_ca: None,
        }
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(Box<serve::ServeArgs>),
    /// Show what `apply` would change.
    Plan(registry::PlanArgs),
    /// Apply manifests atomically.
    Apply(registry::ApplyArgs),
    /// List release tags (`apply --tag`) and the registry versions they name.
    Tags(delivery::TagsArgs),
    /// Apply an earlier registry version's definitions (number or tag) as a new version.
    Rollback(delivery::RollbackArgs),
    /// List objects of a kind (entities, sources, views, services, all).
    List(registry::ListArgs),
    /// Describe one object: `describe view driver_stats@2`.
    Describe(registry::DescribeArgs),
    /// Materialize [start, end) into the online store.
    Materialize(online::MaterializeArgs),
    /// Materialize from each view's watermark up to --end.
    MaterializeIncremental(online::IncrementalArgs),
    /// Read online features.
    Get(online::GetArgs),
    /// Export point-in-time correct training data.
    Export(export::ExportArgs),
    /// Profile a view's or service's features over a window (`--view V|--service S --start
    /// T1 --end T2`), or print a stored profile (`profile show ID`, `profile list`).
    Profile(monitor::ProfileArgs),
    /// Score drift of a service's or view's features between a reference and a current
    /// profile (`export:PATH`, `profile:ID` or `window:T1..T2`).
    Drift(monitor::DriftArgs),
    /// Compare what a feature service served (its served-row log) with the point-in-time
    /// join recomputed at each row's served_at: mismatches per feature and cause.
    Skew(skew::SkewArgs),
    /// Read a feature service's served-row log: `logs --service S --start T1 --end T2`.
    Logs(skew::LogsArgs),
    /// Create a demo project, serve it embedded and walk through every step.
    Quickstart(quickstart::QuickstartArgs),
    /// Manage static tokens: `token create --name NAME --role ROLE --auth-file FILE`.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Back up a running server's data directory (online store, registry, watermarks, push
    /// log) into a new directory (role admin).
    Backup(backup::BackupArgs),
    /// Restore a backup into a new data directory (no server needed).
    Restore(backup::RestoreArgs),
}

/// Parses arguments, runs the command, and maps errors to exit code 1 with one message.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Plan(args) => registry::plan(args).await,
            other => run_command(other).await.map(|()| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", output::error_message(&error));
            ExitCode::FAILURE
        }
    }
}

/// Runs every command but `plan` (whose exit code tells whether anything changes).
async fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve::run(*args).await,
        Command::Plan(_) => Ok(()),
        Command::Tags(args) => delivery::tags(args).await,
        Command::Rollback(args) => delivery::rollback(args).await,
        Command::Apply(args) => registry::apply(args).await,
        Command::List(args) => registry::list(args).await,
        Command::Describe(args) => registry::describe(args).await,
        Command::Materialize(args) => online::materialize(args).await,
        Command::MaterializeIncremental(args) => online::materialize_incremental(args).await,
        Command::Get(args) => online::get(args).await,
        Command::Export(args) => export::run(args).await,
        Command::Profile(args) => monitor::profile(args).await,
        Command::Drift(args) => monitor::drift(args).await,
        Command::Skew(args) => skew::skew(args).await,
        Command::Logs(args) => skew::logs(args).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Token(command) => token::run(command),
        Command::Backup(args) => backup::backup(args).await,
        Command::Restore(args) => backup::restore(args),
    }
}
