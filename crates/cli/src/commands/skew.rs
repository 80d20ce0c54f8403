//! `quiver skew` (served values against the point-in-time join at served_at) and `quiver
//! logs` (a service's served-row log, to Parquet or the terminal).

use std::io::Cursor;

use anyhow::{Context, Result, bail};
use arrow::ipc::reader::StreamReader;
use arrow::record_batch::RecordBatch;
use quiver_core::types::{format_duration, parse_duration, parse_rfc3339};
use quiver_proto::v1;
use serde_json::json;

use super::monitor::Format;
use crate::ServerArg;
use crate::client::connect;

#[derive(Debug, clap::Args)]
pub(crate) struct SkewArgs {
    /// The feature service whose served-row log to check.
    #[arg(long)]
    service: String,
    /// Window start (served_at, RFC 3339, inclusive); with --end. Default: the last 24 hours.
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// Window end (RFC 3339, exclusive).
    #[arg(long, requires = "start")]
    end: Option<String>,
    /// Compare at most N logged rows, spread evenly over the window (default: every row).
    #[arg(long)]
    sample: Option<u64>,
    /// Skew on online rows younger than this at serving time that the offline data lacks is
    /// expected (pushed online first); default: the service's `logging.expected_lag`.
    #[arg(long)]
    expected_lag: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    #[command(flatten)]
    server: ServerArg,
}

#[derive(Debug, clap::Args)]
pub(crate) struct LogsArgs {
    /// The feature service whose logged rows to read.
    #[arg(long)]
    service: String,
    /// Window start (served_at, RFC 3339, inclusive).
    #[arg(long)]
    start: String,
    /// Window end (RFC 3339, exclusive).
    #[arg(long)]
    end: String,
    /// Only rows served by this service version (default: all, columns merged by name).
    #[arg(long)]
    version: Option<u32>,
    /// Write the rows to this Parquet file instead of printing them.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
    /// Rows printed without --output.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    #[command(flatten)]
    server: ServerArg,
}

fn at(flag: &str, text: &str) -> Result<i64> {
    parse_rfc3339(text).with_context(|| {
        format!("--{flag} `{text}` is not RFC 3339; write it like 2026-11-01T00:00:00Z")
    })
}

pub(crate) async fn skew(args: SkewArgs) -> Result<()> {
    let (start_micros, end_micros) = match (&args.start, &args.end) {
        (Some(start), Some(end)) => (at("start", start)?, at("end", end)?),
        _ => (0, 0),
    };
    let expected_lag_micros = args
        .expected_lag
        .as_deref()
        .map(|text| {
            parse_duration(text)
                .with_context(|| format!("--expected-lag `{text}` is not a duration (like 10m)"))
        })
        .transpose()?;
    let request = v1::ComputeSkewRequest {
        feature_service: args.service,
        start_micros,
        end_micros,
        sample: args.sample.unwrap_or(0),
        expected_lag_micros,
    };
    let mut clients = connect(&args.server).await?;
    let report = clients.monitoring.compute_skew(request).await?.into_inner();
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&skew_json(&report))?),
        Format::Text => print!("{}", skew_text(&report)),
    }
    Ok(())
}

/// One object per feature.
fn skew_json(report: &v1::ComputeSkewResponse) -> serde_json::Value {
    let features = report.features.iter().map(|f| {
        json!({
            "feature": f.feature,
            "compared": f.compared,
            "matches": f.matches,
            "mismatches": f.mismatches,
            "expected": f.expected,
            "value_differs": f.value_differs,
            "online_present_offline_null": f.online_present_offline_null,
            "online_null_offline_present": f.online_null_offline_present,
            "outside_max_age_offline_value": f.outside_max_age_offline_value,
            "examples": f.examples.iter().map(|e| json!({
                "cause": e.cause,
                "expected": e.expected,
                "key": e.key,
                "served_at_micros": e.served_at_micros,
                "online": e.online,
                "offline": e.offline,
            })).collect::<Vec<_>>(),
        })
    });
    serde_json::Value::Array(features.collect())
}

