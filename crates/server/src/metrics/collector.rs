//! Figures computed at scrape time from the running server's state: freshness per view, the
//! registry version, readiness and RocksDB's own figures. Read, never kept up to date, so
//! they cost nothing between scrapes; the scrape runs on the blocking pool (it reads the
//! store).

use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts};
use quiver_core::Kind;
use quiver_core::online_store::OnlineStore;
use quiver_online::RocksStore;

use super::Health;
use crate::error::{Error, Result};
use crate::options::Clock;
use crate::registry::Registry;

/// The scrape-time collector of one server.
pub(crate) struct StateCollector {
    registry: Arc<Registry>,
    store: Arc<RocksStore>,
    /// Online rows (the newest event and the watermark per view).
    online: Arc<dyn OnlineStore>,
    offline: Arc<quiver_offline::OfflineStore>,
    clock: Arc<dyn Clock>,
    health: Arc<Health>,
    /// `quiver_materialization_runs_total`, so that every view's outcomes exist from 0 (a
    /// series born at 1 shows no `increase()`, and the first failure would go unseen).
    materialization_runs: IntCounterVec,
    /// `quiver_validation_violations_total`, created at 0 for every declared rule.
    violations: IntCounterVec,
    /// `quiver_materialization_violations_total`, created at 0 for every declared rule of an
    /// online view.
    run_violations: IntCounterVec,
    newest_event_age: GaugeVec,
    watermark_age: GaugeVec,
    ttl: GaugeVec,
    max_staleness: GaugeVec,
    stale: GaugeVec,
    registry_version: IntGauge,
    ready: IntGauge,
    build_info: GaugeVec,
    live_data: IntGauge,
    memtables: IntGauge,
    pending_compaction: IntGauge,
    block_cache: IntGauge,
    cache_hit_ratio: Gauge,
    cache_hits: IntCounter,
    cache_misses: IntCounter,
    row_cache: IntGauge,
    row_cache_hits: IntCounter,
    row_cache_misses: IntCounter,
    offline_memory: IntGauge,
    spill: IntGauge,
    /// One scrape at a time: a refresh resets and sets gauges, and advances counters.
    scraping: std::sync::Mutex<()>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateCollector").finish_non_exhaustive()
    }
}

fn internal(error: prometheus::Error) -> Error {
    Error::Internal(format!("metrics: {error}"))
}

