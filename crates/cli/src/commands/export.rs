//! `quiver export`: point-in-time training data to Parquet, written by the server, or streamed
//! over Arrow Flight (`--flight`) and written here.

use std::path::{Path, PathBuf};
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
pub struct ExportArgs {
    /// Feature service, `name` or `name@N`.
    #[arg(long, conflicts_with = "features")]
    service: Option<String>,
    /// Feature refs `view:feature`, comma separated.
    #[arg(long, value_delimiter = ',')]
    features: Vec<String>,
    /// Label table: Parquet file, directory or glob (read by the server).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Output Parquet file.
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
    /// Entity-less retrieval window start (RFC 3339), with --end and no --labels.
    #[arg(long)]
    start: Option<String>,
    #[arg(long)]
    end: Option<String>,
    /// Stream the result over Arrow Flight and write the file locally.
    #[arg(long)]
    flight: bool,
    #[command(flatten)]
    server: ServerArg,
}

fn absolute(path: &Path) -> Result<String> {
    Ok(std::path::absolute(path)
        .with_context(|| format!("bad path {}", path.display()))?
        .to_string_lossy()
        .into_owned())
}

pub fn request(args: &ExportArgs) -> Result<v1::ExportRequest> {
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
        labels_path: args
            .labels
            .as_deref()
            .map(absolute)
            .transpose()?
            .unwrap_or_default(),
        timestamp_column: args.timestamp_column.clone(),
        full_names: args.full_names,
        as_known_at: args.as_known_at,
        output_path: absolute(&args.out)?,
        start_micros: time(&args.start, "--start")?,
        end_micros: time(&args.end, "--end")?,
        ..Default::default()
    })
}

pub async fn run(args: ExportArgs) -> Result<()> {
    let request = request(&args)?;
    let mut clients = connect(&args.server.server).await?;
    if args.flight {
        let rows = export_flight(&clients, request, &args.out).await?;
        println!(
            "Exported {rows} rows over Arrow Flight to {}.",
            args.out.display()
        );
        return Ok(());
    }
    let summary = export_server(&mut clients, request, true).await?;
    println!("{}", summary_text(&summary));
    Ok(())
}

/// Runs a server-side export, following its progress.
pub async fn export_server(
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

pub fn summary_text(summary: &v1::ExportProgress) -> String {
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
    if let Some(fp) = summary.metadata.get("quiver.fingerprint") {
        lines.push(format!("  service fingerprint {fp}"));
    }
    lines.join("\n")
}

/// GetFlightInfo + DoGet, writing the stream to `out` as Parquet.
pub async fn export_flight(
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
    let ticket = info
        .endpoint
        .first()
        .and_then(|e| e.ticket.clone())
        .context("flight info has no ticket")?;
    let stream = flight.do_get(ticket).await?.into_inner();
    let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream.map_err(arrow_flight::error::FlightError::from),
    );
    let file =
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut writer: Option<parquet::arrow::ArrowWriter<std::fs::File>> = None;
    let mut file = Some(file);
    let mut rows = 0u64;
    while let Some(batch) = batches.try_next().await? {
        if writer.is_none() {
            let f = file.take().context("output file already used")?;
            writer = Some(parquet::arrow::ArrowWriter::try_new(
                f,
                batch.schema(),
                None,
            )?);
        }
        if let Some(w) = writer.as_mut() {
            w.write(&batch)?;
        }
        rows += batch.num_rows() as u64;
    }
    match writer {
        Some(w) => {
            w.close()?;
        }
        None => {
            let schema = info
                .clone()
                .try_decode_schema()
                .context("flight info schema")?;
            let f = file.take().context("output file already used")?;
            parquet::arrow::ArrowWriter::try_new(f, std::sync::Arc::new(schema), None)?.close()?;
        }
    }
    Ok(rows)
}
