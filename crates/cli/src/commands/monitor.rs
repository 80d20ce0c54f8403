//! `quiver profile` and `quiver drift`: feature statistics and drift (MonitoringService).

use std::path::Path;

use anyhow::{Context, Result, bail};
use quiver_core::types::parse_rfc3339;
use quiver_proto::v1;

use super::monitor_format::{drift_json, drift_table, profile_json, profile_table, profiles_table};
use crate::ServerArg;
use crate::client::connect;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct ProfileArgs {
    #[command(subcommand)]
    action: Option<ProfileAction>,
    /// Profile this view (`name` or `name@N`).
    #[arg(long, conflicts_with = "service")]
    view: Option<String>,
    /// Profile this feature service's features (`name` or `name@N`).
    #[arg(long)]
    service: Option<String>,
    /// Window start, RFC 3339 (event time, inclusive).
    #[arg(long)]
    start: Option<String>,
    /// Window end, RFC 3339 (exclusive).
    #[arg(long)]
    end: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text, global = true)]
    format: Format,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Subcommand)]
enum ProfileAction {
    /// Print a stored profile: `quiver profile show 12`.
    Show { id: u64 },
    /// List stored profiles, newest first.
    List {
        /// Only profiles of this view or service.
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
}

fn micros(flag: &str, value: Option<&str>) -> Result<i64> {
    let value =
        value.with_context(|| format!("give --{flag} (RFC 3339, like 2026-11-01T00:00:00Z)"))?;
    parse_rfc3339(value).with_context(|| {
        format!("--{flag} `{value}` is not RFC 3339; write it like 2026-11-01T00:00:00Z")
    })
}

pub(crate) async fn profile(args: ProfileArgs) -> Result<()> {
    let mut clients = connect(&args.server).await?;
    let profile = match args.action {
        Some(ProfileAction::Show { id }) => {
            clients
                .monitoring
                .get_profile(v1::GetProfileRequest { id })
                .await?
                .into_inner()
                .profile
        }
        Some(ProfileAction::List { name, limit }) => {
            let profiles = clients
                .monitoring
                .list_profiles(v1::ListProfilesRequest {
                    name: name.unwrap_or_default(),
                    limit,
                })
                .await?
                .into_inner()
                .profiles;
            match args.format {
                Format::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&profiles_json(&profiles))?
                ),
                Format::Text => println!("{}", profiles_table(&profiles)),
            }
            return Ok(());
        }
        None => {
            use v1::compute_profile_request::Subject;
            let subject = match (args.view, args.service) {
                (Some(view), None) => Subject::View(view),
                (None, Some(service)) => Subject::Service(service),
                _ => bail!("give --view V or --service S (or `quiver profile show ID`)"),
            };
            let request = v1::ComputeProfileRequest {
                subject: Some(subject),
                start_micros: micros("start", args.start.as_deref())?,
                end_micros: micros("end", args.end.as_deref())?,
            };
            clients
                .monitoring
                .compute_profile(request)
                .await?
                .into_inner()
                .profile
        }
    };
    let profile = profile.context("the server sent no profile")?;
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&profile_json(&profile))?),
        Format::Text => println!("{}", profile_table(&profile)),
    }
    Ok(())
}

fn profiles_json(profiles: &[v1::Profile]) -> serde_json::Value {
    profiles
        .iter()
        .map(|p| {
            serde_json::json!({
                "id": p.id,
                "subject": format!("{} {}@{}", p.subject_kind, p.subject_name, p.subject_version),
                "origin": p.origin,
                "origin_detail": p.origin_detail,
                "created_at_micros": p.created_at_micros,
                "rows": p.rows,
            })
        })
        .collect()
}

#[derive(Debug, clap::Args)]
pub(crate) struct DriftArgs {
    /// Compare this feature service's features (`name` or `name@N`).
    #[arg(long, conflicts_with = "view")]
    service: Option<String>,
    /// Compare this view's features.
    #[arg(long)]
    view: Option<String>,
    /// The baseline: `export:PATH` (a training export's reference profile, from the
    /// file's metadata), `profile:ID`, or `window:T1..T2` (RFC 3339).
    #[arg(long)]
    reference: String,
    /// What to check against it, in the same forms.
    #[arg(long)]
    current: String,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) async fn drift(args: DriftArgs) -> Result<()> {
    use v1::compute_drift_request::Subject;
    let subject = match (args.view, args.service) {
        (Some(view), None) => Subject::View(view),
        (None, Some(service)) => Subject::Service(service),
        _ => bail!("give --service S or --view V"),
    };
    let request = v1::ComputeDriftRequest {
        subject: Some(subject),
        reference: Some(source("reference", &args.reference)?),
        current: Some(source("current", &args.current)?),
    };
    let mut clients = connect(&args.server).await?;
    let report = clients
        .monitoring
        .compute_drift(request)
        .await?
        .into_inner();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&drift_json(&report))?),
        Format::Text => println!("{}", drift_table(&report)),
    }
    Ok(())
}

/// `export:PATH`, `profile:ID` or `window:T1..T2`.
fn source(flag: &str, text: &str) -> Result<v1::ProfileSource> {
    use v1::profile_source::Source;
    let usage =
        || format!("--{flag} `{text}`: use export:PATH, profile:ID or window:T1..T2 (RFC 3339)");
    let (kind, rest) = text.split_once(':').with_context(usage)?;
    let source = match kind {
        "profile" => Source::ProfileId(rest.parse().with_context(usage)?),
        "export" => Source::ProfileId(export_profile_id(Path::new(rest))?),
        "window" => {
            let (start, end) = rest.split_once("..").with_context(usage)?;
            let at = |t: &str| parse_rfc3339(t).with_context(usage);
            Source::Window(v1::TimeWindow {
                start_micros: at(start)?,
                end_micros: at(end)?,
            })
        }
        _ => bail!(usage()),
    };
    Ok(v1::ProfileSource {
        source: Some(source),
    })
}

/// The reference profile an export names in its Parquet metadata (`quiver.profile_id`).
pub(crate) fn export_profile_id(path: &Path) -> Result<u64> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the export {}", path.display()))?;
    let reader = parquet::file::reader::SerializedFileReader::new(file)
        .with_context(|| format!("{} is not a Parquet file", path.display()))?;
    use parquet::file::reader::FileReader;
    let metadata = reader.metadata().file_metadata().key_value_metadata();
    metadata
        .into_iter()
        .flatten()
        .find(|kv| kv.key == "quiver.profile_id")
        .and_then(|kv| kv.value.as_deref()?.parse().ok())
        .with_context(|| {
            format!(
                "{} has no `quiver.profile_id` metadata: it was not exported by a Quiver server that profiles exports; use profile:ID or window:T1..T2",
                path.display()
            )
        })
}
