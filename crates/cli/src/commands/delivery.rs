//! Continuous delivery of definitions: the plan as JSON for pipelines, `quiver tags` and
//! `quiver rollback --to NAME|VERSION`.

use anyhow::Result;
use quiver_core::types::format_rfc3339;
use quiver_proto::v1;
use serde_json::{Value, json};

use crate::ServerArg;
use crate::client::connect;
use crate::output::table;

use super::registry::render_changes;

#[derive(Debug, clap::Args)]
pub(crate) struct TagsArgs {
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// The registry version to return to: a number (`3`) or a tag (`v1.2`).
    #[arg(long)]
    to: String,
    /// Apply breaking changes and deletions the rollback makes.
    #[arg(long)]
    force: bool,
    /// Name the registry version the rollback creates.
    #[arg(long)]
    tag: Option<String>,
    #[command(flatten)]
    server: ServerArg,
}

/// A plan as one JSON object: `base_version`, `breaking`, and `changes` (each with `kind`,
/// `name`, `action`, `from_version`, `to_version`, `breaking`, `properties`).
pub(crate) fn plan_json(plan: &v1::PlanResponse) -> Value {
    let changes: Vec<Value> = plan
        .changes
        .iter()
        .map(|change| {
            let action = match v1::ChangeAction::try_from(change.action) {
                Ok(v1::ChangeAction::Create) => "create",
                Ok(v1::ChangeAction::Update) => "update",
                Ok(v1::ChangeAction::Delete) => "delete",
                Ok(v1::ChangeAction::Unspecified) | Err(_) => "unspecified",
            };
            let kind = quiver_proto::convert::kind_from_proto(change.kind, "kind")
                .ok()
                .flatten()
                .map(|k| k.to_string());
            let properties: Vec<Value> = change
                .properties
                .iter()
                .map(|p| {
                    json!({
                        "property": p.property,
                        "old": p.old_value,
                        "new": p.new_value,
                        "breaking": p.breaking,
                        "metadata": p.metadata,
                    })
                })
                .collect();
            json!({
                "kind": kind,
                "name": change.name,
                "action": action,
                "from_version": change.from_version,
                "to_version": change.to_version,
                "fingerprint": change.fingerprint,
                "breaking": change.breaking,
                "properties": properties,
            })
        })
        .collect();
    json!({
        "base_version": plan.base_version,
        "breaking": plan.breaking,
        "changes": changes,
    })
}

pub(crate) async fn tags(args: TagsArgs) -> Result<()> {
    let mut clients = connect(&args.server).await?;
    let response = clients
        .registry
        .list_tags(v1::ListTagsRequest {})
        .await?
        .into_inner();
    let rows: Vec<Vec<String>> = response
        .tags
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.registry_version.to_string(),
                format_rfc3339(t.applied_at_micros),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["TAG", "REGISTRY VERSION", "APPLIED AT"], &rows)
    );
    Ok(())
}

pub(crate) async fn rollback(args: RollbackArgs) -> Result<()> {
    let mut clients = connect(&args.server).await?;
    let response = clients
        .registry
        .rollback(v1::RollbackRequest {
            to: args.to.clone(),
            expected_version: None,
            force: args.force,
            tag: args.tag.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    if response.changes.is_empty() {
        println!(
            "No changes: registry version {} already has the definitions of {}.",
            response.registry_version, args.to
        );
    } else {
        println!("{}", render_changes(&response.changes));
        println!(
            "Rolled back to the definitions of {}: registry version {}.",
            args.to, response.registry_version
        );
    }
    Ok(())
}
