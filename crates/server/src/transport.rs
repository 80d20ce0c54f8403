//! What the gRPC transport answers on its own, made to follow Quiver's rules: a layer around
//! every service that bounds each handler by the request timeout (`DEADLINE_EXCEEDED` naming
//! `--request-timeout`) and rewrites the statuses tonic produces before a handler runs:
//! - a message over the size limit (tonic: `OUT_OF_RANGE`) is `RESOURCE_EXHAUSTED` naming the
//!   setting that raises it (`--max-message-bytes` or `--max-control-message-bytes`);
//! - a message that is not valid protobuf (tonic-prost: `INTERNAL`, "failed to decode
//!   Protobuf message") is the client's error, `INVALID_ARGUMENT`.
//!
//! Every other response passes unchanged. Quiver's own internal errors never carry the
//! decode text (they are masked, see [`crate::error`]), so the rewrite cannot catch them.
//!
//! The layer also gives every call a request id: the client's `x-request-id` when it sends a
//! short printable one, else 64 random bits in hex. The handler's future runs with it in a
//! task-local ([`request_id`]), which the audit and error log events read (no span per call:
//! one cost 15-20 % of throughput, see benches/README.md), and the response carries it back in
//! `x-request-id`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::{Code, Status};

tokio::task_local! {
    static REQUEST_ID: Arc<str>;
}

/// Longest client-chosen request id kept; a longer or unprintable one is replaced.
const MAX_REQUEST_ID: usize = 64;

/// The id of the call this code runs for, `-` outside one (or on the blocking pool).
pub(crate) fn request_id() -> Arc<str> {
    REQUEST_ID
        .try_with(Arc::clone)
        .unwrap_or_else(|_| Arc::from("-"))
}

/// The client's `x-request-id` when short and printable, else a fresh random one.
fn request_id_of<B>(request: &Request<B>) -> Arc<str> {
    let given = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_REQUEST_ID)
        .filter(|v| v.bytes().all(|b| b.is_ascii_graphic()));
    match given {
        Some(id) => Arc::from(id),
        None => Arc::from(format!("{:016x}", rand::random::<u64>())),
    }
}

/// Adds `x-request-id: id` to `response`.
fn with_request_id(mut response: Response<Body>, id: &str) -> Response<Body> {
    if let Ok(value) = tonic::codegen::http::HeaderValue::from_str(id) {
        response.headers_mut().insert("x-request-id", value);
    }
    response
}

/// The flag that raises the message size limit of the service at `path`.
fn message_setting(path: &str) -> &'static str {
    let data = path.starts_with("/quiver.v1.OnlineService/")
        || path.starts_with("/arrow.flight.protocol.FlightService/");
    if data {
        "--max-message-bytes"
    } else {
        "--max-control-message-bytes"
    }
}

/// The status to answer instead of `status` for a request to `path`, if any.
pub(crate) fn rewrite(path: &str, status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(format!(
                "request message too large: {message} ({})",
                message_setting(path)
            )))
        }
        Code::Internal if message.starts_with("failed to decode Protobuf message") => Some(
            Status::invalid_argument(format!("malformed request message: {message}")),
        ),
        _ => None,
    }
}

/// The layer's service: see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct TransportRules<S> {
    inner: S,
    timeout: Duration,
}

/// The layer that wraps every service in [`TransportRules`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct TransportLayer {
    pub(crate) timeout: Duration,
}

impl<S> tower_layer::Layer<S> for TransportLayer {
    type Service = TransportRules<S>;

    fn layer(&self, inner: S) -> TransportRules<S> {
        TransportRules {
            inner,
            timeout: self.timeout,
        }
    }
}

/// The router of a server built with the RPC metrics layer, [`TransportLayer`] and then the
/// auth layer (outermost first).
pub(crate) type Router = tonic::transport::server::Router<
    tower_layer::Stack<
        crate::auth::layer::AuthLayer,
        tower_layer::Stack<
            TransportLayer,
            tower_layer::Stack<crate::metrics::rpc::RpcMetricsLayer, tower_layer::Identity>,
        >,
    >,
