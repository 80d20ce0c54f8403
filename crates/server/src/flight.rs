//! Arrow Flight on the same port: GetFlightInfo (command = serialized ExportRequest) plans a
//! join (labels opened, columns validated, output schema; no view data read) and returns a
//! single-use ticket; DoGet runs it and streams its record batches; DoPut uploads a
//! label table (descriptor path `["labels", name]`); Handshake checks a token and hands it back as
//! `authorization: Bearer` for clients that authenticate that way. Every other Flight RPC is
//! unimplemented.
//!
//! GetFlightInfo's `app_metadata` is the export's metadata as a JSON object of strings, the
//! same `quiver.*` pairs a server-side export writes into its Parquet footer
//! (`{"quiver.version": "0.1.0", "quiver.feature_service": "driver_model", ...}`; no
//! `quiver.rows`, which is only known once the stream is read), so a client that writes the
//! stream to a file can keep them (`quiver export --flight` does). Tickets are single-use and
//! unguessable (128 random bits). DoPut answers with one `PutResult` whose `app_metadata` is
//! `{"name": <upload name>, "rows": <row count>}`; an empty table (a schema, no batch) is kept
//! and exports 0 rows, an upload without a schema is INVALID_ARGUMENT.
//!
//! A replica that shares its stores with others (`--online-store` or `--registry-store`)
//! hands out self-contained tickets instead: the export request itself, which DoGet on any
//! replica authorizes again for its caller and runs (so a ticket grants nothing its bearer
//! could not ask for directly). The export is then planned twice (GetFlightInfo, DoGet), and
//! the FlightInfo carries no `quiver.profile_id` (DoGet's run stores the profile). Label tables uploaded with DoPut stay on the replica that
//! took them; with several replicas, read labels from a labels root (object storage).
//!
//! Bounded (see [`crate::limits::Limits`]): tickets waiting for their DoGet
//! (`--max-flight-tickets`, each valid `--flight-ticket-ttl`), and uploads while they stream
//! in ([`crate::uploads`]). A DoGet whose client goes away stops: the join stream is dropped
//! with the response.

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
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{audited, describe_selector};
use crate::auth::{AuthError, Authenticator, principal};
use crate::bounded::{BoundedMap, Bounds};
use crate::error::{Error, Result};
use crate::export::{ExportRequest, Exporter, PreparedExport, upload_key};
use crate::limits::Limits;
use crate::metrics::Sink;
use crate::uploads::Reservation;

const TICKET_PREFIX: &str = "quiver-export:";

#[derive(Debug, Clone)]
pub struct FlightExport {
    exporter: Arc<Exporter>,
    pending: Arc<BoundedMap<PreparedExport>>,
    auth: Option<Arc<Authenticator>>,
    /// Tickets are the export request itself, good on any replica (not parked here).
    self_contained: bool,
}

impl FlightExport {
    /// `auth` checks Handshake credentials (every other call is checked by the auth layer);
    /// `self_contained`: tickets are the request itself (replicas sharing their stores).
    pub fn new(
        exporter: Arc<Exporter>,
        limits: &Limits,
        (auth, self_contained): (Option<Arc<Authenticator>>, bool),
    ) -> Self {
        FlightExport {
            exporter,
            pending: Arc::new(BoundedMap::new(Bounds {
                capacity: limits.max_flight_tickets,
                ttl: limits.flight_ticket_ttl,
                what: "Flight tickets waiting for their DoGet",
                capacity_setting: "--max-flight-tickets",
                ttl_setting: "--flight-ticket-ttl",
            })),
            auth,
            self_contained,
        }
    }

    fn park(&self, prepared: PreparedExport) -> Result<String> {
        let id = format!("{TICKET_PREFIX}{}", rand_suffix());
        self.pending.insert(id.clone(), prepared)?;
        Ok(id)
    }
}

