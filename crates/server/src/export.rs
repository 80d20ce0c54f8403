//! Training export: resolve an ExportRequest into a point-in-time join (or an entity-less
//! range read) and the metadata that goes with its output.

use std::sync::Arc;

use quiver_offline::{JoinOutput, JoinRequest, JoinView, LabelInput};
use quiver_proto::v1;

use crate::error::{Error, Result};
use crate::selection::{Selection, resolve};
use crate::state::AppState;

pub const DEFAULT_TIMESTAMP_COLUMN: &str = "event_timestamp";

#[derive(Debug)]
pub struct PreparedExport {
    pub selection: Selection,
    pub output: JoinOutput,
    pub metadata: Vec<(String, String)>,
}

pub async fn prepare(state: &Arc<AppState>, request: &v1::ExportRequest) -> Result<PreparedExport> {
    let registry = state.registry();
    let selection = match &request.selector {
        Some(v1::export_request::Selector::FeatureService(name)) => {
            resolve(&registry, Some(name), None, &request.expected_fingerprint)?
        }
        Some(v1::export_request::Selector::Features(refs)) => resolve(
            &registry,
            None,
            Some(&refs.refs),
            &request.expected_fingerprint,
        )?,
        None => resolve(&registry, None, None, "")?,
    };
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
    let timestamp_column = if request.timestamp_column.is_empty() {
        DEFAULT_TIMESTAMP_COLUMN.to_string()
    } else {
        request.timestamp_column.clone()
    };
    let labels = match (
        request.labels_path.is_empty(),
        request.labels_upload.is_empty(),
    ) {
        (false, true) => Some((
            LabelInput::Parquet(request.labels_path.clone()),
            request.labels_path.clone(),
        )),
        (true, false) => Some((
            LabelInput::Batches(state.uploads.get(&request.labels_upload)?),
            format!("upload:{}", request.labels_upload),
        )),
        (true, true) => None,
        (false, false) => {
            return Err(Error::invalid(
                "labels_path",
                "set `labels_path` or `labels_upload`, not both",
            ));
        }
    };
    let output = match labels {
        Some((input, label_name)) => {
            metadata.push(("quiver.labels".into(), label_name));
            metadata.push(("quiver.timestamp_column".into(), timestamp_column.clone()));
            selection.output_names(request.full_names)?;
            state
                .offline
                .point_in_time_join(JoinRequest {
                    labels: input,
                    timestamp_column,
                    views: selection
                        .views
                        .iter()
                        .map(|v| JoinView {
                            view: v.view.clone(),
                            features: v.features.clone(),
                            prefix: v.prefix.clone(),
                        })
                        .collect(),
                    full_names: request.full_names,
                    as_known_at: request.as_known_at,
                })
                .await?
        }
        None => {
            if request.end_micros <= request.start_micros {
                return Err(Error::invalid(
                    "labels_path",
                    "give a label table (`labels_path` or `labels_upload`), or a window `start` < `end` for entity-less retrieval",
                ));
            }
            let [selected] = selection.views.as_slice() else {
                return Err(Error::invalid(
                    "features",
                    "entity-less retrieval reads one view at a time; select features of a single view",
                ));
            };
            metadata.push((
                "quiver.window".into(),
                format!("[{}, {})", request.start_micros, request.end_micros),
            ));
            state
                .offline
                .read_range(
                    &selected.view,
                    &selected.features,
                    request.start_micros,
                    request.end_micros,
                )
                .await?
        }
    };
    Ok(PreparedExport {
        selection,
        output,
        metadata,
    })
}
