//! Outbound channels to Muster servers, built one way everywhere (clients, Raft peers, the
//! leader forwarder): connecting on first use, over the caller's mTLS identity or plaintext,
//! with `TCP_NODELAY`, HTTP/2 keepalive pings, and a `grpc.client` span per call.
//!
//! Why the pings: a server behind a network cut drops packets rather than refusing them, so
//! an established connection to it looks healthy, and a call on it waits for its deadline
//! (with none, for the kernel to give up retransmitting, many minutes later). A ping left
//! unanswered for [`ChannelOptions::keepalive`] closes the connection: the calls on it fail at
//! once as unavailable, and the next call reconnects, bounded by the connect timeout.

use std::time::Duration;

use muster_tls::ClientTls;
use tonic::transport::Endpoint;

use crate::trace::{GrpcClientTraceLayer, TracedChannel};

/// How a channel connects and notices a dead peer.
#[derive(Clone, Copy, Debug)]
pub struct ChannelOptions {
    /// Bound on one TCP connect (and TLS handshake start).
    pub connect_timeout: Duration,
    /// Ping period, and how long a ping may go unanswered before the connection is dropped;
    /// pings are sent on idle connections too.
    pub keepalive: Duration,
    /// Paths whose spans are DEBUG (see [`GrpcClientTraceLayer::with_quiet_paths`]).
    pub quiet_paths: &'static [&'static str],
}

/// A lazily connecting channel to `addr` (`host:port`, an `http://` or `https://` prefix is
/// ignored: TLS is `tls`'s).
pub fn lazy_channel(
    addr: &str,
    tls: Option<&ClientTls>,
    options: ChannelOptions,
) -> Result<TracedChannel, tonic::transport::Error> {
    let host_port = addr.trim_start_matches("http://").trim_start_matches("https://");
    let endpoint = Endpoint::from_shared(format!("http://{host_port}"))?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(options.keepalive)
        .keep_alive_timeout(options.keepalive)
        .keep_alive_while_idle(true);
    let channel = match tls {
        Some(tls) => tls.connect_lazy(endpoint),
        None => endpoint.connect_lazy(),
    };
    Ok(GrpcClientTraceLayer::new().with_quiet_paths(options.quiet_paths).channel(channel))
}