impl StateCollector {
    pub(crate) fn new(
        registry: Arc<Registry>,
        (store, online, offline): (
            Arc<RocksStore>,
            Arc<dyn OnlineStore>,
            Arc<quiver_offline::OfflineStore>,
        ),
        clock: Arc<dyn Clock>,
        health: Arc<Health>,
        materialization_runs: IntCounterVec,
        violations: IntCounterVec,
        run_violations: IntCounterVec,
    ) -> Result<StateCollector> {
        let view_gauge = |name: &str, help: &str| {
            GaugeVec::new(Opts::new(name, help), &["view"]).map_err(internal)
        };
        let int_gauge = |name: &str, help: &str| IntGauge::new(name, help).map_err(internal);
        let build_info = GaugeVec::new(
            Opts::new("quiver_build_info", "The running Quiver version (value 1)."),
            &["version"],
        )
        .map_err(internal)?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        Ok(StateCollector {
            newest_event_age: view_gauge(
                "quiver_view_newest_event_age_seconds",
                "Age of the newest event written online (push or materialization), per view; absent before the first write.",
            )?,
            watermark_age: view_gauge(
                "quiver_view_watermark_age_seconds",
                "Age of the view's materialization watermark (the end of the last incremental run); absent before the first.",
            )?,
            ttl: view_gauge(
                "quiver_view_ttl_seconds",
                "The view's TTL (values older are OUTSIDE_MAX_AGE online); absent for views without one.",
            )?,
            max_staleness: view_gauge(
                "quiver_view_max_staleness_seconds",
                "The view's declared freshness bound (`monitoring.max_staleness`); absent for views without one.",
            )?,
            stale: view_gauge(
                "quiver_view_stale",
                "1 when the newest event written online is older than `monitoring.max_staleness` (or none was written), else 0; only for online views with a bound.",
            )?,
            registry_version: int_gauge(
                "quiver_registry_version",
                "The registry version being served.",
            )?,
            ready: int_gauge(
                "quiver_ready",
                "1 when the server is ready (registry loaded, store open, not draining), else 0.",
            )?,
            build_info,
            live_data: int_gauge(
                "quiver_rocksdb_live_data_bytes",
                "Estimated live data of the online store.",
            )?,
            memtables: int_gauge(
                "quiver_rocksdb_memtable_bytes",
                "Memtable bytes of the store (every column family).",
            )?,
            pending_compaction: int_gauge(
                "quiver_rocksdb_pending_compaction_bytes",
                "Bytes compaction still has to rewrite.",
            )?,
            offline_memory: int_gauge(
                "quiver_offline_memory_reserved_bytes",
                "Bytes of --offline-memory-limit held by running point-in-time joins.",
            )?,
            spill: int_gauge(
                "quiver_offline_spill_bytes",
                "Bytes of spill files of joins larger than the memory limit, on disk now (bounded by --max-spill-bytes).",
            )?,
            block_cache: int_gauge(
                "quiver_rocksdb_block_cache_bytes",
                "Bytes held by the online store's block cache (bounded by its capacity).",
            )?,
            cache_hit_ratio: Gauge::new(
                "quiver_rocksdb_block_cache_hit_ratio",
                "Block cache hits over lookups since the server started.",
            )
            .map_err(internal)?,
            cache_hits: IntCounter::new(
                "quiver_rocksdb_block_cache_hits_total",
                "Block cache hits since the server started.",
            )
            .map_err(internal)?,
            cache_misses: IntCounter::new(
                "quiver_rocksdb_block_cache_misses_total",
                "Block cache misses since the server started.",
            )
            .map_err(internal)?,
            row_cache: int_gauge(
                "quiver_online_row_cache_bytes",
                "Bytes held by the cache of decoded online rows (bounded by --online-row-cache-bytes).",
            )?,
            row_cache_hits: IntCounter::new(
                "quiver_online_row_cache_hits_total",
                "Online keys answered from the cache of decoded rows since the server started.",
            )
            .map_err(internal)?,
            row_cache_misses: IntCounter::new(
                "quiver_online_row_cache_misses_total",
                "Online keys the cache of decoded rows did not hold (read from RocksDB) since the server started.",
            )
            .map_err(internal)?,
            scraping: std::sync::Mutex::new(()),
            materialization_runs,
            violations,
            run_violations,
            registry,
            store,
            online,
            offline,
            clock,
            health,
        })
    }

