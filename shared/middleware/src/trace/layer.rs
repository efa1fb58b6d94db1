//! Both trace middlewares are one tower-http [`TraceLayer`] set up for gRPC, with the side
//! (server or client) as a parameter: tower-http opens the span (our [`MakeRpcSpan`]), enters
//! it whenever the call's future or body is polled, and classifies the outcome with its
//! [`GrpcErrorsAsFailures`] (from the headers of a trailers-only answer, else the trailers);
//! [`MarkFailure`] turns a failure into `otel.status_code = "error"`. Inside it,
//! [`Completion`](super::completion) records the code and logs the call's end (see there for
//! why that part is ours).

use http::Request;
use opentelemetry::trace::TraceContextExt as _;
use tower::Layer;
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, GrpcFailureClass, SharedClassifier};
use tower_http::trace::{MakeSpan, OnFailure, Trace, TraceLayer};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::completion::{Completed, CompletionLayer};
use super::{Side, level_for, propagation};
use crate::request_layers::MAX_REQUEST_ID_BYTES;

/// The tower-http trace service both sides use, around the [`Completed`] inner service.
pub type RpcTrace<S> =
    Trace<Completed<S>, SharedClassifier<GrpcErrorsAsFailures>, MakeRpcSpan, (), (), (), (), MarkFailure>;
/// A server wrapped by [`GrpcTraceLayer`].
pub type GrpcTrace<S> = RpcTrace<S>;
/// A client wrapped by [`GrpcClientTraceLayer`].
pub type GrpcClientTrace<S> = RpcTrace<S>;
/// A tonic channel with [`GrpcClientTraceLayer`] applied: what every Muster client holds.
pub type TracedChannel = GrpcClientTrace<tonic::transport::Channel>;

/// Which codes count as failures. OpenTelemetry's rule: a client marks every non-OK code, a
/// server only the codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED,
/// UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS); the others are the caller's problem.
fn classifier(side: Side) -> GrpcErrorsAsFailures {
    let classifier = GrpcErrorsAsFailures::new();
    match side {
        Side::Client => classifier,
        Side::Server => [
            GrpcCode::Cancelled,
            GrpcCode::InvalidArgument,
            GrpcCode::NotFound,
            GrpcCode::AlreadyExists,
            GrpcCode::PermissionDenied,
            GrpcCode::ResourceExhausted,
            GrpcCode::FailedPrecondition,
            GrpcCode::Aborted,
            GrpcCode::OutOfRange,
            GrpcCode::Unauthenticated,
        ]
        .into_iter()
        .fold(classifier, GrpcErrorsAsFailures::with_success),
    }
}

/// The trace layer for `side`, quiet on `quiet` paths.
fn rpc_trace<S>(side: Side, quiet: &'static [&'static str], inner: S) -> RpcTrace<S> {
    TraceLayer::new(SharedClassifier::new(classifier(side)))
        .make_span_with(MakeRpcSpan { side, quiet })
        .on_request(())
        .on_response(())
        .on_body_chunk(())
        .on_eos(())
        .on_failure(MarkFailure)
        .layer(CompletionLayer { side, quiet }.layer(inner))
}

/// Opens a call's span: `grpc.server` parented on the caller's `traceparent`, or
/// `grpc.client`, at DEBUG for quiet paths and INFO otherwise.
#[derive(Clone, Copy, Debug)]
pub struct MakeRpcSpan {
    side: Side,
    quiet: &'static [&'static str],
}

impl<B> MakeSpan<B> for MakeRpcSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let path = request.uri().path();
        let level = level_for(self.quiet, path);
        match self.side {
            Side::Client => rpc_span!(level, "grpc.client", "client", path),
            Side::Server => {
                let span = rpc_span!(level, "grpc.server", "server", path);
                let id = request.headers().get(crate::REQUEST_ID_HEADER).and_then(|id| id.to_str().ok());
                if let Some(id) = id.filter(|id| id.len() <= MAX_REQUEST_ID_BYTES) {
                    span.record("request.id", id);
                }
                if !span.is_disabled() {
                    let parent = propagation::extract(request.headers());
                    if parent.span().span_context().is_valid() {
                        // Fails only without an OpenTelemetry layer, where there is no trace to join.
                        let _ = span.set_parent(parent);
                    }
                }
                span
            }
        }
    }
}

/// Marks the span failed, as the side's classifier decided.
#[derive(Clone, Copy, Debug)]
pub struct MarkFailure;

impl OnFailure<GrpcFailureClass> for MarkFailure {
    fn on_failure(&mut self, _failure: GrpcFailureClass, _latency: std::time::Duration, span: &Span) {
        span.record("otel.status_code", "error");
    }
}

/// Wraps a gRPC server (the whole router) so every call gets a `grpc.server` span.
///
/// Span fields: `rpc.service`, `rpc.method`, `rpc.system = "grpc"`, `otel.kind = "server"`,
/// `otel.name = "pkg.Service/Method"` (the exported span name), `grpc.status_code` (from the
/// trailers, or the headers of a trailers-only response) and `otel.status_code = "error"` for
/// server-side failures. One `rpc finished` event per call carries the code and latency.
/// Put it outermost, so auth and overload rejections are traced too.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcTraceLayer {
    quiet: &'static [&'static str],
}

impl GrpcTraceLayer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Paths starting with any of these prefixes (e.g. `"/muster.v1.HeartbeatService/"`) are
    /// traced and logged at DEBUG instead of INFO.
    pub fn with_quiet_paths(mut self, prefixes: &'static [&'static str]) -> Self {
        self.quiet = prefixes;
        self
    }
}

impl<S> Layer<S> for GrpcTraceLayer {
    type Service = GrpcTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        rpc_trace(Side::Server, self.quiet, inner)
    }
}

/// Wraps an outbound channel (e.g. `tonic::transport::Channel`) so each call gets a
/// `grpc.client` span, child of the caller's current span, whose context is injected into the
/// request headers as W3C `traceparent` for the server to adopt.
///
/// Quiet paths get a DEBUG span; when that span is disabled the caller's current context is
/// propagated instead, so the trace still continues downstream.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcClientTraceLayer {
    quiet: &'static [&'static str],
}

impl GrpcClientTraceLayer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Paths starting with any of these prefixes are traced and logged at DEBUG.
    pub fn with_quiet_paths(mut self, prefixes: &'static [&'static str]) -> Self {
        self.quiet = prefixes;
        self
    }

    /// Wraps `channel`; shorthand for `Layer::layer` that needs no trait import.
    pub fn channel(self, channel: tonic::transport::Channel) -> TracedChannel {
        self.layer(channel)
    }
}

impl<S> Layer<S> for GrpcClientTraceLayer {
    type Service = GrpcClientTrace<S>;

    fn layer(&self, inner: S) -> Self::Service {
        rpc_trace(Side::Client, self.quiet, inner)
    }
}
