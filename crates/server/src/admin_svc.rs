//! `quiver.v1.AdminService`: backups of the data directory while serving (see [`crate::backup`]).

use std::sync::Arc;

use futures::stream::BoxStream;
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::audit::audited;
use crate::auth::principal;
use crate::backup::Backups;

/// Chunks buffered between the file reader and the client: 4 MiB at most.
const BUFFERED_CHUNKS: usize = 4;

#[derive(Debug, Clone)]
pub struct AdminService {
    backups: Arc<Backups>,
}

impl AdminService {
    pub fn new(backups: Arc<Backups>) -> Self {
        AdminService { backups }
    }
}

#[tonic::async_trait]
impl v1::admin_service_server::AdminService for AdminService {
    type BackupStream = BoxStream<'static, Result<v1::BackupResponse, Status>>;

    async fn backup(
        &self,
        request: Request<v1::BackupRequest>,
    ) -> Result<Response<Self::BackupStream>, Status> {
        let principal = principal(&request)?;
        let backups = Arc::clone(&self.backups);
        // Push-log files stay while they are linked (compaction deletes none meanwhile).
        let hold = backups.hold_push_log().await;
        let staged = crate::run_blocking(move || backups.stage(hold)).await;
        let staged = audited(principal, "Backup", "data directory", staged)?;
        let (sender, receiver) = tokio::sync::mpsc::channel(BUFFERED_CHUNKS);
        // Reads files on the blocking pool; stops when the client goes away (the receiver
        // is dropped), and the staged copy is removed when `staged` drops.
        tokio::task::spawn_blocking(move || {
            let send = |item: crate::Result<v1::BackupResponse>| {
                sender.blocking_send(item.map_err(Status::from)).is_ok()
            };
            if staged.stream(send) {
                tracing::info!("backup streamed");
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }
}
