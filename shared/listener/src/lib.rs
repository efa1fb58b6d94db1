//! The connection layer under every Muster listener. tonic's `TcpIncoming` and a bare accept
//! loop hold any socket for as long as the peer likes and spin on `EMFILE`: a flood of
//! connections that never finish TLS, or never start HTTP/2, exhausts descriptors and then
//! the CPU. This crate owns the socket from `accept` until the first HTTP bytes:
//!
//! - [`backoff`]: accept errors (`EMFILE`, `ENFILE`, ...) sleep with a growing delay and are
//!   logged once per interval, not once per attempt;
//! - [`caps`]: connections per listener and per source IP; over a cap, a socket is closed
//!   as soon as it is accepted;
//! - [`preface`]: [`Conn`], which closes a connection whose first bytes (the HTTP/2 client
//!   preface) do not arrive in time and costs one branch per read afterwards;
//! - [`incoming`]: the stream tonic serves from, doing TLS itself (tokio-rustls) with a
//!   handshake deadline, concurrently, so slow handshakes never hold up accept;
//! - [`bind`]: binding a configured address, with an error naming the setting;
//! - [`metrics`]: the `muster_listener_*` counters of every listener in the process.
//!
//! tonic's own `TlsConnectInfo<TcpConnectInfo>` still reaches the request extensions, so
//! `Request::peer_certs`, `remote_addr` and the auth layer see what they always did.

#![forbid(unsafe_code)]

pub mod backoff;
pub mod bind;
pub mod caps;
pub mod incoming;
pub mod metrics;
pub mod preface;

pub use backoff::AcceptBackoff;
pub use bind::{BindError, bind, bind_with_backlog};
pub use caps::{ConnectionCaps, Permit};
pub use incoming::{Guarded, Incoming, ListenerStats, plain, tls};
pub use muster_config::ListenerLimits;
pub use preface::Conn;

/// TCP keepalive on every accepted socket, for peers that vanish without a FIN.
pub const TCP_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);
