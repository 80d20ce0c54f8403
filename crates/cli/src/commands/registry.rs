//! `quiver plan | apply | list | describe`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use quiver_core::manifest::read_manifests;
use quiver_core::model::Kind;
use quiver_core::types::format_rfc3339;
use quiver_proto::convert::{kind_from_proto, kind_to_proto};
use quiver_proto::v1;

use crate::ServerArg;
use crate::client::{Clients, connect};
use crate::output::table;

#[derive(Debug, clap::Args)]
pub(crate) struct PlanArgs {
    /// Manifest file or directory.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Exit 0 when there are no changes, 2 when there are, 1 on an error (for CI).
    #[arg(long)]
    detailed_exitcode: bool,
    /// `text` (default) or `json`: one object with `base_version`, `breaking` and `changes`.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    format: PlanFormat,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum PlanFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ApplyArgs {
    /// Manifest file or directory.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Apply breaking changes and deletions.
    #[arg(long)]
    force: bool,
    /// Name the registry version this apply creates (the current one when nothing changes),
    /// e.g. a release or commit; `quiver tags` lists them, `quiver rollback --to` returns.
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// entities, sources, views, services or all.
    #[arg(default_value = "all")]
    kind: String,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct DescribeArgs {
    /// entity, source, view or service.
    kind: String,
    /// `name` or `name@N`.
    name: String,
    #[command(flatten)]
    server: ServerArg,
}

pub(crate) fn manifest_files(path: &std::path::Path) -> Result<Vec<v1::ManifestFile>> {
    let files = read_manifests(path)
        .with_context(|| format!("cannot read manifests at {}", path.display()))?;
    if files.is_empty() {
        bail!("no *.yaml or *.yml manifest files under {}", path.display());
    }
    Ok(files
        .into_iter()
        .map(|f| v1::ManifestFile {
            path: f.path,
            content: f.content,
        })
        .collect())
}

fn kind_label(raw: i32) -> String {
    kind_from_proto(raw, "kind")
        .ok()
        .flatten()
        .map(|k| k.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Terraform-style rendering of a plan.
pub(crate) fn render_changes(changes: &[v1::Change]) -> String {
    let mut out = Vec::new();
    let (mut created, mut updated, mut deleted) = (0, 0, 0);
    for change in changes {
        let action =
            v1::ChangeAction::try_from(change.action).unwrap_or(v1::ChangeAction::Unspecified);
        let (sign, versions) = match action {
            v1::ChangeAction::Create => {
                created += 1;
                ("+", format!("v{}", change.to_version.unwrap_or(0)))
            }
            v1::ChangeAction::Update => {
                updated += 1;
                let (from, to) = (
                    change.from_version.unwrap_or(0),
                    change.to_version.unwrap_or(0),
                );
                (
                    "~",
                    if from == to {
                        format!("v{from} (metadata)")
                    } else {
                        format!("v{from} -> v{to}")
                    },
                )
            }
            v1::ChangeAction::Delete | v1::ChangeAction::Unspecified => {
                deleted += 1;
                ("-", format!("v{}", change.from_version.unwrap_or(0)))
            }
        };
        let breaking = if change.breaking { "  [BREAKING]" } else { "" };
        out.push(format!(
            "{sign} {}/{} {versions}{breaking}",
            kind_label(change.kind),
            change.name
        ));
        for p in &change.properties {
            let line = match (&p.old_value, &p.new_value) {
                (None, Some(new)) => format!("    + {}: {new}", p.property),
                (Some(old), None) => format!("    - {}: {old}", p.property),
                (Some(old), Some(new)) => format!("    ~ {}: {old} -> {new}", p.property),
                (None, None) => format!("    ~ {}", p.property),
            };
            let tag = if p.breaking { "  (breaking)" } else { "" };
            out.push(format!("{line}{tag}"));
        }
    }
    if changes.is_empty() {
        out.push("No changes: the registry matches the manifests.".into());
    } else {
        out.push(format!(
            "{created} to create, {updated} to update, {deleted} to delete."
        ));
    }
    out.join("\n")
}

pub(crate) async fn plan(args: PlanArgs) -> Result<ExitCode> {
    let files = manifest_files(&args.file)?;
    let mut clients = connect(&args.server).await?;
    let plan = clients
        .registry
        .plan(v1::PlanRequest { manifests: files })
        .await?
        .into_inner();
    match args.format {
        PlanFormat::Text => {
            println!("Plan against registry version {}:", plan.base_version);
            println!("{}", render_changes(&plan.changes));
            if plan.breaking {
                println!("Breaking changes: `quiver apply --force` is needed to apply them.");
            }
        }
        PlanFormat::Json => println!("{}", super::delivery::plan_json(&plan)),
    }
    let changed = !plan.changes.is_empty();
    Ok(ExitCode::from(if args.detailed_exitcode && changed {
        2
    } else {
        0
    }))
}

/// Plans, then applies against the planned registry version (a concurrent apply in between
/// makes this one fail with FAILED_PRECONDITION instead of silently overwriting it). Returns
/// the plan and, when it had changes, the apply's answer.
pub(crate) async fn plan_and_apply(
    clients: &mut Clients,
    files: Vec<v1::ManifestFile>,
    force: bool,
    tag: Option<String>,
) -> Result<(v1::PlanResponse, Option<v1::ApplyResponse>)> {
    let plan = clients
        .registry
        .plan(v1::PlanRequest {
            manifests: files.clone(),
        })
        .await?
        .into_inner();
    if plan.changes.is_empty() && tag.is_none() {
        return Ok((plan, None));
    }
    let applied = clients
        .registry
        .apply(v1::ApplyRequest {
            manifests: files,
            expected_version: Some(plan.base_version),
            force,
            tag: tag.unwrap_or_default(),
        })
        .await?
        .into_inner();
    Ok((plan, (!applied.changes.is_empty()).then_some(applied)))
}

pub(crate) async fn apply(args: ApplyArgs) -> Result<()> {
    let files = manifest_files(&args.file)?;
    let mut clients = connect(&args.server).await?;
    let tag = args.tag.clone();
    let (version, changes) = match plan_and_apply(&mut clients, files, args.force, args.tag).await?
    {
        (plan, None) => {
            println!(
                "No changes: registry version {} matches the manifests.",
                plan.base_version
            );
            (plan.base_version, false)
        }
        (_, Some(applied)) => {
            println!("{}", render_changes(&applied.changes));
            println!("Applied: registry version {}.", applied.registry_version);
            (applied.registry_version, true)
        }
    };
    if let Some(tag) = tag {
        let what = if changes { "it" } else { "the current version" };
        println!("Tagged {what} (registry version {version}) `{tag}`.");
    }
    Ok(())
}

fn parse_kind(text: &str) -> Result<Option<Kind>> {
    if text == "all" {
        return Ok(None);
    }
    Kind::parse(text).map(Some).with_context(|| {
        format!("unknown kind `{text}`; use entities, sources, views, services or all")
    })
}

pub(crate) async fn list(args: ListArgs) -> Result<()> {
    let kind = parse_kind(&args.kind)?;
    let mut clients = connect(&args.server).await?;
    let response = clients
        .registry
        .list_objects(v1::ListObjectsRequest {
            kind: kind.map(|k| kind_to_proto(k) as i32).unwrap_or(0),
        })
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = response
        .objects
        .iter()
        .map(|o| {
            vec![
                kind_label(o.kind),
                o.name.clone(),
                format!("v{}", o.version),
                o.fingerprint.clone(),
                format_rfc3339(o.created_at_micros),
                o.owner.clone(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &["KIND", "NAME", "VERSION", "FINGERPRINT", "CREATED", "OWNER"],
            &rows
        )
    );
    println!(
        "({} objects, registry version {})",
        rows.len(),
        response.registry_version
    );
    Ok(())
}

pub(crate) async fn describe(args: DescribeArgs) -> Result<()> {
    let kind = parse_kind(&args.kind)?
        .context("describe needs one kind: entity, source, view or service")?;
    let mut clients = connect(&args.server).await?;
    let object = clients
        .registry
        .get_object(v1::GetObjectRequest {
            kind: kind_to_proto(kind) as i32,
            name: args.name.clone(),
        })
        .await?
        .into_inner()
        .object
        .context("server returned no object")?;
    println!(
        "{}/{}@{} (latest v{}){}",
        kind,
        object.name,
        object.version,
        object.latest_version,
        if object.deleted { " [deleted]" } else { "" }
    );
    println!("fingerprint: {}", object.fingerprint);
    println!(
        "created:     {} (registry version {})",
        format_rfc3339(object.created_at_micros),
        object.registry_version
    );
    if !object.applied_by.is_empty() {
        println!("applied by:  {}", object.applied_by);
    }
    if !object.description.is_empty() {
        println!("description: {}", object.description);
    }
    if !object.owner.is_empty() {
        println!("owner:       {}", object.owner);
    }
    for (k, v) in &object.tags {
        println!("tag:         {k}={v}");
    }
    println!("origin:      {}", object.origin);
    println!("{}", object.spec_json);
    let name = args
        .name
        .split('@')
        .next()
        .unwrap_or(&args.name)
        .to_string();
    let versions = clients
        .registry
        .list_versions(v1::ListVersionsRequest {
            kind: kind_to_proto(kind) as i32,
            name,
        })
        .await?
        .into_inner()
        .versions;
    println!("versions:");
    for v in versions {
        let by = if v.applied_by.is_empty() {
            String::new()
        } else {
            format!("  by {}", v.applied_by)
        };
        println!(
            "  v{}  {}  {}{by}",
            v.version,
            v.fingerprint,
            format_rfc3339(v.created_at_micros)
        );
    }
    Ok(())
}
