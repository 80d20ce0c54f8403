//! `quiver token create`: adds a principal to a tokens file and prints its token once.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result};
use quiver_server::auth::tokens::TokensFile;
use quiver_server::auth::{Role, Scope};

#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Add a principal with a new random token; the token is printed once, alone on the last
    /// line of standard output. A running server picks the change up within seconds.
    Create(CreateArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// Principal name (shown in the audit log and in `describe`).
    #[arg(long)]
    name: String,
    /// `reader`, `writer` or `admin`.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// The tokens file (created if missing), as given to `quiver serve --auth-file`.
    #[arg(long, env = "QUIVER_AUTH_FILE")]
    auth_file: PathBuf,
    /// Limit the token to these feature services (comma separated).
    #[arg(long, value_delimiter = ',')]
    services: Vec<String>,
    /// Limit the token to these views (comma separated).
    #[arg(long, value_delimiter = ',')]
    views: Vec<String>,
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| format!("`{text}` is not a role; use reader, writer or admin"))
}

pub(crate) fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create(args) => create(args),
    }
}

fn create(args: CreateArgs) -> Result<()> {
    let mut file = TokensFile::read_or_empty(&args.auth_file)?;
    let scope = Scope {
        services: args.services.into_iter().collect::<BTreeSet<_>>(),
        views: args.views.into_iter().collect::<BTreeSet<_>>(),
    };
    let token = file.create(&args.name, args.role, scope)?;
    file.write(&args.auth_file)
        .with_context(|| format!("writing {}", args.auth_file.display()))?;
    println!(
        "Added `{}` (role {}) to {}. Its token is shown once; store it now:",
        args.name,
        args.role,
        args.auth_file.display()
    );
    println!("{token}");
    Ok(())
}
