//! Served-row logging: what GetOnlineFeatures served for a sample of entity keys, written to
//! Parquet under `<data dir>/served_log/` (layout in `quiver_offline::ServedLogDir`).
//!
//! The request path only samples (by key hash, `quiver_core::logging`), copies the sampled
//! rows and offers them to a queue bounded in rows (`--served-log-queue-rows`); when the queue
//! is full the rows are dropped and counted, the request never waits. One thread
//! ([`writer`]) encodes, writes, rotates (size, age, day, service version, flush, shutdown:
//! each rotation fsyncs) and applies the retention. A crash loses the rows of files not yet
//! rotated.

mod checks;
mod entry;
mod export;
mod layout;
mod metrics;
mod read;
mod skew;
mod writer;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use quiver_core::RegistryState;
use quiver_core::logging::sample_threshold;
use quiver_core::model::Kind;
use quiver_core::registry::ObjectHistory;
use quiver_core::types::Micros;
use quiver_offline::ServedLogDir;

use crate::error::{Error, Result};
use crate::online_read::{OnlineRead, ViewRead};
use crate::options::Clock;
use crate::registry::Registry;
use quiver_core::value::KeyValue;

pub(crate) use checks::SkewChecks;
pub(crate) use export::LogExport;
pub use export::{FromServedLog, LogJoinOn};
pub(crate) use skew::{SkewReport, SkewRequest};

/// The server's served-row log settings (the service's `logging:` block picks the rate).
#[derive(Debug, Clone, PartialEq)]
pub struct ServedLogOptions {
    /// The sample rate of services that declare no `logging:` block.
    pub default_sample_rate: f64,
    /// Most bytes (in memory, roughly) logged per second; more are dropped and counted. 0: no bound.
    pub max_bytes_per_second: u64,
    /// Most sampled rows waiting for the writer; more are dropped and counted.
    pub queue_rows: u64,
    /// A log file is rotated (made durable) once it holds this many encoded bytes...
    pub rotate_bytes: u64,
    /// ...or once it is this old.
    pub rotate_interval: Duration,
    /// How long log files are kept (whole UTC days); None: forever.
    pub retention: Option<Duration>,
}

impl Default for ServedLogOptions {
    fn default() -> Self {
        ServedLogOptions {
            default_sample_rate: 0.0,
            max_bytes_per_second: 16 * 1024 * 1024,
            queue_rows: 100_000,
            rotate_bytes: 64 * 1024 * 1024,
            rotate_interval: Duration::from_secs(300),
            retention: Some(Duration::from_secs(30 * 24 * 3600)),
        }
    }
}

/// The served-row log: the request side of the queue and the writer thread's handle.
#[derive(Debug)]
pub(crate) struct ServedLog {
    dir: ServedLogDir,
    sender: Sender<writer::Message>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    queued: Arc<AtomicUsize>,
    queue_rows: usize,
    default_threshold: u64,
    metrics: metrics::LogMetrics,
}

impl ServedLog {
    /// Removes what a crash left unfinished and starts the writer thread.
    pub(crate) fn open(
        data_dir: &std::path::Path,
        options: &ServedLogOptions,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
    ) -> Result<ServedLog> {
        if let Some(problem) =
            quiver_core::logging::LoggingSpec::rate_problem(options.default_sample_rate)
        {
            return Err(Error::FailedPrecondition(format!(
                "--served-log-sample-rate: {problem}"
            )));
        }
        let dir = ServedLogDir::new(data_dir);
        let removed = dir.remove_unfinished()?;
        if removed > 0 {
            tracing::warn!(
                files = removed,
                "unrotated served-row log files of a crash removed (their rows are lost)"
            );
        }
        let metrics = metrics::LogMetrics::new()?;
        let queued = Arc::new(AtomicUsize::new(0));
        let (sender, receiver) = std::sync::mpsc::channel();
        let writer = writer::Writer::new(
            dir.clone(),
            registry,
            clock,
            options.clone(),
            metrics.clone(),
            Arc::clone(&queued),
        );
        let thread = std::thread::Builder::new()
            .name("quiver-served-log".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| Error::Internal(format!("served-row log thread: {e}")))?;
        Ok(ServedLog {
            dir,
            sender,
            thread: Mutex::new(Some(thread)),
            queued,
            queue_rows: usize::try_from(options.queue_rows).unwrap_or(usize::MAX),
            default_threshold: sample_threshold(options.default_sample_rate),
            metrics,
        })
    }

