//! Records how a call ended, wherever the `grpc-status` turns up.
//!
//! Errors usually come back trailers-only (`grpc-status` in the response headers), but a
//! normal unary call and every stream end with trailers, so the response body is wrapped and
//! the call is finished when the trailers (or the end, or a drop) arrive. That also makes a
//! streaming RPC's span cover the whole stream, not just its first headers.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderMap, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project::pin_project;
use tracing::{Level, Span};

const OK: i32 = 0;
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;

/// Which end of the call the span describes; decides what counts as a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

impl Side {
    /// OpenTelemetry's rule: clients mark every non-OK code as an error, servers only the
    /// codes that mean the server failed (UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED,
    /// INTERNAL, UNAVAILABLE, DATA_LOSS).
    fn is_error(self, code: i32) -> bool {
        match self {
            Side::Client => code != OK,
            Side::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        }
    }
}

/// Whether a server-side code is worth a warning whatever the method's usual level.
fn is_server_fault(code: i32) -> bool {
    matches!(code, 2 | 13 | 15)
}

/// Reads `grpc-status` from headers or trailers.
fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

/// The pending end of one call: records the code on the span and logs one line, exactly once.
pub(crate) struct Completion {
    span: Span,
    level: Level,
    side: Side,
    start: Instant,
    /// Kept only when the span is disabled (quiet method), so a warning can still name it.
    path: Option<PathAndQuery>,
    done: bool,
}

impl Completion {
    pub(crate) fn new(span: Span, level: Level, side: Side, path: Option<&PathAndQuery>) -> Self {
        let path = span.is_disabled().then(|| path.cloned()).flatten();
        Self { span, level, side, start: Instant::now(), path, done: false }
    }

    fn finish(&mut self, code: i32, error: Option<&dyn Display>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        self.span.record("grpc.status_code", code);
        if self.side.is_error(code) {
            self.span.record("otel.status_code", "error");
        }
        let elapsed_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let error = error.map(ToString::to_string);
        let error = error.as_deref();
        let path = self.path.as_ref().map(PathAndQuery::path);
        let span = &self.span;
        let level = if self.side == Side::Server && is_server_fault(code) { Level::WARN } else { self.level };
        if level == Level::WARN {
            tracing::warn!(parent: span, grpc.status_code = code, elapsed_ms, error, path, "rpc finished");
        } else if level == Level::DEBUG {
            tracing::debug!(parent: span, grpc.status_code = code, elapsed_ms, error, path, "rpc finished");
        } else {
            tracing::info!(parent: span, grpc.status_code = code, elapsed_ms, error, path, "rpc finished");
        }
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        // Dropped without an outcome: the peer went away or a timeout dropped the call.
        self.finish(CANCELLED, Some(&"dropped before the call completed"));
    }
}

/// The response future of both trace middlewares: polls the call inside its span.
#[pin_project]
pub struct TracedFuture<F> {
    #[pin]
    inner: F,
    span: Span,
    completion: Option<Completion>,
}

impl<F> TracedFuture<F> {
    pub(crate) fn new(inner: F, span: Span, completion: Completion) -> Self {
        Self { inner, span, completion: Some(completion) }
    }
}

impl<F, B, E> Future for TracedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Display,
{
    type Output = Result<Response<TracedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = ready!(this.inner.poll(cx));
        let mut completion = this.completion.take();
        match result {
            Ok(response) => {
                if let (Some(done), Some(code)) = (&mut completion, grpc_status(response.headers())) {
                    // Trailers-only response: the outcome is already known.
                    done.finish(code, None);
                    completion = None;
                }
                let span = this.span.clone();
                Poll::Ready(Ok(response.map(|inner| TracedBody { inner, span, completion })))
            }
            Err(err) => {
                if let Some(done) = &mut completion {
                    done.finish(UNKNOWN, Some(&err));
                }
                Poll::Ready(Err(err))
            }
        }
    }
}

/// A response body that finishes its call's span when the trailers or the end go by.
#[pin_project]
pub struct TracedBody<B> {
    #[pin]
    inner: B,
    span: Span,
    completion: Option<Completion>,
}

impl<B> Body for TracedBody<B>
where
    B: Body,
    B::Error: Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let _entered = this.span.enter();
        let polled = ready!(this.inner.poll_frame(cx));
        if let Some(completion) = this.completion {
            match &polled {
                Some(Ok(frame)) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        completion.finish(grpc_status(trailers).unwrap_or(OK), None);
                    }
                }
                Some(Err(err)) => completion.finish(UNKNOWN, Some(err)),
                None => completion.finish(OK, None),
            }
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