pub(crate) fn skew_text(report: &v1::ComputeSkewResponse) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let versions: Vec<String> = report
        .service_versions
        .iter()
        .map(|v| v.to_string())
        .collect();
    let _ = writeln!(
        out,
        "service {}: {} logged rows compared (versions {}), expected lag {}",
        report.feature_service,
        report.rows,
        if versions.is_empty() {
            "-".into()
        } else {
            versions.join(", ")
        },
        format_duration(report.expected_lag_micros),
    );
    let _ = writeln!(
        out,
        "{:<32} {:>9} {:>9} {:>10} {:>8} {:>13} {:>12} {:>12} {:>15}",
        "FEATURE",
        "COMPARED",
        "MATCHES",
        "MISMATCHES",
        "EXPECTED",
        "VALUE_DIFFERS",
        "ONLINE_ONLY",
        "OFFLINE_ONLY",
        "OUTSIDE_MAX_AGE"
    );
    for f in &report.features {
        let _ = writeln!(
            out,
            "{:<32} {:>9} {:>9} {:>10} {:>8} {:>13} {:>12} {:>12} {:>15}",
            f.feature,
            f.compared,
            f.matches,
            f.mismatches,
            f.expected,
            f.value_differs,
            f.online_present_offline_null,
            f.online_null_offline_present,
            f.outside_max_age_offline_value
        );
    }
    for f in &report.features {
        for e in &f.examples {
            let kind = if e.expected { "expected" } else { "skew" };
            let _ = writeln!(
                out,
                "  {kind} {} {}: {} at {}us: online {} offline {}",
                f.feature, e.cause, e.key, e.served_at_micros, e.online, e.offline
            );
        }
    }
    out
}

pub(crate) async fn logs(args: LogsArgs) -> Result<()> {
    let request = v1::ReadServedLogRequest {
        feature_service: args.service.clone(),
        start_micros: at("start", &args.start)?,
        end_micros: at("end", &args.end)?,
        version: args.version.unwrap_or(0),
    };
    let mut clients = connect(&args.server).await?;
    let mut stream = clients
        .monitoring
        .read_served_log(request)
        .await?
        .into_inner();
    let mut ipc = Vec::new();
    while let Some(chunk) = stream.message().await? {
        ipc.extend_from_slice(&chunk.arrow_ipc);
    }
    let reader = StreamReader::try_new(Cursor::new(ipc), None).context("the log's Arrow stream")?;
    let schema = reader.schema();
    let batches: Vec<RecordBatch> = reader
        .collect::<Result<_, _>>()
        .context("the log's Arrow stream")?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if let Some(path) = &args.output {
        let stream = futures::stream::iter(batches.into_iter().map(Ok::<_, quiver_offline::Error>));
        let metadata = vec![("quiver.service".to_string(), args.service.clone())];
        quiver_offline::write_parquet(schema, stream, path, metadata)
            .await
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!(
            "wrote {rows} logged rows of {} to {}",
            args.service,
            path.display()
        );
        return Ok(());
    }
    if rows == 0 {
        println!("no rows of {} were logged in the window", args.service);
        return Ok(());
    }
    let shown: Vec<RecordBatch> = limit(&batches, args.limit);
    if shown.is_empty() {
        bail!("--limit 0 prints nothing; give --output to write the rows");
    }
    println!("{}", arrow::util::pretty::pretty_format_batches(&shown)?);
    println!("{rows} logged rows ({} shown)", rows.min(args.limit));
    Ok(())
}

/// The first `n` rows of `batches`.
fn limit(batches: &[RecordBatch], mut n: usize) -> Vec<RecordBatch> {
    let mut out = Vec::new();
    for batch in batches {
        if n == 0 {
            break;
        }
        let take = n.min(batch.num_rows());
        out.push(batch.slice(0, take));
        n -= take;
    }
    out
}
