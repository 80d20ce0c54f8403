//! The skew report: the logged rows of a service in a window (all, or an even sample), the
//! point-in-time join recomputed at each row's `served_at` (as known then, event times
//! included) per service version, and every value compared by `quiver_core::skew`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::concat_batches;
use arrow::datatypes::{Field, Schema, TimestampMicrosecondType};
use futures::TryStreamExt;
use quiver_core::model::Kind;
use quiver_core::selection::{Selection, Selector};
use quiver_core::semantics::FeatureStatus;
use quiver_core::skew::{FeatureSkew, Offline, Served, compare};
use quiver_core::types::Micros;
use quiver_offline::arrow_values::value_at;
use quiver_offline::{JoinRequest, LabelInput, OfflineStore, SERVED_AT, ServedLogDir};

use super::ServedLog;
use crate::error::{Error, Result};
use crate::limits::check;
use crate::registry::Registry;

/// The window when a request gives none: the last day.
const DEFAULT_WINDOW: Micros = 86_400_000_000;

/// A validated ComputeSkew request.
#[derive(Debug, Clone)]
pub(crate) struct SkewRequest {
    pub(crate) service: String,
    pub(crate) start: Micros,
    pub(crate) end: Micros,
    /// At most this many rows, spread evenly; 0 = all.
    pub(crate) sample: u64,
    pub(crate) expected_lag: Option<Micros>,
}

/// The report: per feature, in the service's order.
#[derive(Debug, Clone)]
pub(crate) struct SkewReport {
    pub(crate) service: String,
    pub(crate) rows: u64,
    pub(crate) versions: Vec<u32>,
    pub(crate) expected_lag: Micros,
    pub(crate) features: Vec<FeatureSkew>,
}

impl SkewRequest {
    pub(crate) fn new(
        service: String,
        (start, end): (Micros, Micros),
        sample: u64,
        expected_lag: Option<Micros>,
        now: Micros,
    ) -> Result<SkewRequest> {
        if service.is_empty() {
            return Err(Error::invalid(
                "feature_service",
                "name the feature service whose log to check",
            ));
        }
        let (start, end) = match (start, end) {
            (0, 0) => (now.saturating_sub(DEFAULT_WINDOW), now.saturating_add(1)),
            (start, end) if start < end => (start, end),
            _ => {
                return Err(Error::invalid(
                    "start_micros",
                    "the window is empty; give start < end",
                ));
            }
        };
        if expected_lag.is_some_and(|lag| lag < 0) {
            return Err(Error::invalid(
                "expected_lag_micros",
                "give a lag of 0 or more",
            ));
        }
        Ok(SkewRequest {
            service,
            start,
            end,
            sample,
            expected_lag,
        })
    }
}

impl ServedLog {
    /// Computes the skew report of `request` (see the module docs).
    pub(crate) async fn skew(
        self: &Arc<Self>,
        registry: &Registry,
        offline: &OfflineStore,
        request: SkewRequest,
        max_rows: u64,
    ) -> Result<SkewReport> {
        let snapshot = registry.snapshot();
        let (history, _) = snapshot.get(Kind::FeatureService, &request.service)?;
        let expected_lag = request
            .expected_lag
            .or(history.metadata.logging.map(|l| l.expected_lag))
            .unwrap_or(0);
        let log = Arc::clone(self);
        let read = request.clone();
        let groups = crate::run_blocking(move || log.sampled(&read, max_rows)).await?;
        let mut report = SkewReport {
            service: request.service.clone(),
            rows: groups.iter().map(|(_, b)| b.num_rows() as u64).sum(),
            versions: groups.iter().map(|(v, _)| *v).collect(),
            expected_lag,
            features: Vec::new(),
        };
        for (version, logged) in groups {
            let selector = Selector::Service {
                reference: format!("{}@{version}", request.service),
                expected_fingerprint: None,
            };
            let selection = Selection::resolve(&snapshot, &selector)?;
            let joined = recompute(offline, &selection, &logged).await?;
            let features = std::mem::take(&mut report.features);
            report.features = crate::run_blocking(move || {
                let mut features = features;
                tally(&selection, &logged, &joined, expected_lag, &mut features)?;
                Ok(features)
            })
            .await?;
        }
        Ok(report)
    }

