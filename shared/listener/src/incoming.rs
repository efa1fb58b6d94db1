//! The stream of connections a tonic server serves from (`serve_with_incoming_shutdown`).
//! One task accepts (with [`AcceptBackoff`]), applies the [`ConnectionCaps`], sets
//! `TCP_NODELAY` and keepalive, and spawns the TLS handshake of each connection under its
//! deadline; finished connections reach tonic wrapped in a preface [`Conn`]. Handshakes run
//! concurrently, so a thousand stalled ones cost a thousand sleeping tasks, not a stalled
//! accept loop. The stream ends, and the listener closes, when tonic drops it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use muster_config::ListenerLimits;
use pin_project::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::backoff::{AcceptBackoff, LOG_INTERVAL};
use crate::caps::{ConnectionCaps, Permit};
use crate::preface::Conn;

/// What one listener has refused and closed, for metrics.
#[derive(Debug)]
pub struct ListenerStats {
    pub(crate) name: &'static str,
    caps: Arc<ConnectionCaps>,
    /// Connections closed at accept because a cap was reached.
    pub refused_over_cap: AtomicU64,
    /// Connections closed because the TLS handshake did not finish in time.
    pub handshake_timeouts: AtomicU64,
    /// Connections whose TLS handshake failed.
    pub handshake_failures: AtomicU64,
    /// Connections closed because the HTTP/2 preface did not arrive in time.
    pub preface_timeouts: AtomicU64,
}

impl ListenerStats {
    /// Counters for the listener `name` whose connections `caps` counts, exported by
    /// [`crate::metrics::render`] from now on.
    pub fn register(name: &'static str, caps: Arc<ConnectionCaps>) -> Arc<Self> {
        let stats = Arc::new(Self {
            name,
            caps,
            refused_over_cap: AtomicU64::new(0),
            handshake_timeouts: AtomicU64::new(0),
            handshake_failures: AtomicU64::new(0),
            preface_timeouts: AtomicU64::new(0),
        });
        crate::metrics::register(&stats);
        stats
    }

    /// Connections open now, handshaking ones included.
    pub fn open_connections(&self) -> usize {
        self.caps.open()
    }
}

/// An accepted TCP connection holding its place under the caps until it drops.
#[pin_project]
#[derive(Debug)]
pub struct Guarded {
    #[pin]
    tcp: TcpStream,
    _permit: Permit,
}

/// Connections ready for tonic: `S` is [`Guarded`] in plaintext, `TlsStream<Guarded>` with TLS.
#[derive(Debug)]
pub struct Incoming<S> {
    connections: ReceiverStream<io::Result<Conn<S>>>,
    stats: Arc<ListenerStats>,
}

impl<S> Incoming<S> {
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }
}

impl<S> Stream for Incoming<S> {
    type Item = io::Result<Conn<S>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.connections).poll_next(cx)
    }
}

/// Plaintext connections (`--insecure`): caps, backoff and the preface deadline from accept.
pub fn plain(listener: TcpListener, limits: &ListenerLimits, name: &'static str) -> Incoming<Guarded> {
    spawn_accept(listener, limits, name, |tcp| async move { Ok(tcp) })
}

/// TLS connections: caps, backoff, the handshake deadline, then the preface deadline.
pub fn tls(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: &ListenerLimits,
    name: &'static str,
) -> Incoming<TlsStream<Guarded>> {
    let acceptor = TlsAcceptor::from(config);
    spawn_accept(listener, limits, name, move |tcp| acceptor.accept(tcp))
}

fn spawn_accept<S, H, Fut>(
    listener: TcpListener,
    limits: &ListenerLimits,
    name: &'static str,
    handshake: H,
) -> Incoming<S>
where
    S: Send + 'static,
    H: Fn(Guarded) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<S>> + Send + 'static,
{
    let caps = ConnectionCaps::new(limits.max_connections, limits.max_connections_per_ip);
    let stats = ListenerStats::register(name, caps.clone());
    let (tx, rx) = mpsc::channel(256);
    let task = AcceptLoop {
        listener,
        name,
        caps,
        stats: stats.clone(),
        handshake_timeout: limits.tls_handshake_timeout,
        preface_timeout: limits.preface_timeout,
    };
    tokio::spawn(task.run(tx, handshake));
    Incoming { connections: ReceiverStream::new(rx), stats }
}

struct AcceptLoop {
    listener: TcpListener,
    name: &'static str,
    caps: Arc<ConnectionCaps>,
    stats: Arc<ListenerStats>,
    handshake_timeout: Duration,
    preface_timeout: Duration,
}

impl AcceptLoop {
    async fn run<S, H, Fut>(self, tx: mpsc::Sender<io::Result<Conn<S>>>, handshake: H)
    where
        S: Send + 'static,
        H: Fn(Guarded) -> Fut,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
    {
        let mut backoff = AcceptBackoff::new(self.name);
        let mut last_refusal_log: Option<Instant> = None;
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = backoff.accept(|| self.listener.accept()) => accepted,
                _ = tx.closed() => return,
            };
            let Some(permit) = self.caps.try_acquire(peer.ip()) else {
                let refused = self.stats.refused_over_cap.fetch_add(1, Ordering::Relaxed) + 1;
                if last_refusal_log.is_none_or(|last| last.elapsed() >= LOG_INTERVAL) {
                    last_refusal_log = Some(Instant::now());
                    tracing::warn!(listener = self.name, %peer, refused, "connection cap reached; closing new connections");
                }
                continue;
            };
            configure(&tcp);
            let connecting = handshake(Guarded { tcp, _permit: permit });
            let (tx, stats, name) = (tx.clone(), self.stats.clone(), self.name);
            let (handshake_timeout, preface_timeout) = (self.handshake_timeout, self.preface_timeout);
            tokio::spawn(async move {
                match tokio::time::timeout(handshake_timeout, connecting).await {
                    Ok(Ok(io)) => {
                        let _ = tx.send(Ok(Conn::new(io, preface_timeout).counting(stats))).await;
                    }
                    Ok(Err(err)) => {
                        stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = name, %peer, error = %err, "TLS handshake failed");
                    }
                    Err(_) => {
                        stats.handshake_timeouts.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                    }
                }
            });
        }
    }
}

/// `TCP_NODELAY` (small responses must not wait on delayed ACKs) and TCP keepalive.
fn configure(tcp: &TcpStream) {
    let _ = tcp.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(crate::TCP_KEEPALIVE);
    let _ = socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive);
}

impl AsyncRead for Guarded {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().tcp.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().tcp.poll_shutdown(cx)
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.tcp.connect_info()
    }
}