>;

/// The future of a boxed tower service (this layer's and the metrics layer's).
pub(crate) type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for TransportRules<S>
where
    S: Service<Request<B>, Response = Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Response<Body>, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let timeout = self.timeout;
        let id = request_id_of(&request);
        let future = REQUEST_ID.scope(Arc::clone(&id), self.inner.call(request));
        Box::pin(async move {
            let Ok(response) = tokio::time::timeout(timeout, future).await else {
                tracing::warn!(%path, ?timeout, request_id = %id, "request timed out");
                let status = Status::deadline_exceeded(format!(
                    "the request ran longer than {}s ({})",
                    timeout.as_secs_f64(),
                    "--request-timeout"
                ));
                return Ok(with_request_id(status.into_http(), &id));
            };
            let mut response = response?;
            let rewritten = Status::from_header_map(response.headers())
                .and_then(|status| rewrite(&path, &status));
            if let Some(status) = rewritten {
                tracing::info!(%path, status = %status.message(), request_id = %id, "request refused by the transport");
                let headers = response.headers_mut();
                headers.remove("grpc-status-details-bin");
                if status.add_header(headers).is_err() {
                    return Ok(with_request_id(status.into_http(), &id));
                }
            }
            Ok(with_request_id(response, &id))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that answers after `delay`.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
    }

    impl Service<Request<()>> for Slow {
        type Response = Response<Body>;
        type Error = std::convert::Infallible;
        type Future = BoxFuture<Response<Body>, Self::Error>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<()>) -> Self::Future {
            let delay = self.delay;
            Box::pin(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok(Status::ok("").into_http())
            })
        }
    }

    #[tokio::test]
    async fn a_handler_over_the_timeout_is_deadline_exceeded_naming_the_setting() {
        use tower_layer::Layer;
        let layer = TransportLayer {
            timeout: Duration::from_millis(50),
        };
        let request = || Request::builder().uri("/x/y").body(()).unwrap_or_default();
        let mut slow = layer.layer(Slow {
            delay: Duration::from_secs(600),
        });
        let Ok(response) = slow.call(request()).await;
        let status = Status::from_header_map(response.headers());
        assert_eq!(
            status.as_ref().map(Status::code),
            Some(Code::DeadlineExceeded)
        );
        assert!(
            status.is_some_and(|s| s.message().contains("(--request-timeout)")),
            "{:?}",
            response.headers()
        );
        // A handler that is ready at once always answers (the timeout polls it first).
        let mut quick = layer.layer(Slow {
            delay: Duration::ZERO,
        });
        let Ok(response) = quick.call(request()).await;
        let status = Status::from_header_map(response.headers());
        assert_eq!(status.map(|s| s.code()), Some(Code::Ok));
    }

    #[test]
    fn size_and_decode_errors_become_client_errors() {
        let too_large = Status::out_of_range(
            "Error, decoded message length too large: found 5 bytes, the limit is: 4 bytes",
        );
        let rewritten = rewrite("/quiver.v1.RegistryService/Apply", &too_large);
        assert_eq!(
            rewritten.as_ref().map(Status::code),
            Some(Code::ResourceExhausted)
        );
        let message = rewritten.map(|s| s.message().to_string());
        assert!(
            message
                .as_deref()
                .is_some_and(|m| m.ends_with("(--max-control-message-bytes)")),
            "{message:?}"
        );
        let on_push = rewrite("/quiver.v1.OnlineService/Push", &too_large);
        assert!(on_push.is_some_and(|s| s.message().ends_with("(--max-message-bytes)")));
        let malformed = Status::internal("failed to decode Protobuf message: invalid varint");
        assert_eq!(
            rewrite("/x/y", &malformed).map(|s| s.code()),
            Some(Code::InvalidArgument)
        );
        // Anything else is kept: a real internal error stays INTERNAL.
        assert!(
            rewrite(
                "/x/y",
                &Status::internal("internal error; see the server log")
            )
            .is_none()
        );
        assert!(rewrite("/x/y", &Status::out_of_range("other")).is_none());
    }
}
