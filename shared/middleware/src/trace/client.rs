//! Client side: one `grpc.client` span per outbound call, sent along as `traceparent`.

use std::fmt::Display;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::body::{Completion, Side, TracedBody, TracedFuture};
use super::{level_for, propagation};

/// A tonic channel with [`GrpcClientTraceLayer`] applied: what every Muster client holds.
pub type TracedChannel = GrpcClientTrace<tonic::transport::Channel>;

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
        GrpcClientTrace { inner, quiet: self.quiet }
    }
}

/// The service built by [`GrpcClientTraceLayer`].
#[derive(Clone, Debug)]
pub struct GrpcClientTrace<S> {
    inner: S,
    quiet: &'static [&'static str],
}

impl<S, B, ResBody> Service<Request<B>> for GrpcClientTrace<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let level = level_for(self.quiet, req.uri().path());
        let span = rpc_span!(level, "grpc.client", "client", req.uri().path());
        let cx = if span.is_disabled() { Span::current().context() } else { span.context() };
        propagation::inject(&cx, req.headers_mut());
        let completion = Completion::new(span.clone(), level, Side::Client, req.uri().path_and_query());
        let future = span.in_scope(|| self.inner.call(req));
        TracedFuture::new(future, span, completion)
    }
}