/// The token a Flight handshake presents: `authorization: Bearer <token>`, Basic credentials
/// whose password is the token (pyarrow's `authenticate_basic_token`), or the first message's
/// payload.
fn handshake_token(
    header: Option<&[u8]>,
    payload: &[u8],
) -> std::result::Result<String, AuthError> {
    use base64::Engine;
    if let Some(value) = header {
        let text = std::str::from_utf8(value)
            .map_err(|_| AuthError::Invalid("the authorization header is not UTF-8".into()))?;
        if let Some(encoded) = text
            .strip_prefix("Basic ")
            .or_else(|| text.strip_prefix("basic "))
        {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .map_err(|_| AuthError::Invalid("Basic credentials are not base64".into()))?;
            let decoded = String::from_utf8(decoded)
                .map_err(|_| AuthError::Invalid("Basic credentials are not UTF-8".into()))?;
            let (_, password) = decoded.split_once(':').unwrap_or(("", &decoded));
            return Ok(password.to_string());
        }
        return crate::auth::bearer(Some(value)).map(str::to_string);
    }
    match std::str::from_utf8(payload) {
        Ok(token) if !token.is_empty() => Ok(token.to_string()),
        _ => Err(AuthError::NoToken),
    }
}

/// 128 random bits as 32 hex digits, from the thread-local CSPRNG (seeded by the OS).
fn rand_suffix() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("{:016x}{:016x}", rng.random::<u64>(), rng.random::<u64>())
}

