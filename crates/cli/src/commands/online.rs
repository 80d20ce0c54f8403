//! `quiver materialize | materialize-incremental | get`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use quiver_core::model::{JoinKey, Kind};
use quiver_core::types::{KeyType, parse_rfc3339};
use quiver_core::value::{KeyValue, Value};
use quiver_core::{ResolvedService, ResolvedView};
use quiver_proto::convert::{column_to_values, keys_to_column, kind_to_proto};
use quiver_proto::v1;

use crate::ServerArg;
use crate::client::{Clients, connect};
use crate::output::table;

#[derive(Debug, clap::Args)]
pub(crate) struct MaterializeArgs {
    /// Window start, RFC 3339 (inclusive).
    #[arg(long)]
    start: String,
    /// Window end, RFC 3339 (exclusive).
    #[arg(long)]
    end: String,
    /// Views to materialize (default: every online view).
    #[arg(long = "view")]
    views: Vec<String>,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct IncrementalArgs {
    /// Window end, RFC 3339 (exclusive); each view starts at its watermark.
    #[arg(long)]
    end: String,
    #[arg(long = "view")]
    views: Vec<String>,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub(crate) struct GetArgs {
    /// Feature service, `name` or `name@N`.
    #[arg(long, conflicts_with = "features")]
    service: Option<String>,
    /// Feature refs `view:feature`, comma separated.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Entity keys: `driver_id=1001,1002` (repeat for composite keys).
    #[arg(long = "entity", required = true)]
    entities: Vec<String>,
    /// Name features `view__feature`.
    #[arg(long)]
    full_names: bool,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    #[command(flatten)]
    server: ServerArg,
}

fn time_arg(text: &str, flag: &str) -> Result<i64> {
    parse_rfc3339(text).with_context(|| {
        format!("{flag} `{text}` is not an RFC 3339 time like 2026-01-02T03:04:05Z")
    })
}

pub(crate) async fn materialize(args: MaterializeArgs) -> Result<()> {
    let request = v1::StartMaterializationRequest {
        views: args.views,
        start_micros: time_arg(&args.start, "--start")?,
        end_micros: time_arg(&args.end, "--end")?,
        incremental: false,
    };
    let mut clients = connect(&args.server).await?;
    run_job(&mut clients, request, true).await.map(|_| ())
}

pub(crate) async fn materialize_incremental(args: IncrementalArgs) -> Result<()> {
    let request = v1::StartMaterializationRequest {
        views: args.views,
        start_micros: 0,
        end_micros: time_arg(&args.end, "--end")?,
        incremental: true,
    };
    let mut clients = connect(&args.server).await?;
    run_job(&mut clients, request, true).await.map(|_| ())
}

/// Starts a job, follows it with a progress bar and prints a summary.
pub(crate) async fn run_job(
    clients: &mut Clients,
    request: v1::StartMaterializationRequest,
    show: bool,
) -> Result<v1::Job> {
    let job = clients
        .jobs
        .start_materialization(request)
        .await?
        .into_inner()
        .job
        .context("server returned no job")?;
    let bar = indicatif::ProgressBar::new_spinner();
    if !show {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut stream = clients
        .jobs
        .watch_job(v1::WatchJobRequest { id: job.id.clone() })
        .await?
        .into_inner();
    let mut last = job;
    // Ctrl-C cancels the job on the server (its watermarks stay where the data is), then the
    // loop keeps following it to its end.
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    let mut cancelled = false;
    loop {
        let update = tokio::select! {
            update = stream.next() => update,
            _ = &mut interrupt, if !cancelled => {
                cancelled = true;
                bar.println(format!("cancelling {}", last.id));
                clients.jobs.cancel_job(v1::CancelJobRequest { id: last.id.clone() }).await?;
                continue;
            }
        };
        let Some(update) = update else { break };
        last = update?;
        let secs = last.elapsed_micros as f64 / 1e6;
        bar.set_message(format!(
            "{}: {} source rows scanned, {} keys written, {:.0} rows/s",
            last.id,
            last.rows_scanned,
            last.keys_written,
            last.rows_scanned as f64 / secs.max(1e-6)
        ));
    }
    bar.finish_and_clear();
    let secs = last.elapsed_micros as f64 / 1e6;
    match v1::JobState::try_from(last.state) {
        Ok(v1::JobState::Succeeded) => {
            if show {
                for view in &last.views {
                    println!(
                        "  {}@{}: {} source rows -> {} keys{}",
                        view.view,
                        view.version,
                        view.rows_scanned,
                        view.keys_written,
                        run_profile(view)
                    );
                }
                println!(
                    "Materialized {} views: {} source rows, {} keys written in {:.2} s ({:.0} source rows/s).",
                    last.views.len(),
                    last.rows_scanned,
                    last.keys_written,
                    secs,
                    last.rows_scanned as f64 / secs.max(1e-6)
                );
            }
            Ok(last)
        }
        Ok(v1::JobState::Cancelled) => bail!(
            "materialization job {} was cancelled; watermarks were not moved past unwritten data",
            last.id
        ),
        _ => bail!("materialization job {} failed: {}", last.id, last.error),
    }
}

async fn fetch<T: serde::de::DeserializeOwned>(
    clients: &mut Clients,
    kind: Kind,
    name: &str,
) -> Result<T> {
    let object = clients
        .registry
        .get_object(v1::GetObjectRequest {
            kind: kind_to_proto(kind) as i32,
            name: name.to_string(),
        })
        .await?
        .into_inner()
        .object
        .context("server returned no object")?;
    serde_json::from_str(&object.spec_json)
        .with_context(|| format!("cannot read the definition of {kind} `{name}`"))
}

/// The join keys (name and type) a request needs, in first-seen order.
async fn join_keys(
    clients: &mut Clients,
    service: Option<&str>,
    refs: &[String],
) -> Result<Vec<JoinKey>> {
    let mut views: Vec<String> = Vec::new();
    if let Some(service) = service {
        let resolved: ResolvedService = fetch(clients, Kind::FeatureService, service).await?;
        views.extend(
            resolved
                .items
                .iter()
                .map(|i| format!("{}@{}", i.view, i.view_version)),
        );
    }
    for reference in refs {
        let view = reference
            .split_once(':')
            .map(|(v, _)| v)
            .with_context(|| format!("`{reference}` is not `view:feature`"))?;
        views.push(view.to_string());
    }
    let mut keys: Vec<JoinKey> = Vec::new();
    for view in views {
        let resolved: ResolvedView = fetch(clients, Kind::FeatureView, &view).await?;
        for key in resolved.join_keys {
            if !keys.iter().any(|k| k.name == key.name) {
                keys.push(key);
            }
        }
    }
    Ok(keys)
}

fn parse_key(text: &str, key_type: KeyType, name: &str) -> Result<KeyValue> {
    let bad = || format!("--entity {name}: `{text}` is not a valid {key_type}");
    Ok(match key_type {
        KeyType::Int64 => KeyValue::Int64(text.trim().parse().with_context(bad)?),
        KeyType::Int32 => KeyValue::Int32(text.trim().parse().with_context(bad)?),
        KeyType::String => KeyValue::String(text.to_string()),
        KeyType::Bytes => KeyValue::Bytes(text.as_bytes().to_vec()),
    })
}

pub(crate) async fn get(args: GetArgs) -> Result<()> {
    let mut clients = connect(&args.server).await?;
    let keys = join_keys(&mut clients, args.service.as_deref(), &args.features).await?;
    let mut entity_columns: BTreeMap<String, Vec<KeyValue>> = BTreeMap::new();
    for spec in &args.entities {
        let (name, values) = spec
            .split_once('=')
            .with_context(|| format!("--entity `{spec}`: write it as key=v1,v2"))?;
        let key = keys.iter().find(|k| k.name == name).with_context(|| {
            format!(
                "--entity {name}: not a join key here; the keys are {}",
                keys.iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let parsed = values
            .split(',')
            .map(|v| parse_key(v, key.key_type, name))
            .collect::<Result<Vec<_>>>()?;
        entity_columns.insert(name.to_string(), parsed);
    }
    let mut entities = Vec::new();
    for (name, values) in &entity_columns {
        entities.push(v1::NamedColumn {
            name: name.clone(),
            column: Some(keys_to_column(values).map_err(anyhow::Error::msg)?),
        });
    }
    let selector = match &args.service {
        Some(service) => v1::get_online_features_request::Selector::FeatureService(service.clone()),
        None => v1::get_online_features_request::Selector::Features(v1::FeatureRefs {
            refs: args.features.clone(),
        }),
    };
    let response = clients
        .online
        .get_online_features(v1::GetOnlineFeaturesRequest {
            selector: Some(selector),
            entities,
            full_names: args.full_names,
            ..Default::default()
        })
        .await?
        .into_inner();
    let rows = response_rows(&response, &entity_columns)?;
    match args.format {
        Format::Json => {
            for row in rows {
                println!("{}", serde_json::Value::Object(row));
            }
        }
        Format::Table => print_table(&response, &rows),
    }
    Ok(())
}

type JsonRow = serde_json::Map<String, serde_json::Value>;

fn key_json(key: &KeyValue) -> serde_json::Value {
    match key {
        KeyValue::Int64(v) => (*v).into(),
        KeyValue::Int32(v) => (*v).into(),
        other => other.to_string().into(),
    }
}

pub(crate) fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(v) => (*v).into(),
        Value::Int32(v) => (*v).into(),
        Value::Int64(v) => (*v).into(),
        Value::Float32(v) => serde_json::Number::from_f64(f64::from(*v))
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Float64(v) => serde_json::Number::from_f64(*v)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::String(v) => v.clone().into(),
        Value::Bytes(v) => quiver_core::fingerprint::hex(v).into(),
        Value::Timestamp(v) => quiver_core::types::format_rfc3339(*v).into(),
        Value::List(items) => items.iter().map(value_json).collect::<Vec<_>>().into(),
    }
}

/// One JSON object per entity row: keys, every feature (null unless PRESENT), `statuses`.
fn response_rows(
    response: &v1::GetOnlineFeaturesResponse,
    entities: &BTreeMap<String, Vec<KeyValue>>,
) -> Result<Vec<JsonRow>> {
    let n_rows = entities.values().map(Vec::len).max().unwrap_or(0);
    let mut rows: Vec<JsonRow> = (0..n_rows)
        .map(|i| {
            entities
                .iter()
                .map(|(name, values)| {
                    (
                        name.clone(),
                        values.get(i).map(key_json).unwrap_or_default(),
                    )
                })
                .collect()
        })
        .collect();
    let mut statuses: Vec<JsonRow> = vec![JsonRow::new(); n_rows];
    for feature in &response.features {
        let column = feature
            .values
            .as_ref()
            .context("feature column without values")?;
        let value_type = column_type(column);
        let values =
            column_to_values(column, value_type, &feature.name).map_err(anyhow::Error::from)?;
        for (i, row) in rows.iter_mut().enumerate() {
            let status = feature
                .statuses
                .get(i)
                .and_then(|s| v1::FeatureStatus::try_from(*s).ok())
                .unwrap_or(v1::FeatureStatus::Unspecified);
            let value = if status == v1::FeatureStatus::Present {
                values.get(i).map(value_json).unwrap_or_default()
            } else {
                serde_json::Value::Null
            };
            row.insert(feature.name.clone(), value);
            if let Some(s) = statuses.get_mut(i) {
                s.insert(feature.name.clone(), status_name(status).into());
            }
        }
    }
    for (row, status) in rows.iter_mut().zip(statuses) {
        row.insert("statuses".into(), serde_json::Value::Object(status));
    }
    Ok(rows)
}

pub(crate) fn status_name(status: v1::FeatureStatus) -> &'static str {
    match status {
        v1::FeatureStatus::Present => "PRESENT",
        v1::FeatureStatus::NullValue => "NULL_VALUE",
        v1::FeatureStatus::NotFound => "NOT_FOUND",
        v1::FeatureStatus::OutsideMaxAge => "OUTSIDE_MAX_AGE",
        v1::FeatureStatus::Unspecified => "UNSPECIFIED",
    }
}

/// The value type a response column carries (the server sends exactly the feature's type).
fn column_type(column: &v1::Column) -> quiver_core::types::ValueType {
    use quiver_core::types::{ScalarType, ValueType};
    use v1::column::Values;
    let scalar = |values: &Option<Values>| match values {
        Some(Values::BoolValues(_)) => ScalarType::Bool,
        Some(Values::Int32Values(_)) => ScalarType::Int32,
        Some(Values::Int64Values(_)) => ScalarType::Int64,
        Some(Values::FloatValues(_)) => ScalarType::Float32,
        Some(Values::DoubleValues(_)) => ScalarType::Float64,
        Some(Values::BytesValues(_)) => ScalarType::Bytes,
        Some(Values::TimestampValues(_)) => ScalarType::Timestamp,
        Some(Values::StringValues(_)) | Some(Values::ListValues(_)) | None => ScalarType::String,
    };
    match &column.values {
        Some(Values::ListValues(list)) => ValueType {
            scalar: list
                .values
                .as_ref()
                .map(|c| scalar(&c.values))
                .unwrap_or(ScalarType::Float32),
            list: true,
        },
        other => ValueType::scalar(scalar(other)),
    }
}

fn print_table(response: &v1::GetOnlineFeaturesResponse, rows: &[JsonRow]) {
    let mut header: Vec<String> = rows
        .first()
        .map(|r| r.keys().filter(|k| *k != "statuses").cloned().collect())
        .unwrap_or_default();
    let features: Vec<&str> = response.features.iter().map(|f| f.name.as_str()).collect();
    header.retain(|h| !features.contains(&h.as_str()));
    let n_keys = header.len();
    header.extend(features.iter().map(|f| f.to_string()));
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            header
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    let value = row.get(name).map(|v| v.to_string()).unwrap_or_default();
                    let status = row
                        .get("statuses")
                        .and_then(|s| s.get(name))
                        .and_then(|s| s.as_str())
                        .unwrap_or("PRESENT");
                    if i >= n_keys && status != "PRESENT" {
                        status.to_string()
                    } else {
                        value
                    }
                })
                .collect()
        })
        .collect();
    let header_refs: Vec<&str> = header.iter().map(String::as_str).collect();
    println!("{}", table(&header_refs, &cells));
    if !response.views.is_empty() {
        let views: Vec<String> = response
            .views
            .iter()
            .map(|v| format!("{}@{}", v.name, v.version))
            .collect();
        let service = if response.feature_service.is_empty() {
            String::new()
        } else {
            format!(
                "{}@{} ({}), ",
                response.feature_service, response.feature_service_version, response.fingerprint
            )
        };
        println!("({service}views {})", views.join(", "));
    }
}

/// `, profile N` and the expectation violations among the scanned rows, if any.
fn run_profile(view: &v1::ViewProgress) -> String {
    let mut text = match view.profile_id {
        0 => String::new(),
        id => format!(", profile {id}"),
    };
    let broken: Vec<String> = view
        .violations
        .iter()
        .filter(|v| v.count > 0)
        .map(|v| format!("{} {}={}", v.feature, v.rule, v.count))
        .collect();
    if !broken.is_empty() {
        text.push_str(&format!("; expectation violations: {}", broken.join(", ")));
    }
    text
}
