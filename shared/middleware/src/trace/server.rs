//! Server side: one `grpc.server` span per call, parented on the caller's `traceparent`.

use std::fmt::Display;
use std::task::{Context, Poll};

use http::{Request, Response};
use opentelemetry::trace::TraceContextExt as _;
use tower::{Layer, Service};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::body::{Completion, Side, TracedBody, TracedFuture};
use super::{level_for, propagation};

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
        GrpcTrace { inner, quiet: self.quiet }
    }
}

/// The service built by [`GrpcTraceLayer`].
#[derive(Clone, Debug)]
pub struct GrpcTrace<S> {
    inner: S,
    quiet: &'static [&'static str],
}

impl<S, B, ResBody> Service<Request<B>> for GrpcTrace<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Display,
{
    type Response = Response<TracedBody<ResBody>>;
    type Error = S::Error;
    type Future = TracedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let level = level_for(self.quiet, req.uri().path());
        let span = rpc_span!(level, "grpc.server", "server", req.uri().path());
        if !span.is_disabled() {
            let parent = propagation::extract(req.headers());
            if parent.span().span_context().is_valid() {
                // Fails only without an OpenTelemetry layer, where there is no trace to join.
                let _ = span.set_parent(parent);
            }
        }
        let completion = Completion::new(span.clone(), level, Side::Server, req.uri().path_and_query());
        let future = span.in_scope(|| self.inner.call(req));
        TracedFuture::new(future, span, completion)
    }
}