    /// Sets every figure from the current state; a view whose figures cannot be read is
    /// logged and left out of this scrape.
    fn refresh(&self) {
        let now = self.clock.now();
        let age = |micros: i64| (now.saturating_sub(micros)) as f64 / 1e6;
        let state = self.registry.snapshot();
        for gauge in [
            &self.newest_event_age,
            &self.watermark_age,
            &self.ttl,
            &self.max_staleness,
            &self.stale,
        ] {
            gauge.reset();
        }
        self.registry_version.set(state.version as i64);
        for (history, version) in state.list(Kind::FeatureView) {
            let Some(view) = &version.view else { continue };
            let name = [view.name.as_str()];
            let monitoring = &history.metadata.monitoring;
            for (feature, expectation) in &monitoring.expectations {
                for rule in expectation.rules() {
                    let policy = monitoring.on_violation.name();
                    self.violations.with_label_values(&[
                        view.name.as_str(),
                        feature,
                        rule.name(),
                        policy,
                    ]);
                    if view.online {
                        self.run_violations.with_label_values(&[
                            view.name.as_str(),
                            feature,
                            rule.name(),
                        ]);
                    }
                }
            }
            let bound = monitoring.max_staleness.filter(|_| view.online);
            if let Some(bound) = bound {
                self.max_staleness
                    .with_label_values(&name)
                    .set(bound as f64 / 1e6);
            }
            for outcome in super::OUTCOMES {
                self.materialization_runs
                    .with_label_values(&[view.name.as_str(), outcome]);
            }
            if view.ttl > 0 {
                self.ttl.with_label_values(&name).set(view.ttl as f64 / 1e6);
            }
            // A collector is synchronous, and scrapes run on the blocking pool (`http.rs`):
            // waiting here holds no async worker.
            let freshness = crate::wait(async {
                let newest = self.online.newest_event(&view.name).await?;
                Ok::<_, crate::error::Error>((newest, self.online.watermark(view).await?))
            });
            match freshness.and_then(|read| read) {
                Ok((newest, watermark)) => {
                    if let Some(bound) = bound {
                        let stale = newest.is_none_or(|n| now.saturating_sub(n) > bound);
                        self.stale
                            .with_label_values(&name)
                            .set(f64::from(u8::from(stale)));
                    }
                    if let Some(newest) = newest {
                        self.newest_event_age
                            .with_label_values(&name)
                            .set(age(newest));
                    }
                    if let Some(watermark) = watermark {
                        self.watermark_age
                            .with_label_values(&name)
                            .set(age(watermark));
                    }
                }
                Err(error) => {
                    tracing::warn!(view = %view.name, %error, "freshness metrics unavailable");
                }
            }
        }
        self.ready.set(i64::from(self.health.is_ready()));
        self.offline_memory
            .set(i64::try_from(self.offline.memory_reserved()).unwrap_or(i64::MAX));
        self.spill
            .set(i64::try_from(self.offline.spilled_bytes()).unwrap_or(i64::MAX));
        match self.store.stats() {
            Ok(stats) => {
                self.live_data.set(stats.live_data_bytes as i64);
                self.memtables.set(stats.memtable_bytes as i64);
                self.pending_compaction
                    .set(stats.pending_compaction_bytes as i64);
                self.block_cache.set(stats.block_cache_bytes as i64);
                self.cache_hit_ratio
                    .set(stats.block_cache_hit_ratio().unwrap_or(0.0));
                // Counters follow RocksDB's tickers, which only grow.
                self.cache_hits
                    .inc_by(stats.block_cache_hits.saturating_sub(self.cache_hits.get()));
                self.cache_misses.inc_by(
                    stats
                        .block_cache_misses
                        .saturating_sub(self.cache_misses.get()),
                );
                self.row_cache.set(stats.row_cache_bytes as i64);
                self.row_cache_hits.inc_by(
                    stats
                        .row_cache_hits
                        .saturating_sub(self.row_cache_hits.get()),
                );
                self.row_cache_misses.inc_by(
                    stats
                        .row_cache_misses
                        .saturating_sub(self.row_cache_misses.get()),
                );
            }
            Err(error) => tracing::warn!(%error, "store metrics unavailable"),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 23] {
        [
            &self.materialization_runs,
            &self.violations,
            &self.run_violations,
            &self.newest_event_age,
            &self.watermark_age,
            &self.ttl,
            &self.max_staleness,
            &self.stale,
            &self.registry_version,
            &self.ready,
            &self.build_info,
            &self.live_data,
            &self.memtables,
            &self.pending_compaction,
            &self.block_cache,
            &self.cache_hit_ratio,
            &self.cache_hits,
            &self.cache_misses,
            &self.row_cache,
            &self.row_cache_hits,
            &self.row_cache_misses,
            &self.offline_memory,
            &self.spill,
        ]
    }
}

impl Collector for StateCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.collectors()
            .into_iter()
            .flat_map(|collector| collector.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let _scraping = self
            .scraping
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.refresh();
        self.collectors()
            .into_iter()
            .flat_map(|collector| collector.collect())
            .collect()
    }
}
