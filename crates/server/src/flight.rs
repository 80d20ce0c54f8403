//! Arrow Flight on the same port: GetFlightInfo (command = serialized ExportRequest) prepares a
//! join and returns a single-use ticket; DoGet streams its record batches; DoPut uploads a
//! label table (descriptor path `["labels", name]`). Every other Flight RPC is unimplemented.

use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use quiver_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use crate::bounded::BoundedMap;
use crate::error::{Error, Result};
use crate::export::{self, PreparedExport};
use crate::state::AppState;

/// Prepared exports waiting for their DoGet; the oldest is dropped beyond this many.
const MAX_PENDING: usize = 16;
const TICKET_PREFIX: &str = "quiver-export:";

#[derive(Debug, Clone)]
pub struct FlightExport {
    state: Arc<AppState>,
    pending: Arc<BoundedMap<PreparedExport>>,
}

impl FlightExport {
    pub fn new(state: Arc<AppState>) -> Self {
        FlightExport {
            state,
            pending: Arc::new(BoundedMap::new(MAX_PENDING)),
        }
    }

    fn park(&self, prepared: PreparedExport) -> Result<String> {
        let id = format!(
            "{TICKET_PREFIX}{}-{}",
            self.state.clock.now(),
            rand_suffix()
        );
        self.pending.insert(id.clone(), prepared)?;
        Ok(id)
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    hasher.finish()
}

fn decode_request(bytes: &[u8], field: &str) -> Result<v1::ExportRequest> {
    v1::ExportRequest::decode(bytes).map_err(|e| {
        Error::invalid(
            field,
            format!("not a serialized quiver.v1.ExportRequest: {e}"),
        )
    })
}

type FlightStream<T> = BoxStream<'static, Result<T, Status>>;

#[tonic::async_trait]
impl FlightService for FlightExport {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;
    type DoExchangeStream = FlightStream<FlightData>;

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let descriptor = request.into_inner();
        let export_request = decode_request(&descriptor.cmd, "descriptor.cmd")?;
        let prepared = export::prepare(&self.state, &export_request).await?;
        let schema = Arc::clone(&prepared.output.schema);
        let ticket = self.park(prepared)?;
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Error::Internal(format!("schema encoding: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = request.into_inner().ticket;
        let prepared = match std::str::from_utf8(&ticket)
            .ok()
            .filter(|t| t.starts_with(TICKET_PREFIX))
        {
            Some(id) => self.pending.take(id)?.ok_or_else(|| Error::NotFound {
                what: "flight ticket (tickets are single-use)",
                name: id.to_string(),
            })?,
            None => export::prepare(&self.state, &decode_request(&ticket, "ticket")?).await?,
        };
        let output = prepared.output;
        let batches = output
            .stream
            .map_err(|e| FlightError::ExternalError(Box::new(e)));
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(output.schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(encoded.boxed()))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let mut stream = request.into_inner().peekable();
        let first = std::pin::Pin::new(&mut stream).peek().await.cloned();
        let descriptor = match first {
            Some(Ok(data)) => data.flight_descriptor,
            Some(Err(status)) => return Err(status),
            None => None,
        };
        let name = match descriptor.as_ref().map(|d| d.path.as_slice()) {
            Some([kind, name]) if kind == "labels" && !name.is_empty() => name.clone(),
            _ => {
                return Err(Error::invalid(
                    "flight_descriptor.path",
                    "use the path [\"labels\", <name>] to upload a label table",
                )
                .into());
            }
        };
        let decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
            stream.map_err(FlightError::from),
        );
        let batches: Vec<_> = decoded.try_collect().await.map_err(|e| {
            Error::invalid(
                "flight_data",
                format!("cannot decode the uploaded record batches: {e}"),
            )
        })?;
        let rows: usize = batches
            .iter()
            .map(|b: &arrow::record_batch::RecordBatch| b.num_rows())
            .sum();
        self.state.uploads.put(name.clone(), batches)?;
        tracing::info!(upload = %name, rows, "label table uploaded");
        let result = PutResult {
            app_metadata: format!("{{\"name\":\"{name}\",\"rows\":{rows}}}").into(),
        };
        Ok(Response::new(
            futures::stream::once(async move { Ok(result) }).boxed(),
        ))
    }

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "handshake is not needed: Quiver's Flight service has no authentication",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented(
            "list_flights: ask GetFlightInfo with a serialized quiver.v1.ExportRequest",
        ))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info: use GetFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "get_schema: GetFlightInfo returns the schema",
        ))
    }

    async fn do_action(
        &self,
        _request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}
