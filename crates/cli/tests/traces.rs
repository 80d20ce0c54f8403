//! Trace export (builds with `--features otel`): `quiver serve --otlp-endpoint` sends a span
//! per RPC to a real OTLP/gRPC receiver (opentelemetry-proto's generated TraceService, served
//! here on loopback), joined to the caller's W3C trace, with the gRPC conventions' attributes.
#![cfg(feature = "otel")]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use quiver_proto::v1;
use support::ServerProcess;
use tonic::{Request, Response, Status};

/// A received span with its resource's attributes.
type Received = (HashMap<String, String>, Span);

/// The receiver: everything it was sent.
#[derive(Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = self.0.lock().expect("lock");
        for resource_spans in request.into_inner().resource_spans {
            let resource = attributes(
                &resource_spans
                    .resource
                    .map(|r| r.attributes)
                    .unwrap_or_default(),
            );
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.push((resource.clone(), span));
                }
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn attributes(
    list: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    list.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// A GetOnlineFeatures call for a service that does not exist (NOT_FOUND), with the given
/// `traceparent` (if any) and `x-request-id`.
async fn call(url: &str, traceparent: Option<&str>, request_id: &str) -> tonic::Code {
    let mut client = v1::online_service_client::OnlineServiceClient::connect(url.to_string())
        .await
        .expect("connect");
    let mut request = Request::new(v1::GetOnlineFeaturesRequest {
        selector: Some(v1::get_online_features_request::Selector::FeatureService(
            "no_such_service".into(),
        )),
        ..Default::default()
    });
    if let Some(parent) = traceparent {
        request
            .metadata_mut()
            .insert("traceparent", parent.parse().expect("header"));
    }
    request
        .metadata_mut()
        .insert("x-request-id", request_id.parse().expect("header"));
    match client.get_online_features(request).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

#[test]
fn rpc_spans_join_the_callers_trace_and_follow_its_sampling() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let received = Receiver::default();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    runtime.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // Ratio 0: only a caller's sampled trace is exported, never a trace started here.
    let server = ServerProcess::start_with(
        &data,
        &["--otlp-endpoint", &endpoint, "--otlp-sample-ratio", "0"],
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent_id = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace_id}-{parent_id}-01");
    let url = server.url.clone();
    runtime.block_on(async {
        let code = call(&url, Some(&traceparent), "traced-call").await;
        assert_eq!(code, tonic::Code::NotFound);
        let code = call(&url, None, "untraced-call").await;
        assert_eq!(code, tonic::Code::NotFound);
    });
    server.stop(); // a graceful shutdown exports what is buffered

    let spans = received.0.lock().expect("lock").clone();
    assert_eq!(spans.len(), 1, "only the caller's sampled trace: {spans:?}");
    let (resource, span) = &spans[0];
    assert_eq!(
        resource.get("service.name").map(String::as_str),
        Some("quiver")
    );
    assert_eq!(
        quiver_core::fingerprint::hex(&span.trace_id),
        trace_id,
        "joined the caller's trace"
    );
    assert_eq!(
        quiver_core::fingerprint::hex(&span.parent_span_id),
        parent_id
    );
    assert_eq!(span.name, "quiver.v1.OnlineService/GetOnlineFeatures");
    assert_eq!(
        span.kind,
        opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32
    );
    let attributes = attributes(&span.attributes);
    for (key, value) in [
        ("rpc.system", "grpc"),
        ("rpc.service", "quiver.v1.OnlineService"),
        ("rpc.method", "GetOnlineFeatures"),
        ("rpc.grpc.status_code", "5"),
        ("request_id", "traced-call"),
    ] {
        assert_eq!(
            attributes.get(key).map(String::as_str),
            Some(value),
            "{key} in {attributes:?}"
        );
    }
    // NOT_FOUND is the caller's error, not the server's: the span's status stays unset.
    let status = span.status.clone().unwrap_or_default();
    assert_eq!(status.code, 0, "{status:?}");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
}
