//! `quiver-bench soak`: mixed online reads and pushes against a running server for a bounded
//! time, reported per window (rates, p99s, errors, the server's RSS), then a summary: total
//! errors and RSS drift from the end of the first window (warm) to the end.
//!
//! The server must serve view `clicks` of `benches/push_rss.yaml` (benches/soak.sh sets it up).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use quiver_proto::v1;
use tonic::transport::Channel;

#[derive(Debug, clap::Args)]
pub(crate) struct SoakArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The server's process id, to read its RSS from /proc.
    #[arg(long)]
    server_pid: u32,
    #[arg(long, default_value_t = 600)]
    seconds: u64,
    /// Seconds per reported window.
    #[arg(long, default_value_t = 30)]
    window: u64,
    #[arg(long, default_value_t = 8)]
    readers: usize,
    #[arg(long, default_value_t = 2)]
    writers: usize,
    /// Entities per read and rows per push.
    #[arg(long, default_value_t = 10)]
    batch: usize,
    #[arg(long, default_value_t = 10_000)]
    keys: i64,
    /// Every Nth push also goes to the offline log (one Parquet file each); the rest online.
    #[arg(long, default_value_t = 100)]
    offline_every: u64,
}

/// What one worker measured since the last window.
#[derive(Debug)]
struct Tally {
    histogram: Histogram<u64>,
    errors: u64,
}

fn tally() -> Result<Tally> {
    Ok(Tally {
        histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        errors: 0,
    })
}

fn next_key(seed: &mut u64, keys: i64) -> i64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % keys as u64) as i64
}

fn int64s(values: Vec<i64>) -> Option<v1::Column> {
    Some(v1::Column {
        values: Some(v1::column::Values::Int64Values(v1::Int64Values { values })),
        nulls: vec![],
    })
}

fn named(name: &str, column: Option<v1::Column>) -> v1::NamedColumn {
    v1::NamedColumn {
        name: name.into(),
        column,
    }
}

fn read(ids: Vec<i64>) -> v1::GetOnlineFeaturesRequest {
    v1::GetOnlineFeaturesRequest {
        selector: Some(v1::get_online_features_request::Selector::Features(
            v1::FeatureRefs {
                refs: ["clicks:a", "clicks:b", "clicks:s"]
                    .map(String::from)
                    .to_vec(),
            },
        )),
        entities: vec![named("user_id", int64s(ids))],
        ..Default::default()
    }
}

pub(crate) fn push(ids: Vec<i64>, offline: bool) -> v1::PushRequest {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    let n = ids.len();
    let column = |values| {
        Some(v1::Column {
            values: Some(values),
            nulls: vec![],
        })
    };
    v1::PushRequest {
        target: Some(v1::push_request::Target::FeatureView("clicks".into())),
        columns: vec![
            named("a", int64s(ids.clone())),
            named("user_id", int64s(ids.clone())),
            named(
                "event_timestamp",
                column(v1::column::Values::TimestampValues(v1::TimestampValues {
                    micros: vec![now; n],
                })),
            ),
            named(
                "b",
                column(v1::column::Values::DoubleValues(v1::DoubleValues {
                    values: ids.iter().map(|i| *i as f64 / 2.0).collect(),
                })),
            ),
            named(
                "s",
                column(v1::column::Values::StringValues(v1::StringValues {
                    values: ids.iter().map(|i| format!("value-{i}")).collect(),
                })),
            ),
        ],
        mode: if offline {
            v1::PushMode::OnlineAndOffline
        } else {
            v1::PushMode::Online
        } as i32,
    }
}

/// The server's resident set in MiB (VmRSS).
fn rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("no process {pid}"))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")?;
    Ok(kib / 1024.0)
}