    pub(crate) fn dir(&self) -> &ServedLogDir {
        &self.dir
    }

    /// The log's metric families; `registry` names the services logged (a `logging:` rate
    /// above 0, or the default rate), whose series exist from 0.
    pub(crate) fn collectors(&self, registry: Arc<Registry>) -> Vec<Box<dyn Collector>> {
        let default_threshold = self.default_threshold;
        let logged = move || {
            let snapshot = registry.snapshot();
            snapshot
                .list(Kind::FeatureService)
                .filter(|(history, _)| threshold(history, default_threshold) > 0)
                .map(|(history, _)| history.name.clone())
                .collect()
        };
        vec![self.metrics.collector(Box::new(logged))]
    }

    /// On the request path, before the response is built: which rows of `read` are logged
    /// (`None` when none are: not a service, rate 0, or no key sampled).
    pub(crate) fn sample(
        &self,
        registry: &RegistryState,
        read: &OnlineRead,
    ) -> Option<entry::Sampled> {
        let service = read.selection.service.as_ref()?;
        let threshold = registry
            .history(Kind::FeatureService, &service.name)
            .map_or(self.default_threshold, |h| {
                threshold(h, self.default_threshold)
            });
        if threshold == 0 {
            return None;
        }
        let rows = entry::sampled_rows(read, threshold);
        if rows.as_ref().is_some_and(Vec::is_empty) {
            return None;
        }
        Some(entry::Sampled {
            service: Arc::from(service.name.as_str()),
            version: service.version,
            rows,
        })
    }

    /// On the request path, after the response is built: queues the `sampled` rows of the
    /// read's `keys` (taken from it) and `views` (with each view's selected feature
    /// positions).
    pub(crate) fn record(
        &self,
        sampled: entry::Sampled,
        keys: Vec<Vec<Vec<KeyValue>>>,
        views: (Vec<ViewRead>, Vec<Vec<usize>>),
        request_id: Arc<str>,
        served_at: Micros,
    ) {
        self.submit(entry::LogEntry::new(
            sampled, keys, views, request_id, served_at,
        ));
    }

    /// Queues `entry` unless the queue is full (then its rows are counted as dropped).
    fn submit(&self, entry: entry::LogEntry) {
        let rows = entry.rows;
        let before = self.queued.fetch_add(rows, Ordering::AcqRel);
        if before + rows > self.queue_rows {
            self.queued.fetch_sub(rows, Ordering::AcqRel);
            self.metrics
                .dropped(&entry.service, metrics::DropReason::QueueFull, rows);
            return;
        }
        let service = Arc::clone(&entry.service);
        if self.sender.send(writer::Message::Entry(entry)).is_err() {
            // The writer has stopped (shutdown): the rows cannot be logged any more.
            self.queued.fetch_sub(rows, Ordering::AcqRel);
            self.metrics
                .dropped(&service, metrics::DropReason::Error, rows);
        }
    }

    /// Blocking: makes every row of `service` queued so far durable and visible in the files.
    pub(crate) fn flush(&self, service: &str) -> Result<()> {
        let (answer, answered) = std::sync::mpsc::channel();
        self.sender
            .send(writer::Message::Flush(service.to_string(), answer))
            .map_err(|_| Error::FailedPrecondition("the served-row log has stopped".into()))?;
        answered
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| Error::Internal("the served-row log writer did not answer".into()))?
    }

    /// Blocking: rotates every open file and stops the writer (at shutdown).
    pub(crate) fn shutdown(&self) {
        let _ = self.sender.send(writer::Message::Stop);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the served-row log writer panicked");
        }
    }
}

/// The sampling threshold of a service: its `logging.sample_rate`'s, else the default's.
fn threshold(service: &ObjectHistory, default_threshold: u64) -> u64 {
    service
        .metadata
        .logging
        .map_or(default_threshold, |l| sample_threshold(l.sample_rate))
}
