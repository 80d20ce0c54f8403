//! `quiver-bench`: load generator and data generator for Quiver's benchmarks.
//!
//! - `online`: GetOnlineFeatures against a running server at several concurrencies and batch
//!   sizes, and in the same run the same load against `Echo` (a no-op RPC returning a response
//!   of the same shape and size), reporting QPS and p50/p99/p999 and the ratio between the two.
//!   Bounded by a duration and a request count per cell; loopback only by default.
//! - `gen`: driver-style Parquet data and label sets (see `data.rs`).

mod data;
mod push;
mod soak;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use quiver_proto::v1;
use tonic::transport::Channel;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Online(OnlineArgs),
    Gen(data::GenArgs),
    /// Mixed reads and pushes for a bounded time, per window (see `soak.rs`).
    Soak(soak::SoakArgs),
    /// Durable pushes at several concurrencies and sizes (see `push.rs`).
    Push(push::PushArgs),
}

#[derive(Debug, clap::Args)]
struct OnlineArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    #[arg(long, default_value = "driver_model")]
    service: String,
    #[arg(long, default_value = "driver_id")]
    key: String,
    /// Keys are drawn from [first_key, first_key + keys).
    #[arg(long, default_value_t = 1001)]
    first_key: i64,
    #[arg(long, default_value_t = 10_000)]
    keys: i64,
    #[arg(long, value_delimiter = ',', default_value = "1,32,128")]
    concurrency: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    batch: Vec<usize>,
    /// Seconds per cell (each cell runs until this or --max-requests, whichever comes first).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 200_000)]
    max_requests: u64,
    /// Connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// The server's process id, when it runs on this machine: each cell then reports the
    /// server's CPU time (user + system, from /proc) per request.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rpc {
    Get,
    Echo,
}

#[derive(Debug)]
struct Cell {
    rpc: Rpc,
    concurrency: usize,
    batch: usize,
    requests: u64,
    errors: u64,
    seconds: f64,
    histogram: Histogram<u64>,
    /// The server's CPU microseconds per request (with `--server-pid`).
    server_cpu_us: Option<f64>,
}

impl Cell {
    fn qps(&self) -> f64 {
        self.requests as f64 / self.seconds
    }

    fn ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1_000.0
    }

    fn cpu(&self) -> String {
        self.server_cpu_us
            .map_or_else(|| "-".into(), |us| format!("{us:.0}"))
    }
}

/// CPU seconds (user + system) used so far by process `pid`, from `/proc/PID/stat` (clock
/// ticks of 1/100 s, the Linux default).
fn process_cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("parse /proc stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

fn request(args: &OnlineArgs, batch: usize, seed: &mut u64) -> v1::GetOnlineFeaturesRequest {
    let ids: Vec<i64> = (0..batch)
        .map(|_| {
            // xorshift: cheap, deterministic key choice.
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            args.first_key + (*seed % args.keys as u64) as i64
        })
        .collect();
    v1::GetOnlineFeaturesRequest {
        selector: Some(v1::get_online_features_request::Selector::FeatureService(
            args.service.clone(),
        )),
        entities: vec![v1::NamedColumn {
            name: args.key.clone(),
            column: Some(v1::Column {
                values: Some(v1::column::Values::Int64Values(v1::Int64Values {
                    values: ids,
                })),
                nulls: vec![],
            }),
        }],
        ..Default::default()
    }
}

async fn run_cell(
    args: Arc<OnlineArgs>,
    channels: &[Channel],
    rpc: Rpc,
    concurrency: usize,
    batch: usize,
) -> Result<Cell> {
    let deadline = Duration::from_secs_f64(args.seconds);
    let cpu_before = args.server_pid.map(process_cpu_seconds).transpose()?;
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(args.max_requests));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = v1::online_service_client::OnlineServiceClient::new(
            channels[worker % channels.len()].clone(),
        );
        let (args, budget) = (Arc::clone(&args), Arc::clone(&budget));
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut errors, mut seed) = (0u64, 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1));
            while started.elapsed() < deadline
                && budget
                    .fetch_update(
                        std::sync::atomic::Ordering::Relaxed,
                        std::sync::atomic::Ordering::Relaxed,
                        |b| b.checked_sub(1),
                    )
                    .is_ok()
            {
                let request = request(&args, batch, &mut seed);
                let t = Instant::now();
                let ok = match rpc {
                    Rpc::Get => client.get_online_features(request).await.is_ok(),
                    Rpc::Echo => client.echo(request).await.is_ok(),
                };
                histogram.record(t.elapsed().as_micros().max(1) as u64)?;
                errors += u64::from(!ok);
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let (histogram, errors) = merge_workers(tasks).await?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_after = args.server_pid.map(process_cpu_seconds).transpose()?;
    let server_cpu_us = cpu_before
        .zip(cpu_after)
        .map(|(before, after)| (after - before) * 1e6 / histogram.len().max(1) as f64);
    Ok(Cell {
        rpc,
        concurrency,
        batch,
        requests: histogram.len(),
        errors,
        seconds,
        histogram,
        server_cpu_us,
    })
}