/// The export's metadata pairs as a JSON object of strings.
fn metadata_json(metadata: &[(String, String)]) -> String {
    let object: serde_json::Map<String, serde_json::Value> = metadata
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// The record batches of a DoPut, counted against `reservation` as they arrive (bytes of
/// each message before decoding, rows of each batch). A table with a schema and no batch (an
/// empty table) keeps its schema as one empty batch, so it exports 0 rows; an upload without
/// even a schema is refused.
async fn decode_upload(
    stream: impl futures::Stream<Item = Result<FlightData, Status>> + Send + 'static,
    reservation: Arc<Reservation>,
) -> Result<Vec<arrow::record_batch::RecordBatch>> {
    let undecodable = |e: FlightError| match e {
        FlightError::ExternalError(inner) => match inner.downcast::<Error>() {
            Ok(limit) => *limit,
            Err(other) => Error::invalid(
                "flight_data",
                format!("cannot decode the uploaded record batches: {other}"),
            ),
        },
        other => Error::invalid(
            "flight_data",
            format!("cannot decode the uploaded record batches: {other}"),
        ),
    };
    let counted = Arc::clone(&reservation);
    let stream = stream.map_err(FlightError::from).and_then(move |data| {
        let bytes = (data.data_header.len() + data.data_body.len()) as u64;
        let counted = counted.add_bytes(bytes).map(|()| data);
        futures::future::ready(counted.map_err(|e| FlightError::ExternalError(Box::new(e))))
    });
    let mut decoded = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream);
    let mut batches = Vec::new();
    while let Some(batch) = decoded.try_next().await.map_err(undecodable)? {
        reservation.add_rows(batch.num_rows() as u64)?;
        batches.push(batch);
    }
    if batches.is_empty() {
        let Some(schema) = decoded.schema() else {
            return Err(Error::invalid(
                "flight_data",
                "the upload has no schema and no record batch; send the label table (an empty table still sends its schema)",
            ));
        };
        batches.push(arrow::record_batch::RecordBatch::new_empty(Arc::clone(
            schema,
        )));
    }
    Ok(batches)
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
        let principal = principal(&request)?.clone();
        let descriptor = request.into_inner();
        let export_request = crate::flight_command::decode(&descriptor.cmd, "descriptor.cmd")?;
        let export_request = ExportRequest::from_wire(&export_request)?.authorize(&principal)?;
        let objects = describe_selector(&export_request.selector);
        let prepared = self.exporter.prepare(&export_request).await;
        let prepared = audited(&principal, "GetFlightInfo", &objects, prepared)?;
        let schema = Arc::clone(&prepared.output.schema);
        // A self-contained ticket is planned again at DoGet, whose run stores the profile
        // under an id of its own: the one reserved here would name nothing.
        let metadata: Vec<(String, String)> = prepared
            .metadata
            .iter()
            .filter(|(key, _)| !(self.self_contained && key == "quiver.profile_id"))
            .cloned()
            .collect();
        let metadata = metadata_json(&metadata);
        let ticket = match self.self_contained {
            true => descriptor.cmd.clone(),
            false => self.park(prepared)?.into(),
        };
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Error::Internal(format!("schema encoding: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
            .with_descriptor(descriptor)
            .with_app_metadata(metadata);
        Ok(Response::new(info))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let principal = principal(&request)?.clone();
        let ticket = request.into_inner().ticket;
        let prepared = match std::str::from_utf8(&ticket)
            .ok()
            .filter(|t| t.starts_with(TICKET_PREFIX))
        {
            Some(id) => self.pending.take(id)?.ok_or_else(|| Error::NotFound {
                what: "flight ticket (tickets are single-use)",
                name: id.to_string(),
            })?,
            None => {
                let request = crate::flight_command::decode(&ticket, "ticket")?;
                let request = ExportRequest::from_wire(&request)?.authorize(&principal)?;
                let objects = describe_selector(&request.selector);
                let prepared = self.exporter.prepare(&request).await;
                audited(&principal, "DoGet", &objects, prepared)?
            }
        };
        let output = prepared.output;
        let mut recorder = self.exporter.recorder(Sink::Flight);
        let batches = output.stream.map(move |batch| {
            if let Ok(batch) = &batch {
                recorder.add_rows(batch.num_rows());
            }
            batch.map_err(|e| FlightError::ExternalError(Box::new(e)))
        });
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
        let principal = principal(&request)?.clone();
        let mut stream = request.into_inner().peekable();
        let first = std::pin::Pin::new(&mut stream).peek().await.cloned();
        let descriptor = match first {
            Some(Ok(data)) => data.flight_descriptor,
            Some(Err(status)) => return Err(status),
            None => None,
        };
        let name = match descriptor.as_ref().map(|d| d.path.as_slice()) {
            Some([kind, name])
                if kind == "labels" && !name.is_empty() && !name.chars().any(char::is_control) =>
            {
                name.clone()
            }
            _ => {
                return Err(Error::invalid(
                    "flight_descriptor.path",
                    "use the path [\"labels\", <name>] (a name without control characters) to upload a label table",
                )
                .into());
            }
        };
        let reservation = Arc::new(self.exporter.uploads().reserve());
        let batches = decode_upload(stream, Arc::clone(&reservation)).await?;
        let rows: usize = batches
            .iter()
            .map(|b: &arrow::record_batch::RecordBatch| b.num_rows())
            .sum();
        let reservation = Arc::into_inner(reservation).ok_or_else(|| {
            Error::Internal("the upload stream still holds its reservation".into())
        })?;
        let stored = self
            .exporter
            .uploads()
            .put(upload_key(&principal, &name), batches, reservation)
            .await;
        audited(&principal, "DoPut", &format!("labels:{name}"), stored)?;
        tracing::info!(upload = %name, rows, "label table uploaded");
        let result = PutResult {
            app_metadata: serde_json::json!({ "name": name, "rows": rows })
                .to_string()
                .into(),
        };
        Ok(Response::new(
            futures::stream::once(async move { Ok(result) }).boxed(),
        ))
    }

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let Some(auth) = &self.auth else {
            let response = HandshakeResponse::default();
            return Ok(Response::new(
                futures::stream::once(async { Ok(response) }).boxed(),
            ));
        };
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        let mut stream = request.into_inner();
        let payload = match stream.next().await {
            Some(message) => message?.payload,
            None => Default::default(),
        };
        let token = handshake_token(header.as_deref(), &payload).map_err(Error::from)?;
        let principal = auth.authenticate(&token).map_err(Error::from)?;
        tracing::info!(principal = principal.name, "Flight handshake");
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut reply = Response::new(futures::stream::once(async { Ok(response) }).boxed());
        let bearer = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::invalid_argument("the token is not valid header text"))?;
        reply.metadata_mut().insert("authorization", bearer);
        Ok(reply)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_suffixes_are_128_random_bits() {
        let (a, b) = (rand_suffix(), rand_suffix());
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn metadata_is_a_json_object_of_strings() {
        let metadata = vec![
            (
                "quiver.feature_service".to_string(),
                "a \"quoted\" name".to_string(),
            ),
            ("quiver.full_names".to_string(), "false".to_string()),
        ];
        let parsed: std::collections::BTreeMap<String, String> =
            serde_json::from_str(&metadata_json(&metadata)).expect("json");
        assert_eq!(parsed, metadata.into_iter().collect());
    }
}
