//! Training export: an export request validated on receipt ([`ExportRequest`]), resolved by the
//! [`Exporter`] into a point-in-time join (or an entity-less range read) and the metadata that
//! goes with its output.

use std::sync::Arc;

use arrow::array::RecordBatch;
use futures::StreamExt;
use futures::stream::BoxStream;
use quiver_core::RegistryState;
use quiver_core::model::split_pin;
use quiver_core::selection::{Selection, Selector};
use quiver_offline::{JoinOutput, JoinRequest, LabelInput, OfflineStore, OutputFile, Roots};
use quiver_proto::selector::export_selector;
use quiver_proto::v1;

use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::metrics::{ExportRecorder, Metrics, Sink};
use crate::monitor::{ExportProfiler, Monitor};
use crate::registry::Registry;
pub use crate::served_log::{FromServedLog, LogJoinOn};
use crate::served_log::{LogExport, ServedLog};
use crate::uploads::Uploads;

pub const DEFAULT_TIMESTAMP_COLUMN: &str = "event_timestamp";

/// Where an export's label rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Labels {
    /// A Parquet file, directory or glob under the server's labels roots.
    Path(String),
    /// A label table uploaded with Flight DoPut under this name.
    Upload(String),
}

/// The key of an upload: each principal's uploads are its own, so one caller can neither
/// read nor replace another's label table by guessing its name.
pub fn upload_key(principal: &Principal, name: &str) -> String {
    format!("{}{UPLOAD_KEY_SEPARATOR}{name}", principal.name)
}

/// Between the principal and the name in an upload key: a control character, so neither a
/// principal's nor an upload's name can forge another's key.
const UPLOAD_KEY_SEPARATOR: char = '\u{1f}';

/// The name the client gave an upload, from its key.
fn upload_name(key: &str) -> &str {
    key.split_once(UPLOAD_KEY_SEPARATOR)
        .map_or(key, |(_, name)| name)
}

/// What an export joins: label rows, or (entity-less) every row of one view in a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportInput {
    Labels {
        labels: Labels,
        timestamp_column: String,
    },
    Window {
        start: i64,
        end: i64,
    },
}

/// A validated export request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportRequest {
    pub selector: Selector,
    pub input: ExportInput,
    pub full_names: bool,
    pub as_known_at: bool,
    /// The Parquet file a server-side export writes, relative to the export directory
    /// (Flight exports stream instead).
    pub output_path: Option<String>,
    /// Replace an existing file at `output_path`.
    pub overwrite: bool,
    /// Join the labels to the served-row log instead of recomputing the features.
    pub from_served_log: Option<FromServedLog>,
}

impl ExportRequest {
    /// Checks the caller's scope and points upload names at the caller's own uploads.
    pub fn authorize(mut self, principal: &Principal) -> Result<ExportRequest> {
        principal.check_selector(&self.selector)?;
        if let ExportInput::Labels {
            labels: Labels::Upload(name),
            ..
        } = &mut self.input
        {
            *name = upload_key(principal, name);
        }
        Ok(self)
    }

    pub fn from_wire(request: &v1::ExportRequest) -> Result<ExportRequest> {
        let selector = export_selector(request)?;
        let labels = match (
            request.labels_path.is_empty(),
            request.labels_upload.is_empty(),
        ) {
            (false, true) => Some(Labels::Path(request.labels_path.clone())),
            (true, false) => Some(Labels::Upload(request.labels_upload.clone())),
            (true, true) => None,
            (false, false) => {
                return Err(Error::invalid(
                    "labels_path",
                    "set `labels_path` or `labels_upload`, not both",
                ));
            }
        };
        let input = match labels {
            Some(labels) => ExportInput::Labels {
                labels,
                timestamp_column: if request.timestamp_column.is_empty() {
                    DEFAULT_TIMESTAMP_COLUMN.to_string()
                } else {
                    request.timestamp_column.clone()
                },
            },
            None if request.end_micros <= request.start_micros => {
                return Err(Error::invalid(
                    "labels_path",
                    "give a label table (`labels_path` or `labels_upload`), or a window `start` < `end` for entity-less retrieval",
                ));
            }
            None => ExportInput::Window {
                start: request.start_micros,
                end: request.end_micros,
            },
        };
        let from_served_log = match &request.from_served_log {
            None => None,
            Some(wire) => Some(from_served_log(wire, request, &selector, &input)?),
        };
        Ok(ExportRequest {
            selector,
            input,
            from_served_log,
            full_names: request.full_names,
            as_known_at: request.as_known_at,
            output_path: (!request.output_path.is_empty()).then(|| request.output_path.clone()),
            overwrite: request.overwrite,
        })
    }
}

