//! `quiver-bench push`: durable pushes to the view `clicks` of `benches/push_rss.yaml` at
//! several concurrencies and rows per push, for a bounded time per cell. Every push carries
//! fresh user ids, so every row is written (none loses to a stored row).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use quiver_proto::v1;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub(crate) struct PushArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    concurrency: Vec<usize>,
    /// Rows per push.
    #[arg(long, value_delimiter = ',', default_value = "1,1000")]
    rows: Vec<usize>,
    /// Also append to the offline push log (the default); `--online-only` pushes online only.
    #[arg(long)]
    online_only: bool,
    /// Seconds per cell (each cell runs until this or --max-pushes, whichever comes first).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    #[arg(long, default_value_t = 200_000)]
    max_pushes: u64,
    /// Connections shared by the workers.
    #[arg(long, default_value_t = 4)]
    connections: usize,
}

struct Cell {
    pushes: u64,
    errors: u64,
    seconds: f64,
    histogram: Histogram<u64>,
}

impl Cell {
    fn ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1_000.0
    }
}

async fn run_cell(
    args: &Arc<PushArgs>,
    channels: &[Channel],
    next_id: &Arc<AtomicI64>,
    (concurrency, rows): (usize, usize),
) -> Result<Cell> {
    let deadline = Duration::from_secs_f64(args.seconds);
    let budget = Arc::new(AtomicU64::new(args.max_pushes));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let mut client = v1::online_service_client::OnlineServiceClient::new(
            channels[worker % channels.len()].clone(),
        );
        let (args, budget, next_id) = (Arc::clone(args), Arc::clone(&budget), Arc::clone(next_id));
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut errors = 0u64;
            while started.elapsed() < deadline
                && budget
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                    .is_ok()
            {
                let first = next_id.fetch_add(rows as i64, Ordering::Relaxed);
                let request =
                    crate::soak::push((first..first + rows as i64).collect(), !args.online_only);
                let t = Instant::now();
                let ok = client.push(request).await.is_ok();
                histogram.record(t.elapsed().as_micros().max(1) as u64)?;
                errors += u64::from(!ok);
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let (histogram, errors) = crate::merge_workers(tasks).await?;
    Ok(Cell {
        pushes: histogram.len(),
        errors,
        seconds: started.elapsed().as_secs_f64(),
        histogram,
    })
}

pub(crate) async fn push(args: PushArgs) -> Result<()> {
    let mut channels = Vec::new();
    for _ in 0..args.connections.max(1) {
        let channel = Channel::from_shared(args.server.clone())?.connect().await;
        channels.push(channel.context("connect")?);
    }
    let args = Arc::new(args);
    let next_id = Arc::new(AtomicI64::new(1));
    println!("| concurrency | rows/push | pushes/s | rows/s | p50 ms | p99 ms | errors |");
    println!("|---|---|---|---|---|---|---|");
    for &concurrency in &args.concurrency {
        for &rows in &args.rows {
            let cell = run_cell(&args, &channels, &next_id, (concurrency, rows)).await?;
            let pushes_per_s = cell.pushes as f64 / cell.seconds;
            println!(
                "| {concurrency} | {rows} | {pushes_per_s:.0} | {:.0} | {:.3} | {:.3} | {} |",
                pushes_per_s * rows as f64,
                cell.ms(0.5),
                cell.ms(0.99),
                cell.errors
            );
            let json = serde_json::json!({
                "concurrency": concurrency, "rows": rows, "pushes_per_s": pushes_per_s,
                "rows_per_s": pushes_per_s * rows as f64, "p50_ms": cell.ms(0.5),
                "p99_ms": cell.ms(0.99), "pushes": cell.pushes, "errors": cell.errors,
                "offline": !args.online_only,
            });
            eprintln!("{json}");
        }
    }
    Ok(())
}
