//! `quiver.v1.RegistryService`: plan, apply (atomic, versioned, persisted), get and list.

use std::sync::Arc;

use quiver_core::manifest::ManifestFile;
use quiver_core::model::{Kind, Spec};
use quiver_core::plan::{Action, Change};
use quiver_core::registry::{ObjectHistory, ObjectVersion};
use quiver_proto::convert::{kind_from_proto, kind_to_proto};
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::audit::audited;
use crate::auth::{Principal, principal};
use crate::error::{Error, Result};
use crate::options::Clock;
use crate::registry::{ApplyRequest, Definitions, Registry, VersionRef};

#[derive(Debug, Clone)]
pub struct RegistryService {
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
}

impl RegistryService {
    pub fn new(registry: Arc<Registry>, clock: Arc<dyn Clock>) -> Self {
        RegistryService { registry, clock }
    }
}

fn manifests(files: Vec<v1::ManifestFile>) -> Result<Vec<ManifestFile>> {
    if files.is_empty() {
        return Err(Error::invalid(
            "manifests",
            "no manifest files given; pass at least one YAML file",
        ));
    }
    Ok(files
        .into_iter()
        .map(|f| ManifestFile {
            path: f.path,
            content: f.content,
        })
        .collect())
}

fn change_to_proto(change: &Change) -> v1::Change {
    v1::Change {
        kind: kind_to_proto(change.kind) as i32,
        name: change.name.clone(),
        action: match change.action {
            Action::Create => v1::ChangeAction::Create,
            Action::Update => v1::ChangeAction::Update,
            Action::Delete => v1::ChangeAction::Delete,
        } as i32,
        from_version: change.from_version,
        to_version: change.to_version,
        fingerprint: change.fingerprint.clone().unwrap_or_default(),
        properties: change
            .properties
            .iter()
            .map(|p| v1::PropertyChange {
                property: p.property.clone(),
                old_value: p.old.clone(),
                new_value: p.new.clone(),
                breaking: p.breaking,
                metadata: p.metadata,
            })
            .collect(),
        breaking: change.breaking,
    }
}

pub fn object_to_proto(history: &ObjectHistory, version: &ObjectVersion) -> v1::RegistryObject {
    let spec_json = match (&version.view, &version.service, &version.spec) {
        (Some(view), _, _) => serde_json::to_string_pretty(view),
        (_, Some(service), _) => serde_json::to_string_pretty(service),
        (_, _, Spec::Entity(e)) => serde_json::to_string_pretty(e),
        (_, _, Spec::Source(s)) => serde_json::to_string_pretty(s),
        (_, _, spec) => serde_json::to_string_pretty(spec),
    }
    .unwrap_or_default();
    v1::RegistryObject {
        kind: kind_to_proto(history.kind) as i32,
        name: history.name.clone(),
        version: version.version,
        latest_version: history.versions.len() as u32,
        fingerprint: version.fingerprint.clone(),
        registry_version: version.registry_version,
        created_at_micros: version.created_at,
        spec_json,
        description: history.metadata.description.clone(),
        owner: history.metadata.owner.clone(),
        tags: history.metadata.tags.clone().into_iter().collect(),
        deleted: history.deleted,
        origin: history.origin.clone(),
        applied_by: version.applied_by.clone(),
    }
}

fn required_kind(raw: i32) -> Result<Kind> {
    kind_from_proto(raw, "kind")?.ok_or_else(|| {
        Error::invalid(
            "kind",
            "set the object kind (entity, source, feature view or feature service)",
        )
    })
}

impl RegistryService {
    async fn plan_inner(&self, request: v1::PlanRequest) -> Result<v1::PlanResponse> {
        let manifests = manifests(request.manifests)?;
        let plan = self.registry.plan(manifests, self.clock.now()).await?;
        Ok(v1::PlanResponse {
            base_version: plan.base_version,
            breaking: !plan.breaking().is_empty(),
            changes: plan.changes.iter().map(change_to_proto).collect(),
        })
    }

    async fn apply_inner(
        &self,
        request: v1::ApplyRequest,
        principal: &Principal,
    ) -> Result<v1::ApplyResponse> {
        let request = ApplyRequest {
            definitions: Definitions::Manifests(manifests(request.manifests)?),
            tag: non_empty(request.tag),
            expected_version: request.expected_version,
            force: request.force,
            applied_by: principal.name.clone(),
        };
        let (version, plan) = self.registry.apply(request, self.clock.now()).await?;
        Ok(v1::ApplyResponse {
            registry_version: version,
            changes: plan.changes.iter().map(change_to_proto).collect(),
        })
    }
}

