//! `quiver.v1.OnlineService`: GetOnlineFeatures (statuses per SEMANTICS.md), Push and Echo.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use quiver_core::semantics::{FeatureStatus, is_fresh};
use quiver_core::value::{KeyValue, Value};
use quiver_online::project_values;
use quiver_proto::convert::{column_len, column_to_keys, values_to_column};
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::error::{Error, Result};
use crate::selection::{Selection, resolve};
use crate::state::AppState;

/// Most entity rows one request may carry.
pub const MAX_ENTITY_ROWS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct OnlineService {
    state: Arc<AppState>,
}

impl OnlineService {
    pub fn new(state: Arc<AppState>) -> Self {
        OnlineService { state }
    }
}

fn status_to_proto(status: FeatureStatus) -> v1::FeatureStatus {
    match status {
        FeatureStatus::Present => v1::FeatureStatus::Present,
        FeatureStatus::NullValue => v1::FeatureStatus::NullValue,
        FeatureStatus::NotFound => v1::FeatureStatus::NotFound,
        FeatureStatus::OutsideMaxAge => v1::FeatureStatus::OutsideMaxAge,
    }
}

fn selection_of(state: &AppState, request: &v1::GetOnlineFeaturesRequest) -> Result<Selection> {
    let registry = state.registry();
    match &request.selector {
        Some(v1::get_online_features_request::Selector::FeatureService(name)) => {
            resolve(&registry, Some(name), None, &request.expected_fingerprint)
        }
        Some(v1::get_online_features_request::Selector::Features(refs)) => resolve(
            &registry,
            None,
            Some(&refs.refs),
            &request.expected_fingerprint,
        ),
        None => resolve(&registry, None, None, ""),
    }
}

/// Validates entity columns: equal lengths, within limits, no unknown names.
fn entity_rows(selection: &Selection, entities: &[v1::NamedColumn]) -> Result<usize> {
    let mut n_rows = None;
    for (i, named) in entities.iter().enumerate() {
        let used = selection
            .views
            .iter()
            .any(|v| v.view.join_keys.iter().any(|k| k.name == named.name));
        if !used {
            let keys: Vec<String> = selection
                .views
                .iter()
                .flat_map(|v| v.view.join_keys.iter().map(|k| k.name.clone()))
                .collect();
            return Err(Error::invalid(
                format!("entities[{i}]"),
                format!(
                    "`{}` is not a join key of the requested views (keys: {})",
                    named.name,
                    keys.join(", ")
                ),
            ));
        }
        let len = named.column.as_ref().map(column_len).unwrap_or(0);
        match n_rows {
            Some(n) if n != len => {
                return Err(Error::invalid(
                    format!("entities.{}", named.name),
                    format!(
                        "has {len} values, other key columns have {n}; every key column needs one value per entity row"
                    ),
                ));
            }
            _ => n_rows = Some(len),
        }
    }
    let n_rows = n_rows.unwrap_or(0);
    if n_rows > MAX_ENTITY_ROWS {
        return Err(Error::invalid(
            "entities",
            format!("{n_rows} entity rows; at most {MAX_ENTITY_ROWS} per request, split the batch"),
        ));
    }
    Ok(n_rows)
}