/// The validated `from_served_log` of `request`: for a feature service, with a label table,
/// without `as_known_at` (the log holds what was served, as it was known then).
fn from_served_log(
    wire: &v1::ServedLogJoin,
    request: &v1::ExportRequest,
    selector: &Selector,
    input: &ExportInput,
) -> Result<FromServedLog> {
    if !matches!(selector, Selector::Service { .. }) {
        return Err(Error::invalid(
            "features",
            "a training set from the served-row log is built for a feature service; select one with `feature_service`",
        ));
    }
    if !matches!(input, ExportInput::Labels { .. }) {
        return Err(Error::invalid(
            "labels_path",
            "an export from the served-row log joins a label table; give `labels_path` or `labels_upload`",
        ));
    }
    if request.as_known_at {
        return Err(Error::invalid(
            "as_known_at",
            "the served-row log holds values as serving knew them; drop `as_known_at`",
        ));
    }
    FromServedLog::from_wire(wire, (request.start_micros, request.end_micros))
}

/// An export ready to stream: its output and metadata.
#[derive(Debug)]
pub struct PreparedExport {
    pub output: JoinOutput,
    /// `quiver.*` key-value pairs describing the export (written into its Parquet footer).
    pub metadata: Vec<(String, String)>,
}

/// Prepares exports: resolves the selection on one registry snapshot, finds the labels and
/// starts the join or range read.
#[derive(Debug)]
pub struct Exporter {
    registry: Arc<Registry>,
    offline: Arc<OfflineStore>,
    uploads: Arc<Uploads>,
    /// The export directory: server-side exports are written only under it.
    exports: Roots,
    metrics: Arc<Metrics>,
    /// Profiles every export's rows (the model's reference profile).
    monitor: Arc<Monitor>,
    /// The served-row log exports from the log read, and the most rows one reads.
    served_log: (Arc<ServedLog>, u64),
}

impl Exporter {
    pub(crate) fn new(
        registry: Arc<Registry>,
        offline: Arc<OfflineStore>,
        uploads: Arc<Uploads>,
        exports: Roots,
        metrics: Arc<Metrics>,
        monitor: Arc<Monitor>,
        served_log: (Arc<ServedLog>, u64),
    ) -> Self {
        Exporter {
            registry,
            offline,
            uploads,
            exports,
            metrics,
            monitor,
            served_log,
        }
    }

    /// Records a streamed export of `sink` when dropped (see [`ExportRecorder`]).
    pub(crate) fn recorder(&self, sink: Sink) -> ExportRecorder {
        ExportRecorder::new(Arc::clone(&self.metrics), sink)
    }

    /// The file a server-side export of `request` writes: under the export directory, its
    /// directory existing, and an existing file only if the request says `overwrite`.
    pub fn output_file(&self, request: &ExportRequest) -> Result<OutputFile> {
        let Some(path) = &request.output_path else {
            return Err(Error::invalid(
                "output_path",
                "set the Parquet file to write, relative to the server's export directory",
            ));
        };
        Ok(self
            .exports
            .output_file("output_path", path, request.overwrite)?)
    }

    /// Label tables uploaded with Flight DoPut.
    pub fn uploads(&self) -> &Uploads {
        &self.uploads
    }