/// Starts one worker; it runs until `deadline`, adding to its own tally.
fn spawn_worker(
    channel: Channel,
    args: Arc<SoakArgs>,
    worker: usize,
    writer: bool,
    deadline: Instant,
) -> Result<Arc<Mutex<Tally>>> {
    let shared = Arc::new(Mutex::new(tally()?));
    let mine = Arc::clone(&shared);
    tokio::spawn(async move {
        let mut client = v1::online_service_client::OnlineServiceClient::new(channel);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (worker as u64 + 1);
        let mut n = 0u64;
        while Instant::now() < deadline {
            let ids: Vec<i64> = (0..args.batch)
                .map(|_| next_key(&mut seed, args.keys))
                .collect();
            let started = Instant::now();
            let ok = if writer {
                n += 1;
                let offline = args.offline_every > 0 && n.is_multiple_of(args.offline_every);
                client.push(push(ids, offline)).await.is_ok()
            } else {
                client.get_online_features(read(ids)).await.is_ok()
            };
            let micros = started.elapsed().as_micros().max(1) as u64;
            if let Ok(mut tally) = mine.lock() {
                let _ = tally.histogram.record(micros);
                tally.errors += u64::from(!ok);
            }
        }
    });
    Ok(shared)
}

/// Takes and resets the tallies of `workers`, merged.
fn take(workers: &[Arc<Mutex<Tally>>]) -> Result<Tally> {
    let mut merged = tally()?;
    for worker in workers {
        let mut guard = worker.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let taken = std::mem::replace(&mut *guard, tally()?);
        merged.histogram.add(taken.histogram)?;
        merged.errors += taken.errors;
    }
    Ok(merged)
}

pub(crate) async fn soak(args: SoakArgs) -> Result<()> {
    let channel = Channel::from_shared(args.server.clone())?
        .connect()
        .await
        .context("connect")?;
    let args = Arc::new(args);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut readers = Vec::new();
    let mut writers = Vec::new();
    for worker in 0..args.readers {
        readers.push(spawn_worker(
            channel.clone(),
            Arc::clone(&args),
            worker,
            false,
            deadline,
        )?);
    }
    for worker in 0..args.writers {
        writers.push(spawn_worker(
            channel.clone(),
            Arc::clone(&args),
            1000 + worker,
            true,
            deadline,
        )?);
    }
    println!("| t s | gets/s | get p99 ms | pushes/s | push p99 ms | errors | server RSS MiB |");
    println!("|---|---|---|---|---|---|---|");
    let (mut errors, mut first_rss, mut last_rss) = (0u64, None, 0.0);
    let (mut worst_get_p99, mut worst_push_p99) = (0.0f64, 0.0f64);
    let mut window_end = started;
    while window_end < deadline {
        window_end = (window_end + Duration::from_secs(args.window)).min(deadline);
        tokio::time::sleep_until(window_end.into()).await;
        let seconds = args.window as f64;
        let (gets, pushes) = (take(&readers)?, take(&writers)?);
        let rss = rss_mib(args.server_pid)?;
        first_rss.get_or_insert(rss);
        last_rss = rss;
        let p99 = |t: &Tally| t.histogram.value_at_quantile(0.99) as f64 / 1_000.0;
        worst_get_p99 = worst_get_p99.max(p99(&gets));
        worst_push_p99 = worst_push_p99.max(p99(&pushes));
        errors += gets.errors + pushes.errors;
        println!(
            "| {:.0} | {:.0} | {:.3} | {:.0} | {:.3} | {} | {:.1} |",
            (window_end - started).as_secs_f64(),
            gets.histogram.len() as f64 / seconds,
            p99(&gets),
            pushes.histogram.len() as f64 / seconds,
            p99(&pushes),
            gets.errors + pushes.errors,
            rss
        );
    }
    let first = first_rss.unwrap_or(last_rss);
    println!();
    println!(
        "Summary: {} s, {errors} errors, worst window p99: get {worst_get_p99:.3} ms, push {worst_push_p99:.3} ms; server RSS {first:.1} MiB after the first window, {last_rss:.1} MiB at the end: drift {:+.1} %",
        args.seconds,
        (last_rss - first) / first * 100.0
    );
    Ok(())
}
