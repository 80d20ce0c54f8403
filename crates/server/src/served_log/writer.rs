//! The served-row log's writer: one thread that takes entries off the queue, encodes them a
//! group at a time into the open file of their service, rotates files (by size, by age, at a
//! new day or service version, on flush and at shutdown) and applies the retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::time::{Duration, Instant};

use quiver_offline::{ServedLogDir, ServedLogFile};

use super::ServedLogOptions;
use super::entry::LogEntry;
use super::layout::Layout;
use super::metrics::{DropReason, LogMetrics};
use crate::error::Result;
use crate::options::Clock;
use crate::registry::Registry;

/// How often the thread wakes to drain the queue (and to rotate aged files).
const TICK: Duration = Duration::from_millis(100);
/// How often the retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

pub(crate) enum Message {
    Entry(LogEntry),
    /// Rotate the service's open file now; the answer says whether that worked.
    Flush(String, Sender<Result<()>>),
    Stop,
}

struct OpenFile {
    file: ServedLogFile,
    version: u32,
    day: i64,
    rows: u64,
    opened: Instant,
}

pub(crate) struct Writer {
    pub(crate) dir: ServedLogDir,
    pub(crate) registry: Arc<Registry>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) options: ServedLogOptions,
    pub(crate) metrics: LogMetrics,
    pub(crate) queued: Arc<AtomicUsize>,
    layouts: HashMap<(Arc<str>, u32), Option<Arc<Layout>>>,
    open: HashMap<Arc<str>, OpenFile>,
    /// Bytes taken in the current second, and when it started.
    rate: (Instant, u64),
    retained: Option<Instant>,
}

const DAY: i64 = 86_400_000_000;

/// (service, version, UTC day): the rows of one log file.
type GroupKey = (Arc<str>, u32, i64);

impl Writer {
    pub(crate) fn new(
        dir: ServedLogDir,
        registry: Arc<Registry>,
        clock: Arc<dyn Clock>,
        options: ServedLogOptions,
        metrics: LogMetrics,
        queued: Arc<AtomicUsize>,
    ) -> Writer {
        Writer {
            dir,
            registry,
            clock,
            options,
            metrics,
            queued,
            layouts: HashMap::new(),
            open: HashMap::new(),
            rate: (Instant::now(), 0),
            retained: None,
        }
    }

    /// Runs until [`Message::Stop`] (or every sender is gone), then rotates every open file.
    /// It wakes every [`TICK`] and drains the queue, rather than waking per entry: the
    /// request path's sends then never wake a thread, and a tick's entries of a service
    /// are encoded as one batch.
    pub(crate) fn run(mut self, messages: Receiver<Message>) {
        loop {
            std::thread::sleep(TICK);
            let mut entries = Vec::new();
            let stop = loop {
                match messages.try_recv() {
                    Ok(Message::Entry(entry)) => entries.push(entry),
                    Ok(Message::Flush(service, answer)) => {
                        // What came before the flush is written first.
                        self.write(std::mem::take(&mut entries));
                        // The asker may have given up; nothing to do then.
                        let _ = answer.send(self.rotate(&service));
                    }
                    Ok(Message::Stop) | Err(TryRecvError::Disconnected) => break true,
                    Err(TryRecvError::Empty) => break false,
                }
            };
            self.write(entries);
            if stop {
                break;
            }
            self.rotate_aged();
            self.retain_if_due();
        }
        let services: Vec<Arc<str>> = self.open.keys().cloned().collect();
        for service in services {
            let _ = self.rotate(&service);
        }
    }