    /// Blocking: the logged rows of the request's window (every row, or `sample` of them
    /// spread evenly), grouped by service version.
    fn sampled(&self, request: &SkewRequest, max_rows: u64) -> Result<Vec<(u32, RecordBatch)>> {
        self.flush(&request.service)?;
        let dir = self.dir();
        let range = (request.start, request.end);
        let files = dir.files(&request.service, range, None)?;
        let total = dir.count(&files, range)?;
        let wanted = match request.sample {
            0 => {
                check(
                    "skew report",
                    total,
                    "logged rows",
                    max_rows,
                    "--max-skew-rows",
                )?;
                total
            }
            n => n.min(total),
        };
        let mut versions: Vec<u32> = files
            .iter()
            .filter_map(|f| ServedLogDir::file_version(f))
            .collect();
        versions.sort_unstable();
        versions.dedup();
        let mut index = 0u64;
        let mut groups = Vec::new();
        for version in versions {
            let files: Vec<_> = files
                .iter()
                .filter(|f| ServedLogDir::file_version(f) == Some(version))
                .cloned()
                .collect();
            let schema = dir.schema(&files)?;
            let mut batches = Vec::new();
            dir.read(&files, &schema, range, Some(version), &mut |batch| {
                // Row i is kept when (i * wanted) mod total < wanted: exactly `wanted` rows,
                // evenly spread.
                let keep: arrow::array::BooleanArray = (0..batch.num_rows() as u64)
                    .map(|r| {
                        Some(
                            ((index + r) as u128 * wanted as u128) % (total.max(1) as u128)
                                < wanted as u128,
                        )
                    })
                    .collect();
                index += batch.num_rows() as u64;
                batches.push(arrow::compute::filter_record_batch(&batch, &keep)?);
                Ok(true)
            })?;
            let rows = concat_batches(&schema, &batches)
                .map_err(|e| Error::Internal(format!("served-row log rows: {e}")))?;
            if rows.num_rows() > 0 {
                groups.push((version, rows));
            }
        }
        Ok(groups)
    }
}

fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::FailedPrecondition(format!(
            "the served-row log has no column `{name}`; was the log written by another release?"
        ))
    })
}

/// The join at each logged row's `served_at`, as known then, with event times.
async fn recompute(
    offline: &OfflineStore,
    selection: &Selection,
    logged: &RecordBatch,
) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for name in selection
        .distinct_keys()
        .iter()
        .map(|(_, _, key)| key.name.as_str())
        .chain([SERVED_AT])
    {
        let values = column(logged, name)?;
        fields.push(Field::new(name, values.data_type().clone(), true));
        columns.push(Arc::clone(values));
    }
    let labels = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Internal(format!("skew labels: {e}")))?;
    let output = offline
        .point_in_time_join(JoinRequest {
            labels: LabelInput::Batches(vec![labels]),
            timestamp_column: SERVED_AT.into(),
            views: selection.views.clone(),
            full_names: true,
            as_known_at: true,
            event_times: true,
        })
        .await?;
    let schema = Arc::clone(&output.schema);
    let batches: Vec<RecordBatch> = output.stream.try_collect().await?;
    concat_batches(&schema, &batches).map_err(|e| Error::Internal(format!("skew join: {e}")))
}

/// Compares every logged value with the recomputed one, adding to `features` (by name).
fn tally(
    selection: &Selection,
    logged: &RecordBatch,
    joined: &RecordBatch,
    expected_lag: Micros,
    features: &mut Vec<FeatureSkew>,
) -> Result<()> {
    let keys: Vec<(String, &ArrayRef)> = selection
        .distinct_keys()
        .into_iter()
        .map(|(_, _, key)| column(logged, &key.name).map(|c| (key.name.clone(), c)))
        .collect::<Result<_>>()?;
    let key_text = |row: usize| {
        keys.iter()
            .map(|(name, c)| format!("{name}={}", value_at(c.as_ref(), row)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let served_at = times(column(logged, SERVED_AT)?)?;
    for selected in &selection.views {
        let event = format!("{}.event_time", selected.prefix);
        let (online_events, offline_events) = (
            times(column(logged, &event)?)?,
            times(column(joined, &event)?)?,
        );
        for feature in &selected.features {
            let name = selected.output_name(feature, true);
            let online = column(logged, &name)?;
            let statuses = column(logged, &format!("{name}.status"))?.as_string_opt::<i32>();
            let statuses =
                statuses.ok_or_else(|| Error::Internal(format!("{name}.status is not text")))?;
            let offline = column(joined, &name)?;
            let at = match features.iter().position(|f| f.feature == name) {
                Some(at) => at,
                None => {
                    features.push(FeatureSkew::new(name.clone()));
                    features.len() - 1
                }
            };
            let tally = &mut features[at];
            for row in 0..logged.num_rows() {
                let status = FeatureStatus::parse(statuses.value(row)).ok_or_else(|| {
                    Error::FailedPrecondition(format!(
                        "unknown status `{}` in the log",
                        statuses.value(row)
                    ))
                })?;
                let (online_value, offline_value) = (
                    value_at(online.as_ref(), row),
                    value_at(offline.as_ref(), row),
                );
                let served = Served {
                    status,
                    value: &online_value,
                    event_time: online_events
                        .is_valid(row)
                        .then(|| online_events.value(row)),
                    served_at: served_at.value(row),
                };
                let found = Offline {
                    value: &offline_value,
                    event_time: offline_events
                        .is_valid(row)
                        .then(|| offline_events.value(row)),
                };
                tally.add(compare(served, found, expected_lag), || {
                    let online_text = match status {
                        FeatureStatus::Present | FeatureStatus::NullValue => {
                            online_value.to_string()
                        }
                        other => other.name().to_string(),
                    };
                    (
                        key_text(row),
                        served.served_at,
                        online_text,
                        offline_value.to_string(),
                    )
                });
            }
        }
    }
    Ok(())
}

fn times(array: &ArrayRef) -> Result<&arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    array
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or_else(|| Error::Internal("a log time column is not a microsecond timestamp".into()))
}