#[tonic::async_trait]
impl v1::registry_service_server::RegistryService for RegistryService {
    async fn plan(
        &self,
        request: Request<v1::PlanRequest>,
    ) -> Result<Response<v1::PlanResponse>, Status> {
        Ok(Response::new(self.plan_inner(request.into_inner()).await?))
    }

    async fn apply(
        &self,
        request: Request<v1::ApplyRequest>,
    ) -> Result<Response<v1::ApplyResponse>, Status> {
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        let objects = request
            .manifests
            .iter()
            .map(|m| m.path.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let force = if request.force {
            "Apply --force"
        } else {
            "Apply"
        };
        let result = self.apply_inner(request, &principal).await;
        Ok(Response::new(audited(&principal, force, &objects, result)?))
    }

    async fn list_tags(
        &self,
        _request: Request<v1::ListTagsRequest>,
    ) -> Result<Response<v1::ListTagsResponse>, Status> {
        let tags = self.registry.tags_with_times().await?;
        Ok(Response::new(v1::ListTagsResponse {
            tags: tags
                .into_iter()
                .map(
                    |(name, registry_version, applied_at_micros)| v1::ReleaseTag {
                        name,
                        registry_version,
                        applied_at_micros,
                    },
                )
                .collect(),
        }))
    }

    async fn rollback(
        &self,
        request: Request<v1::RollbackRequest>,
    ) -> Result<Response<v1::RollbackResponse>, Status> {
        let principal = principal(&request)?.clone();
        let request = request.into_inner();
        if request.to.is_empty() {
            return Err(Error::invalid("to", "give a registry version number or a tag").into());
        }
        let objects = format!("registry version {}", request.to);
        let apply = ApplyRequest {
            definitions: Definitions::Version(VersionRef::parse(&request.to)),
            tag: non_empty(request.tag),
            expected_version: request.expected_version,
            force: request.force,
            applied_by: principal.name.clone(),
        };
        let result = self.registry.apply(apply, self.clock.now()).await;
        let (version, plan) = audited(&principal, "Rollback", &objects, result)?;
        Ok(Response::new(v1::RollbackResponse {
            registry_version: version,
            changes: plan.changes.iter().map(change_to_proto).collect(),
        }))
    }

    async fn get_object(
        &self,
        request: Request<v1::GetObjectRequest>,
    ) -> Result<Response<v1::GetObjectResponse>, Status> {
        let request = request.into_inner();
        let kind = required_kind(request.kind)?;
        let registry = self.registry.snapshot();
        let (history, version) = registry.get(kind, &request.name).map_err(Error::from)?;
        Ok(Response::new(v1::GetObjectResponse {
            object: Some(object_to_proto(history, version)),
        }))
    }

    async fn list_objects(
        &self,
        request: Request<v1::ListObjectsRequest>,
    ) -> Result<Response<v1::ListObjectsResponse>, Status> {
        let kinds = match kind_from_proto(request.into_inner().kind, "kind").map_err(Error::from)? {
            Some(kind) => vec![kind],
            None => Kind::ALL.to_vec(),
        };
        let registry = self.registry.snapshot();
        let objects = kinds
            .into_iter()
            .flat_map(|kind| {
                registry
                    .list(kind)
                    .map(|(h, v)| object_to_proto(h, v))
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Response::new(v1::ListObjectsResponse {
            registry_version: registry.version,
            objects,
        }))
    }

    async fn list_versions(
        &self,
        request: Request<v1::ListVersionsRequest>,
    ) -> Result<Response<v1::ListVersionsResponse>, Status> {
        let request = request.into_inner();
        let kind = required_kind(request.kind)?;
        let registry = self.registry.snapshot();
        let history = registry
            .history(kind, &request.name)
            .ok_or_else(|| Error::NotFound {
                what: kind.name(),
                name: request.name.clone(),
            })?;
        Ok(Response::new(v1::ListVersionsResponse {
            versions: history
                .versions
                .iter()
                .map(|v| object_to_proto(history, v))
                .collect(),
        }))
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}
