//! RPC metrics: a layer in front of every service that counts each call by method and gRPC
//! status code and times it to the end of its response. The code comes from `grpc-status`
//! in the response headers (a trailers-only answer: every error of a unary call) or in the
//! trailers (after the last message, streams included); a call whose future or body is
//! dropped before a status (the client went away) counts as `CANCELLED`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::Either;
use http_body::{Frame, SizeHint};
use prost::Message;
use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::{Code, Status};
use tracing::Instrument;

use super::Metrics;
use crate::error::{Error, Result};
use crate::transport::BoxFuture;

/// Arrow Flight's methods (arrow-flight ships no descriptor set to read them from).
const FLIGHT_METHODS: [&str; 10] = [
    "Handshake",
    "ListFlights",
    "GetFlightInfo",
    "PollFlightInfo",
    "GetSchema",
    "DoGet",
    "DoPut",
    "DoExchange",
    "DoAction",
    "ListActions",
];

/// Every method the server answers, as `(service, method)` label values; index 0 is
/// `unknown` (any other path: its name is the caller's, so it is never a label).
#[derive(Debug)]
pub(crate) struct MethodTable {
    names: Vec<(String, String)>,
    by_path: HashMap<String, u16>,
}

impl MethodTable {
    /// Quiver's, health's and reflection's methods from their descriptor sets, and Flight's.
    pub(crate) fn new() -> Result<MethodTable> {
        let mut names = vec![("unknown".to_string(), "unknown".to_string())];
        for set in [
            quiver_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        ] {
            let set = prost_types::FileDescriptorSet::decode(set)
                .map_err(|e| Error::Internal(format!("method table: {e}")))?;
            for file in &set.file {
                for service in &file.service {
                    let service_name = format!("{}.{}", file.package(), service.name());
                    for method in &service.method {
                        names.push((service_name.clone(), method.name().to_string()));
                    }
                }
            }
        }
        for method in FLIGHT_METHODS {
            names.push(("arrow.flight.protocol.FlightService".into(), method.into()));
        }
        let by_path = names
            .iter()
            .enumerate()
            .skip(1)
            .map(|(i, (service, method))| (format!("/{service}/{method}"), i as u16))
            .collect();
        Ok(MethodTable { names, by_path })
    }

    pub(crate) fn index(&self, path: &str) -> u16 {
        self.by_path.get(path).copied().unwrap_or(0)
    }

    pub(crate) fn name(&self, index: u16) -> (&str, &str) {
        let (service, method) = self.names.get(index as usize).unwrap_or(&self.names[0]);
        (service, method)
    }
}

/// The gRPC name of `code` (as in the spec and other servers' metrics).
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// One call being measured: recorded exactly once, when its status is known or when it is
/// dropped without one (`CANCELLED`).
#[derive(Debug)]
struct Call {
    metrics: Arc<Metrics>,
    method: u16,
    started: Instant,
    recorded: bool,
    /// The call's span when the server opens one per RPC; ends here, with the status.
    span: Option<tracing::Span>,
}

impl Call {
    fn finish(&mut self, code: Code) {
        if !self.recorded {
            self.recorded = true;
            self.metrics
                .record_rpc(self.method, code, self.started.elapsed());
            if let Some(span) = self.span.take() {
                crate::rpc_span::finish(&span, code);
            }
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn status_code(headers: &HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?;
    Some(Code::from_bytes(value.as_bytes()))
}

/// The layer: see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct RpcMetricsLayer {
    pub(crate) metrics: Arc<Metrics>,
    /// Open a span per call ([`crate::rpc_span`]).
    pub(crate) spans: bool,
}

impl<S> tower_layer::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;

    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            metrics: Arc::clone(&self.metrics),
            spans: self.spans,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct RpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
    spans: bool,
}

impl<S, B> Service<Request<B>> for RpcMetrics<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        let method = self.metrics.method_index(request.uri().path());
        let span = self.spans.then(|| {
            let (service, name) = self.metrics.method_name(method);
            crate::rpc_span::start(service, name, &request)
        });
        let future = match &span {
            None => Either::Left(self.inner.call(request)),
            Some(span) => {
                let _entered = span.enter();
                Either::Right(self.inner.call(request).instrument(span.clone()))
            }
        };
        let mut call = Call {
            method,
            metrics: Arc::clone(&self.metrics),
            started,
            recorded: false,
            span,
        };
        Box::pin(async move {
            let response = future.await?;
            if let Some(span) = &call.span {
                crate::rpc_span::record_request_id(span, response.headers());
            }
            if let Some(code) = status_code(response.headers()) {
                call.finish(code);
                return Ok(response);
            }
            Ok(response.map(|body| Body::new(ObservedBody { inner: body, call })))
        })
    }
}

/// A response body that finishes its [`Call`] at the trailers (or the end, or an error).
#[derive(Debug)]
struct ObservedBody {
    inner: Body,
    call: Call,
}

impl http_body::Body for ObservedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    self.call.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => self.call.finish(status.code()),
            // The end without trailers: gRPC says the call failed in transport.
            Poll::Ready(None) => self.call.finish(Code::Unknown),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_methods_have_names_and_anything_else_is_unknown() -> Result<()> {
        let table = MethodTable::new()?;
        let get = table.index("/quiver.v1.OnlineService/GetOnlineFeatures");
        assert_eq!(
            table.name(get),
            ("quiver.v1.OnlineService", "GetOnlineFeatures")
        );
        let check = table.index("/grpc.health.v1.Health/Check");
        assert_eq!(table.name(check), ("grpc.health.v1.Health", "Check"));
        let do_get = table.index("/arrow.flight.protocol.FlightService/DoGet");
        assert_eq!(
            table.name(do_get),
            ("arrow.flight.protocol.FlightService", "DoGet")
        );
        for path in ["/quiver.v1.OnlineService/Nope", "/x", "", "/a/b/c"] {
            assert_eq!(table.index(path), 0, "{path}");
        }
        assert_eq!(table.name(0), ("unknown", "unknown"));
        assert_eq!(table.name(u16::MAX), ("unknown", "unknown"));
        Ok(())
    }

    #[test]
    fn code_names_round_trip_through_the_wire_numbers() {
        for number in 0..=16 {
            let code = Code::from_i32(number);
            let name = code_name(code);
            assert!(name.chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            assert_eq!(
                name.replace('_', "").to_lowercase(),
                format!("{code:?}").to_lowercase()
            );
        }
    }
}