    fn write(&mut self, entries: Vec<LogEntry>) {
        if entries.is_empty() {
            return;
        }
        let taken: usize = entries.iter().map(|e| e.rows).sum();
        self.queued.fetch_sub(taken, Ordering::AcqRel);
        self.metrics
            .queued
            .set(self.queued.load(Ordering::Acquire) as i64);
        // Groups of one service version and day, in arrival order.
        let mut groups: Vec<(GroupKey, Vec<LogEntry>)> = Vec::new();
        for entry in entries {
            if !self.within_rate(&entry) {
                self.metrics
                    .dropped(&entry.service, DropReason::RateLimit, entry.rows);
                continue;
            }
            let key = (
                Arc::clone(&entry.service),
                entry.version,
                entry.served_at.div_euclid(DAY),
            );
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, group)) => group.push(entry),
                None => groups.push((key, vec![entry])),
            }
        }
        for ((service, version, day), group) in groups {
            let rows: usize = group.iter().map(|e| e.rows).sum();
            if let Err(error) = self.write_group(&service, version, day, &group) {
                tracing::error!(%service, version, %error, rows, "served-row log write failed; rows dropped");
                self.metrics.dropped(&service, DropReason::Error, rows);
            }
        }
    }

    /// Whether `entry` fits this second's byte budget (taking it if so).
    fn within_rate(&mut self, entry: &LogEntry) -> bool {
        let limit = self.options.max_bytes_per_second;
        if limit == 0 {
            return true;
        }
        if self.rate.0.elapsed() >= Duration::from_secs(1) {
            self.rate = (Instant::now(), 0);
        }
        if self.rate.1 + entry.bytes as u64 > limit {
            return false;
        }
        self.rate.1 += entry.bytes as u64;
        true
    }

    fn write_group(
        &mut self,
        service: &Arc<str>,
        version: u32,
        day: i64,
        group: &[LogEntry],
    ) -> Result<()> {
        let Some(layout) = self.layout(service, version) else {
            return Err(crate::error::Error::FailedPrecondition(format!(
                "feature service {service}@{version} cannot be logged (see the earlier error)"
            )));
        };
        let batch = layout.batch(group)?;
        let stale = self
            .open
            .get(service)
            .is_some_and(|f| f.version != version || f.day != day);
        if stale {
            self.rotate(service)?;
        }
        if !self.open.contains_key(service) {
            let first = group.first().map_or(0, |e| e.served_at);
            let metadata = vec![
                ("quiver.service".to_string(), service.to_string()),
                ("quiver.service_version".to_string(), version.to_string()),
                ("quiver.fingerprint".to_string(), layout.fingerprint.clone()),
            ];
            let file = self.dir.create(
                service,
                version,
                first,
                Arc::clone(&layout.schema),
                metadata,
            )?;
            let opened = Instant::now();
            let open = OpenFile {
                file,
                version,
                day,
                rows: 0,
                opened,
            };
            self.open.insert(Arc::clone(service), open);
        }
        if let Some(open) = self.open.get_mut(service) {
            open.file.write(&batch)?;
            open.rows += batch.num_rows() as u64;
            self.metrics
                .rows
                .with_label_values(&[service])
                .inc_by(batch.num_rows() as u64);
            if open.file.bytes() >= self.options.rotate_bytes
                && let Err(error) = self.rotate(service)
            {
                // The group is written: `rotate` counted the file's rows as dropped already.
                tracing::error!(%service, %error, "served-row log rotation failed; rows lost");
            }
        }
        Ok(())
    }

    /// The layout of `service@version`, resolved once; `None` (logged once) when it cannot be.
    fn layout(&mut self, service: &Arc<str>, version: u32) -> Option<Arc<Layout>> {
        let registry = &self.registry;
        self.layouts
            .entry((Arc::clone(service), version))
            .or_insert_with(|| {
                match Layout::resolve(&registry.snapshot(), service, version) {
                    Ok(layout) => Some(Arc::new(layout)),
                    Err(error) => {
                        tracing::error!(%service, version, %error, "the served-row log cannot log this service version");
                        None
                    }
                }
            })
            .clone()
    }

    /// Makes the open file of `service` durable, if there is one.
    fn rotate(&mut self, service: &str) -> Result<()> {
        let Some(open) = self.open.remove(service) else {
            return Ok(());
        };
        let (rows, bytes) = (open.rows, open.file.bytes());
        match open.file.commit() {
            Ok(_) => {
                self.metrics
                    .bytes
                    .with_label_values(&[service])
                    .inc_by(bytes);
                Ok(())
            }
            Err(error) => {
                self.metrics
                    .dropped(service, DropReason::Error, rows as usize);
                Err(error.into())
            }
        }
    }

    fn rotate_aged(&mut self) {
        let interval = self.options.rotate_interval;
        let aged: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|(_, f)| f.opened.elapsed() >= interval)
            .map(|(s, _)| Arc::clone(s))
            .collect();
        for service in aged {
            if let Err(error) = self.rotate(&service) {
                tracing::error!(%service, %error, "served-row log rotation failed; rows lost");
            }
        }
    }

    fn retain_if_due(&mut self) {
        let Some(retention) = self.options.retention else {
            return;
        };
        if self
            .retained
            .is_some_and(|at| at.elapsed() < RETENTION_EVERY)
        {
            return;
        }
        self.retained = Some(Instant::now());
        let keep = i64::try_from(retention.as_micros()).unwrap_or(i64::MAX);
        let cutoff = self.clock.now().saturating_sub(keep);
        match self.dir.remove_before(cutoff) {
            Ok(0) => {}
            Ok(files) => tracing::info!(files, "served-row log files past the retention removed"),
            Err(error) => tracing::warn!(%error, "served-row log retention failed"),
        }
    }
}