    pub async fn prepare(&self, request: &ExportRequest) -> Result<PreparedExport> {
        let registry: Arc<RegistryState> = self.registry.snapshot();
        let selection = Selection::resolve(&registry, &request.selector)?;
        let mut metadata = metadata(&selection, request);
        // Entity-less reads name columns by feature; joins by the requested output names.
        let full_names = request.full_names && matches!(request.input, ExportInput::Labels { .. });
        let destination = request
            .output_path
            .clone()
            .unwrap_or_else(|| "flight".into());
        let profiler = self
            .monitor
            .export_profiler(&selection, full_names, destination);
        metadata.push(("quiver.profile_id".into(), profiler.id().to_string()));
        let mut output = match &request.input {
            ExportInput::Labels {
                labels,
                timestamp_column,
            } => {
                let (input, label_name) = match labels {
                    Labels::Path(path) => (LabelInput::Parquet(path.clone()), path.clone()),
                    Labels::Upload(name) => (
                        LabelInput::Batches(self.uploads.get(name).await?),
                        format!("upload:{}", upload_name(name)),
                    ),
                };
                metadata.push(("quiver.labels".into(), label_name));
                metadata.push(("quiver.timestamp_column".into(), timestamp_column.clone()));
                self.join(request, selection, input, timestamp_column, &mut metadata)
                    .await?
            }
            ExportInput::Window { start, end } => {
                let [selected] = selection.views.as_slice() else {
                    return Err(Error::invalid(
                        "features",
                        "entity-less retrieval reads one view at a time; select features of a single view",
                    ));
                };
                metadata.push(("quiver.window".into(), format!("[{start}, {end})")));
                self.offline.read_range(selected, *start, *end).await?
            }
        };
        output.stream = profiled(output.stream, profiler);
        Ok(PreparedExport { output, metadata })
    }

    /// Starts the join of `input` with `selection`: the point-in-time join, or the join to
    /// the served-row log when the request asks for it.
    async fn join(
        &self,
        request: &ExportRequest,
        selection: Selection,
        input: LabelInput,
        timestamp_column: &str,
        metadata: &mut Vec<(String, String)>,
    ) -> Result<JoinOutput> {
        let Some(from) = &request.from_served_log else {
            selection.output_names(request.full_names)?;
            return Ok(self
                .offline
                .point_in_time_join(JoinRequest {
                    labels: input,
                    timestamp_column: timestamp_column.to_string(),
                    views: selection.views,
                    full_names: request.full_names,
                    as_known_at: request.as_known_at,
                    event_times: false,
                })
                .await?);
        };
        metadata.push(("quiver.from_served_log".into(), from.describe()));
        let pinned = match &request.selector {
            Selector::Service { reference, .. } => {
                split_pin(reference).is_ok_and(|(_, v)| v.is_some())
            }
            Selector::Features(_) => false,
        };
        let (log, max_rows) = &self.served_log;
        let export = LogExport {
            selection: &selection,
            pinned,
            labels: input,
            timestamp_column: timestamp_column.to_string(),
            full_names: request.full_names,
            from: from.clone(),
            max_rows: *max_rows,
        };
        log.join_labels(&self.offline, export).await
    }
}

/// `stream`, with every batch also fed to `profiler`; at its end the profile is stored. A
/// failed stream stores none; a profile that cannot be built or stored is logged, never fails
/// the export.
fn profiled(
    stream: BoxStream<'static, quiver_offline::Result<RecordBatch>>,
    profiler: ExportProfiler,
) -> BoxStream<'static, quiver_offline::Result<RecordBatch>> {
    futures::stream::unfold(
        (stream, Some(profiler)),
        |(mut stream, mut profiler)| async move {
            match stream.next().await {
                Some(Ok(batch)) => {
                    if let Some(Err(error)) = profiler.as_mut().map(|p| p.add(&batch)) {
                        tracing::warn!(%error, "export profile dropped");
                        profiler = None;
                    }
                    Some((Ok(batch), (stream, profiler)))
                }
                Some(Err(e)) => Some((Err(e), (stream, None))),
                None => {
                    if let Some(Err(error)) = match profiler {
                        Some(p) => Some(p.finish().await),
                        None => None,
                    } {
                        tracing::warn!(%error, "export profile not stored");
                    }
                    None
                }
            }
        },
    )
    .boxed()
}

/// The metadata every export carries: version, service, views and options.
fn metadata(selection: &Selection, request: &ExportRequest) -> Vec<(String, String)> {
    let mut metadata = vec![(
        "quiver.version".to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    )];
    if let Some(service) = &selection.service {
        metadata.push(("quiver.feature_service".into(), service.name.clone()));
        metadata.push((
            "quiver.feature_service_version".into(),
            service.version.to_string(),
        ));
        metadata.push(("quiver.fingerprint".into(), service.fingerprint.clone()));
    }
    let views: Vec<String> = selection
        .views
        .iter()
        .map(|v| format!("{}@{}:{}", v.view.name, v.view.version, v.view.fingerprint))
        .collect();
    metadata.push(("quiver.views".into(), views.join(",")));
    metadata.push(("quiver.full_names".into(), request.full_names.to_string()));
    metadata.push(("quiver.as_known_at".into(), request.as_known_at.to_string()));
    metadata
}
