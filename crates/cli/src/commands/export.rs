//! `quiver export`: point-in-time training data to Parquet. By default everything local stays
//! local: the label table is read here and uploaded (Flight DoPut), the result streamed back
//! (Flight DoGet) and written here. `--server-side` names a label table under one of the
//! server's labels roots and a file in its export directory instead.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arrow_flight::FlightDescriptor;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::{StreamExt, TryStreamExt};
use quiver_core::types::parse_rfc3339;
use quiver_proto::prost::Message;
use quiver_proto::v1;

use crate::ServerArg;
use crate::client::{Clients, connect};

#[derive(Debug, clap::Args)]
pub(crate) struct ExportArgs {
    /// Feature service, `name` or `name@N`.
    #[arg(long, conflicts_with = "features")]
    service: Option<String>,
    /// Feature refs `view:feature`, comma separated.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Label table: a local Parquet file, directory or glob, uploaded to the server; with
    /// --server-side, a path under one of the server's labels roots.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Output Parquet file, written here; with --server-side, a file in the server's export
    /// directory (relative to it).
    #[arg(long)]
    out: PathBuf,
    /// Label timestamp column.
    #[arg(long, default_value = "event_timestamp")]
    timestamp_column: String,
    /// Name features `view__feature`.
    #[arg(long)]
    full_names: bool,
    /// Only use rows created at or before each label's time.
    #[arg(long)]
    as_known_at: bool,
    /// Entity-less retrieval window start (RFC 3339), with --end and no --labels; with
    /// --from-served-log, only rows served in [--start, --end) are read.
    #[arg(long)]
    start: Option<String>,
    #[arg(long)]
    end: Option<String>,
    /// Build the training set from the service's served-row log: each label row gets the
    /// values serving returned (needs --service and --labels).
    #[arg(long, requires_all = ["service", "labels"], conflicts_with = "as_known_at")]
    from_served_log: bool,
    /// With --from-served-log: `request_id` (the label's request id and join keys) or `keys`
    /// (the latest row logged for its keys at or before its time).
    #[arg(long, value_enum, default_value_t = JoinOn::RequestId, requires = "from_served_log")]
    join_on: JoinOn,
    /// With --join-on request_id: the label column holding the request id.
    #[arg(long, default_value = "request_id", requires = "from_served_log")]
    request_id_column: String,
    /// With --join-on keys: rows served longer than this (like 1h) before the label time do
    /// not match; default: no bound.
    #[arg(long, requires = "from_served_log")]
    max_age: Option<String>,
    /// The server reads --labels under its labels roots and writes --out in its export
    /// directory (`quiver serve --labels-root`, `--export-dir`).
    #[arg(long, conflicts_with = "flight")]
    server_side: bool,
    /// With --server-side: replace an existing file in the export directory.
    #[arg(long, requires = "server_side")]
    overwrite: bool,
    /// Stream over Arrow Flight and write locally: the default (kept for scripts).
    #[arg(long, hide = true)]
    flight: bool,
    #[command(flatten)]
    server: ServerArg,
}

/// How `--from-served-log` joins label rows to logged rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub(crate) enum JoinOn {
    RequestId,
    Keys,
}

/// The `from_served_log` of `args`, when asked for.
fn from_served_log(args: &ExportArgs) -> Result<Option<v1::ServedLogJoin>> {
    if !args.from_served_log {
        return Ok(None);
    }
    let max_age_micros = match &args.max_age {
        None => 0,
        Some(_) if args.join_on == JoinOn::RequestId => {
            bail!("--max-age applies to --join-on keys only")
        }
        Some(text) => quiver_core::types::parse_duration(text)
            .with_context(|| format!("--max-age `{text}` is not a duration (like 1h)"))?,
    };
    Ok(Some(match args.join_on {
        JoinOn::RequestId => v1::ServedLogJoin {
            join_on: "request_id".into(),
            request_id_column: args.request_id_column.clone(),
            max_age_micros,
        },
        JoinOn::Keys => v1::ServedLogJoin {
            join_on: "keys".into(),
            request_id_column: String::new(),
            max_age_micros,
        },
    }))
}

fn text(path: &Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .with_context(|| format!("{} is not UTF-8", path.display()))
}

/// The export request of `args`: with --server-side, `labels_path` and `output_path` are the
/// paths as given, for the server to resolve under its roots; otherwise neither is set (the
/// labels are uploaded and named by the caller).
pub(crate) fn request(args: &ExportArgs) -> Result<v1::ExportRequest> {
    let selector = match &args.service {
        Some(service) => v1::export_request::Selector::FeatureService(service.clone()),
        None if !args.features.is_empty() => {
            v1::export_request::Selector::Features(v1::FeatureRefs {
                refs: args.features.clone(),
            })
        }
        None => bail!("give --service NAME or --features view:feature,..."),
    };
    let time = |t: &Option<String>, flag: &str| -> Result<i64> {
        match t {
            None => Ok(0),
            Some(text) => parse_rfc3339(text)
                .with_context(|| format!("{flag} `{text}` is not an RFC 3339 time")),
        }
    };
    Ok(v1::ExportRequest {
        selector: Some(selector),
        labels_path: match &args.labels {
            Some(labels) if args.server_side => text(labels)?,
            _ => String::new(),
        },
        timestamp_column: args.timestamp_column.clone(),
        full_names: args.full_names,
        as_known_at: args.as_known_at,
        output_path: if args.server_side {
            text(&args.out)?
        } else {
            String::new()
        },
        overwrite: args.overwrite,
        start_micros: time(&args.start, "--start")?,
        end_micros: time(&args.end, "--end")?,
        from_served_log: from_served_log(args)?,
        ..Default::default()
    })
}

