//! `quiver.v1.OfflineService`: training export to Parquet with a progress stream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::BoxStream;
use quiver_proto::v1;
use tonic::{Request, Response, Status};

use crate::audit::{audited, describe_selector};
use crate::auth::principal;
use crate::error::{Error, Result};
use crate::export::{ExportRequest, Exporter};
use crate::metrics::Sink;

const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct OfflineService {
    exporter: Arc<Exporter>,
}

impl OfflineService {
    pub fn new(exporter: Arc<Exporter>) -> Self {
        OfflineService { exporter }
    }
}

fn matched(stats: &quiver_offline::JoinStats) -> Vec<v1::ViewMatch> {
    stats
        .matched
        .iter()
        .map(|(view, n)| v1::ViewMatch {
            view: view.clone(),
            matched: n.load(Ordering::Relaxed),
        })
        .collect()
}

#[tonic::async_trait]
impl v1::offline_service_server::OfflineService for OfflineService {
    type ExportTrainingDataStream = BoxStream<'static, Result<v1::ExportProgress, Status>>;

    async fn export_training_data(
        &self,
        request: Request<v1::ExportRequest>,
    ) -> Result<Response<Self::ExportTrainingDataStream>, Status> {
        let principal = principal(&request)?;
        let request = ExportRequest::from_wire(request.get_ref())?.authorize(principal)?;
        let output = self.exporter.output_file(&request)?;
        let output_path = request.output_path.clone().unwrap_or_default();
        let started = Instant::now();
        let objects = describe_selector(&request.selector);
        let prepared = self.exporter.prepare(&request).await;
        let prepared = audited(principal, "ExportTrainingData", &objects, prepared)?;
        let stats = Arc::clone(&prepared.output.stats);
        let metadata = prepared.metadata.clone();
        // Aborted when the progress stream is dropped (the client went away or cancelled):
        // the join stops and the writer removes its temporary file.
        let recorder = self.exporter.recorder(Sink::File);
        let writer = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
            let joined = prepared.output;
            quiver_offline::write_export(joined.schema, joined.stream, &output, prepared.metadata)
                .await
        }));
        let stream = futures::stream::unfold(Some((writer, stats, recorder)), move |state| {
            let (metadata, output_path) = (metadata.clone(), output_path.clone());
            async move {
                let (mut writer, stats, mut recorder) = state?;
                tokio::select! {
                    joined = &mut writer => {
                        let result: Result<u64> = match joined {
                            Ok(inner) => inner.map_err(Error::from),
                            Err(e) => Err(Error::Internal(format!("export task failed: {e}"))),
                        };
                        if let Ok(rows) = &result {
                            recorder.add_rows(*rows as usize);
                        }
                        let item = result.map(|rows| {
                            let mut metadata: std::collections::HashMap<String, String> = metadata.into_iter().collect();
                            metadata.insert("quiver.rows".into(), rows.to_string());
                            v1::ExportProgress {
                                rows,
                                done: true,
                                matched: matched(&stats),
                                elapsed_micros: started.elapsed().as_micros() as i64,
                                output_path,
                                metadata,
                                spilled_partitions: stats.spilled_partitions.load(Ordering::Relaxed),
                            }
                        }).map_err(Status::from);
                        Some((item, None))
                    }
                    () = tokio::time::sleep(PROGRESS_INTERVAL) => {
                        let progress = v1::ExportProgress {
                            rows: stats.label_rows.load(Ordering::Relaxed),
                            matched: matched(&stats),
                            elapsed_micros: started.elapsed().as_micros() as i64,
                            spilled_partitions: stats.spilled_partitions.load(Ordering::Relaxed),
                            ..Default::default()
                        };
                        Some((Ok(progress), Some((writer, stats, recorder))))
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
