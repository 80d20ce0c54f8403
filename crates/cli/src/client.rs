//! gRPC clients of a Quiver server.

use anyhow::{Context, Result};
use quiver_proto::v1;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone)]
pub(crate) struct Clients {
    pub registry: v1::registry_service_client::RegistryServiceClient<Channel>,
    pub online: v1::online_service_client::OnlineServiceClient<Channel>,
    pub jobs: v1::job_service_client::JobServiceClient<Channel>,
    pub offline: v1::offline_service_client::OfflineServiceClient<Channel>,
    pub channel: Channel,
}

pub(crate) async fn connect(server: &str) -> Result<Clients> {
    let channel = Endpoint::from_shared(server.to_string())
        .with_context(|| format!("invalid server address `{server}`; use a URL like http://127.0.0.1:50051"))?
        .connect()
        .await
        .with_context(|| format!("cannot reach the Quiver server at {server}; start one with `quiver serve` or set --server / QUIVER_SERVER"))?;
    let limit = 256 * 1024 * 1024;
    Ok(Clients {
        registry: v1::registry_service_client::RegistryServiceClient::new(channel.clone()),
        online: v1::online_service_client::OnlineServiceClient::new(channel.clone())
            .max_decoding_message_size(limit)
            .max_encoding_message_size(limit),
        jobs: v1::job_service_client::JobServiceClient::new(channel.clone()),
        offline: v1::offline_service_client::OfflineServiceClient::new(channel.clone()),
        channel,
    })
}
