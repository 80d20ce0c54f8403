//! `quiver quickstart`: a demo project served by an embedded server, walked through every
//! step: apply, list, materialize, online lookup, training export, profile and drift, and
//! the skew of the served rows.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use quiver_core::types::format_rfc3339;
use quiver_proto::v1;
use quiver_server::{FileRoots, ServerOptions, SystemClock};
use tokio_util::sync::CancellationToken;

use crate::ServerArg;
use crate::client::{Clients, connect};
use crate::commands::{export, online, registry, upload};
use crate::demo::{DemoShape, HOUR, write_project};

/// Marks a directory as the quickstart's own, so a rerun may replace it.
const MARKER: &str = ".quiver-quickstart";

#[derive(Debug, clap::Args)]
pub(crate) struct QuickstartArgs {
    /// Directory of the demo project (replaced if it is an earlier quickstart's).
    #[arg(long, default_value = "quiver-quickstart")]
    dir: PathBuf,
}

fn step(title: &str) {
    println!("\n== {title}");
}

pub(crate) async fn run(args: QuickstartArgs) -> Result<()> {
    crate::telemetry::init_logs("warn", crate::config::LogFormat::Text);
    let dir = std::path::absolute(&args.dir)?;
    if dir.exists() {
        if !dir.join(MARKER).exists() && std::fs::read_dir(&dir)?.next().is_some() {
            bail!(
                "{} exists and is not a quickstart directory; pass another --dir",
                dir.display()
            );
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(MARKER), "created by `quiver quickstart`\n")?;
    let now = chrono::Utc::now().timestamp_micros();
    let end = now - now.rem_euclid(HOUR) + HOUR;
    let shape = DemoShape {
        drivers: 50,
        hours: 72,
        end: end - HOUR,
        labels: 1_000,
    };

    step("1. Demo project");
    write_project(&dir, shape)?;
    println!(
        "Wrote {}/data/driver_stats.parquet ({} drivers x {} hourly rows), data/labels.parquet ({} labels), features/driver.yaml",
        dir.display(),
        shape.drivers,
        shape.hours,
        shape.labels
    );

    step("2. Embedded server (data dir + RocksDB + local Parquet)");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    // The demo's sources live in the project directory: that is the one source root.
    let files = FileRoots::defaults(&dir.join("data-dir"), dir.clone());
    let options = ServerOptions::new(dir.join("data-dir"), Arc::new(SystemClock), files);
    let server = tokio::spawn(quiver_server::serve(listener, shutdown.clone(), options));
    let url = format!("http://{addr}");
    println!("Serving gRPC + Arrow Flight on {url}");
    let result = walk_through(&url, &dir, shape).await;
    shutdown.cancel();
    server.await.context("server task")??;
    result?;
    println!(
        "\nDone. Run it yourself: `quiver serve --data-dir {0}/data-dir --source-root {0}` then `quiver apply -f {0}/features`, `quiver get --service driver_model --entity driver_id=1001`.",
        dir.display()
    );
    Ok(())
}

async fn walk_through(url: &str, dir: &std::path::Path, shape: DemoShape) -> Result<()> {
    let mut clients = connect(&ServerArg::local(url)).await?;
    let files = registry::manifest_files(&dir.join("features"))?;

    step("3. Plan and apply the manifests");
    let (plan, applied) = registry::plan_and_apply(&mut clients, files, false, None).await?;
    println!("{}", registry::render_changes(&plan.changes));
    let version = applied.map_or(plan.base_version, |a| a.registry_version);
    println!("Applied: registry version {version}.");

    step("4. Materialize the last 72 hours into RocksDB");
    let start = shape.end - shape.hours * HOUR;
    let end = chrono::Utc::now().timestamp_micros();
    println!(
        "quiver materialize --start {} --end {}",
        format_rfc3339(start),
        format_rfc3339(end)
    );
    online::run_job(
        &mut clients,
        v1::StartMaterializationRequest {
            views: vec![],
            start_micros: start,
            end_micros: end,
            incremental: false,
        },
        true,
    )
    .await?;

    step("5. Online lookup (driver 1004 has a gap longer than the 2h TTL; 9999 is unknown)");
    println!("quiver get --service driver_model --entity driver_id=1001,1002,1004,9999");
    online_lookup(&mut clients).await?;

    step("6. Point-in-time correct training export (labels uploaded, result streamed back)");
    println!(
        "quiver export --service driver_model --labels {0}/data/labels.parquet --out {0}/train.parquet",
        dir.display()
    );
    let started = std::time::Instant::now();
    let labels = upload::read_labels(&dir.join("data/labels.parquet"))?;
    let request = v1::ExportRequest {
        selector: Some(v1::export_request::Selector::FeatureService(
            "driver_model".into(),
        )),
        labels_upload: upload::upload(&clients.channel, labels).await?,
        ..Default::default()
    };
    let out = dir.join("train.parquet");
    let rows = export::export_flight(&clients, request, &out).await?;
    println!(
        "Exported {rows} rows to {} in {:.2} s.",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    monitoring(&mut clients, &out, start, end).await?;
    skew(&mut clients).await
}

/// Step 8: the rows served in step 5 were logged; check them against the training join.
async fn skew(clients: &mut Clients) -> Result<()> {
    step("8. Training/serving skew: served values against the join at served_at");
    println!("quiver skew --service driver_model");
    let request = v1::ComputeSkewRequest {
        feature_service: "driver_model".into(),
        ..Default::default()
    };
    let report = clients.monitoring.compute_skew(request).await?.into_inner();
    print!("{}", super::skew::skew_text(&report));
    println!(
        "\nThe rows are Parquet under the data dir's served_log/ (`quiver logs` reads them); \
         the server repeats this check every hour (`logging.skew_check`) and exports \
         quiver_skew_rate to Prometheus."
    );
    Ok(())
}

/// Step 7: a profile of the served features, and their drift against the export's profile.
async fn monitoring(
    clients: &mut Clients,
    export: &std::path::Path,
    start: i64,
    end: i64,
) -> Result<()> {
    step("7. Monitoring: profile the features, score drift against the training export");
    let (from, to) = (format_rfc3339(start), format_rfc3339(end));
    println!("quiver profile --service driver_model --start {from} --end {to}");
    let request = v1::ComputeProfileRequest {
        subject: Some(v1::compute_profile_request::Subject::Service(
            "driver_model".into(),
        )),
        start_micros: start,
        end_micros: end,
    };
    let profile = clients
        .monitoring
        .compute_profile(request)
        .await?
        .into_inner();
    if let Some(profile) = &profile.profile {
        println!("{}", super::monitor_format::profile_table(profile));
    }
    println!(
        "\nquiver drift --service driver_model --reference export:{} --current window:{from}..{to}",
        export.display()
    );
    let source = |source| {
        Some(v1::ProfileSource {
            source: Some(source),
        })
    };
    let request = v1::ComputeDriftRequest {
        subject: Some(v1::compute_drift_request::Subject::Service(
            "driver_model".into(),
        )),
        reference: source(v1::profile_source::Source::ProfileId(
            super::monitor::export_profile_id(export)?,
        )),
        current: source(v1::profile_source::Source::Window(v1::TimeWindow {
            start_micros: start,
            end_micros: end,
        })),
    };
    let report = clients
        .monitoring
        .compute_drift(request)
        .await?
        .into_inner();
    println!("{}", super::monitor_format::drift_table(&report));
    println!(
        "\nThe server repeats this check every hour (`monitoring.schedule` in the manifest) and \
         exports the scores to Prometheus (quiver_drift_score, quiver_drift_status)."
    );
    Ok(())
}

/// Step 5: four drivers through `driver_model`, printed with each value's status.
async fn online_lookup(clients: &mut Clients) -> Result<()> {
    let request = v1::GetOnlineFeaturesRequest {
        selector: Some(v1::get_online_features_request::Selector::FeatureService(
            "driver_model".into(),
        )),
        entities: vec![v1::NamedColumn {
            name: "driver_id".into(),
            column: Some(v1::Column {
                values: Some(v1::column::Values::Int64Values(v1::Int64Values {
                    values: vec![1001, 1002, 1004, 9999],
                })),
                nulls: vec![],
            }),
        }],
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let response = clients
        .online
        .get_online_features(request)
        .await?
        .into_inner();
    let elapsed = started.elapsed();
    for feature in &response.features {
        let statuses: Vec<&str> = feature
            .statuses
            .iter()
            .map(|s| {
                online::status_name(
                    v1::FeatureStatus::try_from(*s).unwrap_or(v1::FeatureStatus::Unspecified),
                )
            })
            .collect();
        println!("  {:<16} {}", feature.name, statuses.join(", "));
    }
    println!(
        "  (service driver_model@{} fingerprint {}, round trip {:.2} ms)",
        response.feature_service_version,
        response.fingerprint,
        elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}
