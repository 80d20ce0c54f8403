//! A tracing span per RPC, when [`crate::ServerOptions::rpc_spans`] asks for one (off by
//! default: a span per call cost 15-20 % of online throughput, see benches/README.md).
//!
//! The span follows OpenTelemetry's conventions for gRPC servers: named `service/method`,
//! server kind, `rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, and an
//! error status only for the codes that mean the server failed (a client's bad argument is
//! not the server's error). It also carries the call's `request_id`. It is opened by the RPC
//! metrics layer (outermost, so it covers auth and the transport's rules) and ends with the
//! call's status, at the trailers of a stream. With the `otel` feature it joins the caller's
//! trace from the W3C `traceparent` header; quiver-cli exports it over OTLP.

use tonic::Code;
use tonic::codegen::http::{HeaderMap, Request};
use tracing::Span;
use tracing::field::Empty;

/// Opens the span of a call to `service/method`.
pub(crate) fn start<B>(service: &str, method: &str, request: &Request<B>) -> Span {
    let span = tracing::info_span!(
        target: "quiver::rpc",
        "rpc",
        otel.name = %format_args!("{service}/{method}"),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        request_id = Empty,
    );
    join_caller_trace(&span, request.headers());
    span
}

/// Records the response's `x-request-id` (set by the transport layer) on `span`.
pub(crate) fn record_request_id(span: &Span, headers: &HeaderMap) {
    if let Some(id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        span.record("request_id", id);
    }
}

/// Records the call's final status on `span` (which ends when its last handle drops).
pub(crate) fn finish(span: &Span, code: Code) {
    span.record("rpc.grpc.status_code", code as i32);
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The codes OpenTelemetry's gRPC conventions count as a server span's error.
fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

#[cfg(feature = "otel")]
fn join_caller_trace(span: &Span, headers: &HeaderMap) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(headers)));
    // An error means the span is disabled (no OpenTelemetry layer): nothing to join.
    let _ = span.set_parent(parent);
}

#[cfg(not(feature = "otel"))]
fn join_caller_trace(_: &Span, _: &HeaderMap) {}

/// Request headers as OpenTelemetry's propagators read them.
#[cfg(feature = "otel")]
struct Headers<'a>(&'a HeaderMap);

#[cfg(feature = "otel")]
impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}