/// A worker's latencies (microseconds) and error count.
type Worker = tokio::task::JoinHandle<Result<(Histogram<u64>, u64)>>;

/// The workers' latencies merged, and their errors summed.
pub(crate) async fn merge_workers(tasks: Vec<Worker>) -> Result<(Histogram<u64>, u64)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0;
    for task in tasks {
        let (h, e) = task.await??;
        histogram.add(h)?;
        errors += e;
    }
    Ok((histogram, errors))
}

async fn online(args: OnlineArgs) -> Result<()> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        channels.push(
            Channel::from_shared(args.server.clone())?
                .connect()
                .await
                .context("connect")?,
        );
    }
    let args = Arc::new(args);
    // Warm up connections and caches.
    run_cell(Arc::clone(&args), &channels, Rpc::Get, 4, 10).await?;
    println!(
        "| concurrency | batch | get QPS | get p50 ms | get p99 ms | get p999 ms | get server CPU us/req | echo QPS | echo p99 ms | echo server CPU us/req | QPS ratio get/echo | errors |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for &concurrency in &args.concurrency {
        for &batch in &args.batch {
            // Interleave: echo, get, so that drift on a shared machine hits both.
            let echo =
                run_cell(Arc::clone(&args), &channels, Rpc::Echo, concurrency, batch).await?;
            let get = run_cell(Arc::clone(&args), &channels, Rpc::Get, concurrency, batch).await?;
            println!(
                "| {} | {} | {:.0} | {:.3} | {:.3} | {:.3} | {} | {:.0} | {:.3} | {} | {:.2} | {} |",
                concurrency,
                batch,
                get.qps(),
                get.ms(0.5),
                get.ms(0.99),
                get.ms(0.999),
                get.cpu(),
                echo.qps(),
                echo.ms(0.99),
                echo.cpu(),
                get.qps() / echo.qps().max(1e-9),
                get.errors + echo.errors
            );
            let json = serde_json::json!({
                "concurrency": concurrency, "batch": batch,
                "get": {"qps": get.qps(), "p50_ms": get.ms(0.5), "p99_ms": get.ms(0.99), "p999_ms": get.ms(0.999), "requests": get.requests, "errors": get.errors, "server_cpu_us": get.server_cpu_us, "rpc": format!("{:?}", get.rpc)},
                "echo": {"qps": echo.qps(), "p50_ms": echo.ms(0.5), "p99_ms": echo.ms(0.99), "p999_ms": echo.ms(0.999), "requests": echo.requests, "errors": echo.errors, "server_cpu_us": echo.server_cpu_us, "rpc": format!("{:?}", echo.rpc)},
                "cell": [get.concurrency, get.batch],
            });
            eprintln!("{json}");
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::Online(args) => online(args).await,
            Command::Gen(args) => data::generate(&args),
            Command::Soak(args) => soak::soak(args).await,
            Command::Push(args) => push::push(args).await,
        }
    })
}
