//! Tower middleware and the one mapping from domain errors to gRPC status.
//!
//! Every Muster gRPC server and client is glued from these pieces, one middleware per module:
//!
//! - [`error`]: [`ApiError`], the only place domain errors become gRPC codes, and the leader
//!   hint (`x-muster-leader-id` / `x-muster-leader-addr`) that followers attach.
//! - [`trace`]: `grpc.server` / `grpc.client` spans joined across processes by W3C
//!   `traceparent` ([`TracedChannel`] is the traced outbound channel), and the same context as
//!   a string for work that leaves the request's task (Raft apply).
//! - [`authz`]: the authorization table, every method of every port and the roles that may
//!   call it; [`auth`]: the layer that enforces it, default deny.
//! - [`overload`]: a process-wide in-flight limit that sheds excess calls as
//!   `RESOURCE_EXHAUSTED`.
//! - [`limits`]: [`ServerLimits`] and the `tonic` server builder that applies them.
//! - [`reflection`]: server reflection listing a port's services, every one of which resolves.
//! - [`channel`]: the one way outbound channels are built (keepalive pings, so a call on a
//!   connection into a network cut fails instead of hanging).
//!
//! A server stacks them outermost first: trace, overload, auth, then the router. Muster's
//! servers then serve from `muster_listener::tls` (or `plain`) with
//! `serve_with_incoming_shutdown`, which bounds TLS handshakes, the HTTP/2 preface and
//! connection counts; the shape of the stack, with tonic's own TLS for brevity:
//!
//! ```no_run
//! # async fn run(tls: tonic::transport::ServerTlsConfig) -> Result<(), Box<dyn std::error::Error>> {
//! use muster_middleware::{AuthorizeLayer, GrpcTraceLayer, ServerLimits, limits};
//!
//! let limits = ServerLimits::default();
//! let (_reporter, health) = tonic_health::server::health_reporter();
//! limits::server_builder(&limits)
//!     .tls_config(tls)?
//!     .layer(GrpcTraceLayer::new().with_quiet_paths(&["/muster.v1.HeartbeatService/"]))
//!     .layer(limits::overload_layer(&limits))
//!     .layer(AuthorizeLayer::cluster())
//!     .add_service(health.max_decoding_message_size(limits.max_message_bytes))
//!     .serve("0.0.0.0:3669".parse()?)
//!     .await?;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

pub mod auth;
pub mod authz;
pub mod channel;
pub mod error;
pub mod limits;
pub mod overload;
pub mod reflection;
pub mod refusal;
pub mod request_layers;
pub mod trace;

pub use auth::{AuthorizeLayer, FORWARDED_PEER_HEADER, Peer};
pub use channel::{ChannelOptions, lazy_channel};
pub use error::{
    ApiError, COMPACT_REVISION_HEADER, LEADER_ADDR_HEADER, LEADER_ID_HEADER, LeaderHint, RESUME_REVISION_HEADER,
    WatchEnd, leader_hint, watch_end,
};
pub use limits::{ServerLimits, overload_layer, server_builder};
pub use overload::OverloadLayer;
pub use reflection::reflection_services;
pub use refusal::{REFUSAL_HEADER, Refused, refusal};
pub use request_layers::{REQUEST_ID_HEADER, request_layers};
pub use trace::{GrpcClientTraceLayer, GrpcTraceLayer, TracedChannel};
