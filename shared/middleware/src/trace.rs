//! One span per gRPC call on both ends, joined into one trace by W3C `traceparent` headers.
//!
//! [`GrpcTraceLayer`] goes on every server, [`GrpcClientTraceLayer`] on every outbound channel;
//! together they make a `Register` one trace from worker-agent to Raft apply. Both read the
//! global OpenTelemetry propagator that `muster-telemetry` installs. Hot methods (heartbeats)
//! can be marked quiet: their spans and completion logs are emitted at `DEBUG`, so under the
//! usual `info` filter they cost nearly nothing and are not exported.
//!
//! Work that leaves the request's task (a Raft apply) carries the context as a string:
//! [`traceparent`] and [`set_remote_parent`].
//!
//! Layout: `layer` builds both middlewares from tower-http's `TraceLayer` (span, gRPC failure
//! classification), `completion` is the hand-written inner part tower-http cannot do (the
//! final `grpc-status` and latency of every call, dropped streams, injecting `traceparent`),
//! `propagation` the header carriers, `context` the string form.

/// Opens the span for one call at `$level` (INFO or DEBUG; spans need a static level).
macro_rules! rpc_span {
    ($level:expr, $name:literal, $kind:literal, $path:expr) => {{
        let path: &str = $path;
        let (service, method) = $crate::trace::rpc_parts(path);
        let otel_name = path.strip_prefix('/').unwrap_or(path);
        if $level == ::tracing::Level::DEBUG {
            ::tracing::debug_span!(
                $name,
                otel.name = otel_name,
                otel.kind = $kind,
                otel.status_code = ::tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                grpc.status_code = ::tracing::field::Empty,
                request.id = ::tracing::field::Empty,
            )
        } else {
            ::tracing::info_span!(
                $name,
                otel.name = otel_name,
                otel.kind = $kind,
                otel.status_code = ::tracing::field::Empty,
                rpc.system = "grpc",
                rpc.service = service,
                rpc.method = method,
                grpc.status_code = ::tracing::field::Empty,
                request.id = ::tracing::field::Empty,
            )
        }
    }};
}

mod completion;
mod context;
mod layer;
mod propagation;

pub use completion::{Completed, CompletedBody, CompletedFuture};
pub use context::{set_remote_parent, traceparent};
pub use layer::{
    GrpcClientTrace, GrpcClientTraceLayer, GrpcTrace, GrpcTraceLayer, MakeRpcSpan, MarkFailure, RpcTrace, TracedChannel,
};

/// Which end of the call a span describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Server,
    Client,
}

impl Side {
    /// The span's name: `grpc.server` or `grpc.client`.
    pub(crate) fn span_name(self) -> &'static str {
        match self {
            Side::Server => "grpc.server",
            Side::Client => "grpc.client",
        }
    }
}

/// Splits a gRPC path `/pkg.Service/Method` into `("pkg.Service", "Method")`.
///
/// Anything else is reported whole as the service with an empty method, so odd requests still
/// get a span rather than a panic.
pub(crate) fn rpc_parts(path: &str) -> (&str, &str) {
    path.strip_prefix('/')
        .and_then(|rest| rest.split_once('/'))
        .filter(|(service, method)| !service.is_empty() && !method.contains('/'))
        .unwrap_or((path, ""))
}

/// Returns the level for a call's span and completion log: DEBUG for quiet paths, else INFO.
pub(crate) fn level_for(quiet: &[&str], path: &str) -> tracing::Level {
    if is_quiet(quiet, path) { tracing::Level::DEBUG } else { tracing::Level::INFO }
}

/// Whether `path` starts with one of the quiet prefixes.
pub(crate) fn is_quiet(quiet: &[&str], path: &str) -> bool {
    quiet.iter().any(|prefix| path.starts_with(prefix))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn splits_well_formed_paths() {
        assert_eq!(rpc_parts("/muster.v1.WorkerService/Register"), ("muster.v1.WorkerService", "Register"));
    }

    #[test]
    fn keeps_malformed_paths_whole() {
        assert_eq!(rpc_parts("/"), ("/", ""));
        assert_eq!(rpc_parts("/a/b/c"), ("/a/b/c", ""));
        assert_eq!(rpc_parts("nope"), ("nope", ""));
    }

    #[test]
    fn quiet_matches_by_prefix() {
        let quiet = ["/muster.v1.HeartbeatService/", "/grpc.health.v1.Health/Check"];
        assert!(is_quiet(&quiet, "/muster.v1.HeartbeatService/ReportStatus"));
        assert!(is_quiet(&quiet, "/grpc.health.v1.Health/Check"));
        assert!(!is_quiet(&quiet, "/muster.v1.WorkerService/Register"));
    }
}