impl OnlineService {
    fn get(
        &self,
        request: v1::GetOnlineFeaturesRequest,
        lookup: bool,
    ) -> Result<v1::GetOnlineFeaturesResponse> {
        let selection = selection_of(&self.state, &request)?;
        let names = selection.output_names(request.full_names)?;
        let n_rows = entity_rows(&selection, &request.entities)?;
        let columns: BTreeMap<&str, &v1::Column> = request
            .entities
            .iter()
            .filter_map(|c| c.column.as_ref().map(|col| (c.name.as_str(), col)))
            .collect();
        let now = self.state.clock.now();
        let registry = self.state.registry();
        let mut response = v1::GetOnlineFeaturesResponse {
            served_at_micros: now,
            ..Default::default()
        };
        if let Some(service) = &selection.service {
            response.feature_service = service.name.clone();
            response.feature_service_version = service.version;
            response.fingerprint = service.fingerprint.clone();
        }
        for (view_index, (selected, names)) in selection.views.iter().zip(names).enumerate() {
            let view = &selected.view;
            let mut keys: Vec<Vec<KeyValue>> =
                vec![Vec::with_capacity(view.join_keys.len()); n_rows];
            for key in &view.join_keys {
                let field = format!("entities.{}", key.name);
                let column = columns.get(key.name.as_str()).ok_or_else(|| {
                    Error::invalid(
                        &field,
                        format!(
                            "missing join key `{}` ({}) needed by view `{}`",
                            key.name, key.key_type, view.name
                        ),
                    )
                })?;
                for (row, value) in
                    keys.iter_mut()
                        .zip(column_to_keys(column, key.key_type, &field)?)
                {
                    row.push(value);
                }
            }
            let stored = if lookup {
                self.state.store.read_rows(view, &keys)?
            } else {
                vec![None; n_rows]
            };
            let feature_indices: Vec<usize> = selected
                .features
                .iter()
                .map(|f| {
                    view.features
                        .iter()
                        .position(|x| &x.name == f)
                        .ok_or_else(|| {
                            Error::Internal(format!(
                                "feature `{f}` missing from resolved view `{}`",
                                view.name
                            ))
                        })
                })
                .collect::<Result<_>>()?;
            let mut values: Vec<Vec<Value>> =
                vec![Vec::with_capacity(n_rows); feature_indices.len()];
            let mut statuses: Vec<Vec<i32>> =
                vec![Vec::with_capacity(n_rows); feature_indices.len()];
            let mut event_timestamps = Vec::with_capacity(n_rows);
            let mut found = Vec::with_capacity(n_rows);
            for row in &stored {
                // Borrow the stored values; project only rows written by another version.
                let row_values: Option<Result<Cow<'_, [Value]>, ()>> = match row {
                    None => None,
                    Some(row) if !is_fresh(row.event_ts, now, view.ttl) => Some(Err(())),
                    Some(row) if row.view_version == view.version => {
                        Some(Ok(Cow::Borrowed(&row.values)))
                    }
                    Some(row) => {
                        let writer = registry
                            .view_version(&view.name, row.view_version)
                            .map(|v| v.features.as_slice())
                            .unwrap_or_default();
                        Some(Ok(Cow::Owned(project_values(row, writer, view))))
                    }
                };
                event_timestamps.push(row.as_ref().map(|r| r.event_ts).unwrap_or(0));
                found.push(row.is_some());
                for (j, index) in feature_indices.iter().enumerate() {
                    let (value, status) = match &row_values {
                        None => (Value::Null, FeatureStatus::NotFound),
                        Some(Err(_)) => (Value::Null, FeatureStatus::OutsideMaxAge),
                        Some(Ok(vals)) => match vals.get(*index) {
                            Some(v) if !v.is_null() => (v.clone(), FeatureStatus::Present),
                            _ => (Value::Null, FeatureStatus::NullValue),
                        },
                    };
                    values[j].push(value);
                    statuses[j].push(status_to_proto(status) as i32);
                }
            }
            for ((j, index), name) in feature_indices.iter().enumerate().zip(names) {
                response.features.push(v1::FeatureColumn {
                    name,
                    view_index: view_index as u32,
                    values: Some(values_to_column(
                        &values[j],
                        view.features[*index].value_type,
                    )),
                    statuses: std::mem::take(&mut statuses[j]),
                });
            }
            response.views.push(v1::ServedView {
                name: view.name.clone(),
                version: view.version,
                fingerprint: view.fingerprint.clone(),
                event_timestamps,
                found,
            });
        }
        Ok(response)
    }
}

#[tonic::async_trait]
impl v1::online_service_server::OnlineService for OnlineService {
    async fn get_online_features(
        &self,
        request: Request<v1::GetOnlineFeaturesRequest>,
    ) -> Result<Response<v1::GetOnlineFeaturesResponse>, Status> {
        Ok(Response::new(self.get(request.into_inner(), true)?))
    }

    async fn push(
        &self,
        request: Request<v1::PushRequest>,
    ) -> Result<Response<v1::PushResponse>, Status> {
        Ok(Response::new(
            crate::push::push(&self.state, request.into_inner()).await?,
        ))
    }

    async fn echo(
        &self,
        request: Request<v1::GetOnlineFeaturesRequest>,
    ) -> Result<Response<v1::GetOnlineFeaturesResponse>, Status> {
        Ok(Response::new(self.get(request.into_inner(), false)?))
    }
}