pub(crate) async fn run(args: ExportArgs) -> Result<()> {
    let mut request = request(&args)?;
    let mut clients = connect(&args.server).await?;
    if args.server_side {
        let summary = export_server(&mut clients, request, true).await?;
        println!("{}", summary_text(&summary));
        return Ok(());
    }
    if let Some(labels) = &args.labels {
        let table = super::upload::read_labels(labels)?;
        request.labels_upload = super::upload::upload(&clients.channel, table).await?;
    }
    let rows = export_flight(&clients, request, &args.out).await?;
    println!(
        "Exported {rows} rows over Arrow Flight to {}.",
        args.out.display()
    );
    Ok(())
}

/// Runs a server-side export, following its progress.
pub(crate) async fn export_server(
    clients: &mut Clients,
    request: v1::ExportRequest,
    show: bool,
) -> Result<v1::ExportProgress> {
    let started = Instant::now();
    let bar = indicatif::ProgressBar::new_spinner();
    if !show {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut stream = clients
        .offline
        .export_training_data(request)
        .await?
        .into_inner();
    let mut last = None;
    while let Some(progress) = stream.next().await {
        let progress = progress?;
        bar.set_message(format!(
            "{} rows written, {:.1} s",
            progress.rows,
            started.elapsed().as_secs_f64()
        ));
        if progress.done {
            last = Some(progress);
        }
    }
    bar.finish_and_clear();
    last.context("the export stream ended without a summary")
}

pub(crate) fn summary_text(summary: &v1::ExportProgress) -> String {
    let mut lines = vec![format!(
        "Exported {} rows to {} in {:.2} s.",
        summary.rows,
        summary.output_path,
        summary.elapsed_micros as f64 / 1e6
    )];
    for m in &summary.matched {
        let rate = if summary.rows == 0 {
            0.0
        } else {
            100.0 * m.matched as f64 / summary.rows as f64
        };
        lines.push(format!(
            "  {}: {} of {} label rows matched ({rate:.1} %)",
            m.view, m.matched, summary.rows
        ));
    }
    if summary.spilled_partitions > 0 {
        lines.push(format!(
            "  joined in {} partitions on disk: the views' rows did not fit the server's --offline-memory-limit",
            summary.spilled_partitions
        ));
    }
    if let Some(fp) = summary.metadata.get("quiver.fingerprint") {
        lines.push(format!("  service fingerprint {fp}"));
    }
    lines.join("\n")
}

/// GetFlightInfo + DoGet, writing the stream to `out` as Parquet with the offline store's
/// durable writer (temp file, fsync, rename) and the export's `quiver.*` metadata, which the
/// server sends in `FlightInfo.app_metadata`.
pub(crate) async fn export_flight(
    clients: &Clients,
    mut request: v1::ExportRequest,
    out: &Path,
) -> Result<u64> {
    request.output_path.clear();
    let mut flight = FlightServiceClient::new(clients.channel.clone())
        .max_decoding_message_size(256 * 1024 * 1024);
    let info = flight
        .get_flight_info(FlightDescriptor::new_cmd(request.encode_to_vec()))
        .await?
        .into_inner();
    let metadata = flight_metadata(&info.app_metadata)?;
    let ticket = info
        .endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .context("flight info has no ticket")?;
    let stream = flight.do_get(ticket).await?.into_inner();
    let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(arrow_flight::error::FlightError::from),
    );
    // The file takes the schema of the batches as they arrive; with no batch, the schema
    // announced by GetFlightInfo.
    let first = batches
        .try_next()
        .await
        .context("reading the Arrow Flight stream")?;
    let schema = match &first {
        Some(batch) => batch.schema(),
        None => Arc::new(info.try_decode_schema().context("flight info schema")?),
    };
    let rest =
        batches.map_err(|e| quiver_offline::Error::input_stream("the Arrow Flight stream", e));
    let batches = futures::stream::iter(first.map(Ok)).chain(rest);
    let rows = quiver_offline::write_parquet(schema, batches, out, metadata)
        .await
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(rows)
}

/// The export metadata from `FlightInfo.app_metadata`: a JSON object of strings, in key
/// order (none from a server that sends none).
fn flight_metadata(app_metadata: &[u8]) -> Result<Vec<(String, String)>> {
    if app_metadata.is_empty() {
        return Ok(Vec::new());
    }
    let metadata: BTreeMap<String, String> = serde_json::from_slice(app_metadata)
        .context("the server's FlightInfo.app_metadata is not a JSON object of strings")?;
    Ok(metadata.into_iter().collect())
}
