//! gRPC clients of a Quiver server: one channel (TLS for `https://` URLs), with the bearer
//! token on every call when one is given.

use anyhow::{Context, Result};
use quiver_proto::v1;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::ServerArg;

/// Largest message sent or received (pushes, online batches and Flight batches are large).
pub(crate) const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Debug, Clone, Default)]
pub(crate) struct Credentials {
    header: Option<MetadataValue<Ascii>>,
}

impl Credentials {
    fn new(token: Option<&str>) -> Result<Credentials> {
        let header = token
            .map(|token| {
                format!("Bearer {}", token.trim())
                    .parse()
                    .context("the token has characters that cannot be sent in a header")
            })
            .transpose()?;
        Ok(Credentials { header })
    }
}

impl tonic::service::Interceptor for Credentials {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

/// A channel that sends the credentials.
pub(crate) type AuthChannel = InterceptedService<Channel, Credentials>;

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub registry: v1::registry_service_client::RegistryServiceClient<AuthChannel>,
    pub online: v1::online_service_client::OnlineServiceClient<AuthChannel>,
    pub jobs: v1::job_service_client::JobServiceClient<AuthChannel>,
    pub offline: v1::offline_service_client::OfflineServiceClient<AuthChannel>,
    pub monitoring: v1::monitoring_service_client::MonitoringServiceClient<AuthChannel>,
    pub channel: AuthChannel,
}

fn endpoint(server: &ServerArg) -> Result<Endpoint> {
    let url = &server.server;
    let endpoint = Endpoint::from_shared(url.clone()).with_context(|| {
        format!("invalid server address `{url}`; use a URL like http://127.0.0.1:50051")
    })?;
    if !url.starts_with("https://") {
        if server.tls_ca.is_some() {
            anyhow::bail!("--tls-ca is given but `{url}` is not an https:// URL");
        }
        return Ok(endpoint);
    }
    let tls = match &server.tls_ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --tls-ca {}", path.display()))?;
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
        }
        None => ClientTlsConfig::new().with_native_roots(),
    };
    endpoint
        .tls_config(tls)
        .context("cannot configure TLS for the server URL")
}

pub(crate) async fn connect(server: &ServerArg) -> Result<Clients> {
    let url = &server.server;
    let channel = endpoint(server)?
        .connect()
        .await
        .with_context(|| format!("cannot reach the Quiver server at {url}; start one with `quiver serve` or set --server / QUIVER_SERVER"))?;
    let channel = InterceptedService::new(channel, Credentials::new(server.token.as_deref())?);
    let limit = MAX_MESSAGE_BYTES;
    Ok(Clients {
        registry: v1::registry_service_client::RegistryServiceClient::new(channel.clone()),
        online: v1::online_service_client::OnlineServiceClient::new(channel.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        jobs: v1::job_service_client::JobServiceClient::new(channel.clone()),
        offline: v1::offline_service_client::OfflineServiceClient::new(channel.clone()),
        monitoring: v1::monitoring_service_client::MonitoringServiceClient::new(channel.clone())
            .max_decoding_message_size(limit),
        channel,
    })
}
