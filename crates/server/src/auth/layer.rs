//! The tower layer that authenticates every request before a service sees it: reads the
//! `authorization` metadata, checks the role the path needs ([`required_role`]), and puts the
//! [`Principal`] into the request's extensions. One place for every RPC, Flight included, so a
//! new RPC cannot be left open by forgetting a check in its handler.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{Either, Ready, ready};
use tonic::Status;

use super::{Authenticator, Principal, Role};

/// What a request path needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Health checks, reflection and the Flight handshake (which authenticates by itself).
    Open,
    Needs(Role),
}

const FLIGHT: &str = "/arrow.flight.protocol.FlightService/";

/// The access a gRPC path needs. Unknown paths need `admin`: a new RPC is closed until it is
/// given a role here.
pub fn required_role(path: &str) -> Access {
    use Role::{Admin, Reader, Writer};
    if path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
        || path == "/arrow.flight.protocol.FlightService/Handshake"
    {
        return Access::Open;
    }
    let role = match path {
        "/quiver.v1.RegistryService/Plan"
        | "/quiver.v1.RegistryService/GetObject"
        | "/quiver.v1.RegistryService/ListObjects"
        | "/quiver.v1.RegistryService/ListVersions"
        | "/quiver.v1.RegistryService/ListTags"
        | "/quiver.v1.OnlineService/GetOnlineFeatures"
        | "/quiver.v1.OnlineService/Echo"
        | "/quiver.v1.JobService/WatchJob"
        | "/quiver.v1.JobService/GetJob"
        | "/quiver.v1.OfflineService/ExportTrainingData"
        | "/quiver.v1.MonitoringService/ComputeProfile"
        | "/quiver.v1.MonitoringService/GetProfile"
        | "/quiver.v1.MonitoringService/ListProfiles"
        | "/quiver.v1.MonitoringService/ComputeDrift"
        | "/quiver.v1.MonitoringService/ComputeSkew"
        | "/quiver.v1.MonitoringService/ReadServedLog" => Reader,
        "/quiver.v1.OnlineService/Push"
        | "/quiver.v1.JobService/StartMaterialization"
        | "/quiver.v1.JobService/CancelJob" => Writer,
        "/quiver.v1.RegistryService/Apply"
        | "/quiver.v1.RegistryService/Rollback"
        | "/quiver.v1.AdminService/Backup" => Admin,
        // Flight serves exports: label uploads (DoPut) and results (DoGet) are reads.
        p if p.starts_with(FLIGHT) => Reader,
        _ => Admin,
    };
    Access::Needs(role)
}

/// The call name of a path, for messages: `/quiver.v1.OnlineService/Push` → `Push`.
pub fn call_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Installs [`AuthService`] around every service of the server.
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// `None`: auth is off and every caller is [`Principal::anonymous`].
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

/// The principal for a request to `path` (none for open paths), or the status that refuses
/// it.
fn check(
    auth: Option<&Authenticator>,
    path: &str,
    headers: &http::HeaderMap,
) -> Result<Option<Principal>, Status> {
    let Some(auth) = auth else {
        return Ok(Some(Principal::anonymous()));
    };
    let needed = match required_role(path) {
        Access::Open => return Ok(None),
        Access::Needs(role) => role,
    };
    let header = headers
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let principal = auth
        .authenticate_header(header)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    principal
        .require(needed, call_name(path))
        .map_err(Status::from)?;
    Ok(Some(principal))
}

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    R: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Self::Response, Self::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        match check(self.auth.as_deref(), path, request.headers()) {
            Ok(principal) => {
                if let Some(principal) = principal {
                    request.extensions_mut().insert(principal);
                }
                Either::Right(self.inner.call(request))
            }
            Err(status) => {
                tracing::info!(path, code = ?status.code(), message = status.message(), "refused by auth");
                Either::Left(ready(Ok(status.into_http())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_quiver_rpc_has_a_deliberate_role() {
        let cases = [
            (
                "/quiver.v1.RegistryService/Apply",
                Access::Needs(Role::Admin),
            ),
            (
                "/quiver.v1.RegistryService/Plan",
                Access::Needs(Role::Reader),
            ),
            ("/quiver.v1.OnlineService/Push", Access::Needs(Role::Writer)),
            (
                "/quiver.v1.OnlineService/GetOnlineFeatures",
                Access::Needs(Role::Reader),
            ),
            (
                "/quiver.v1.JobService/StartMaterialization",
                Access::Needs(Role::Writer),
            ),
            (
                "/quiver.v1.JobService/CancelJob",
                Access::Needs(Role::Writer),
            ),
            (
                "/quiver.v1.OfflineService/ExportTrainingData",
                Access::Needs(Role::Reader),
            ),
            (
                "/arrow.flight.protocol.FlightService/DoPut",
                Access::Needs(Role::Reader),
            ),
            (
                "/arrow.flight.protocol.FlightService/Handshake",
                Access::Open,
            ),
            ("/grpc.health.v1.Health/Check", Access::Open),
            (
                "/quiver.v1.RegistryService/DeleteEverything",
                Access::Needs(Role::Admin),
            ),
            ("/other.Service/Call", Access::Needs(Role::Admin)),
        ];
        for (path, access) in cases {
            assert_eq!(required_role(path), access, "{path}");
        }
    }

    #[test]
    fn every_method_in_the_descriptor_is_mapped_on_purpose() {
        // A new RPC in proto/ falls to `admin` until it is placed in `required_role`; this
        // test names it so that the choice is deliberate.
        use prost::Message;
        let set = prost_types::FileDescriptorSet::decode(quiver_proto::FILE_DESCRIPTOR_SET)
            .expect("descriptor set decodes");
        let mut count = 0;
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                    count += 1;
                    let admin_on_purpose = [
                        "/quiver.v1.RegistryService/Apply",
                        "/quiver.v1.RegistryService/Rollback",
                        "/quiver.v1.AdminService/Backup",
                    ]
                    .contains(&path.as_str());
                    assert!(
                        admin_on_purpose || required_role(&path) != Access::Needs(Role::Admin),
                        "{path} needs a role in required_role"
                    );
                }
            }
        }
        assert!(count >= 12, "only {count} methods found");
    }
}
