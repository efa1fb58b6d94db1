//! A lean gRPC bidirectional-stream client for load generation: one mTLS connection, one
//! stream, and everything (sending, receiving, the HTTP/2 connection itself) driven by the one
//! task that owns the [`BidiStream`].
//!
//! Why not tonic here: a tonic client stream costs three tasks per message in each direction
//! (the caller, hyper's request-body pipe and the connection), and the simulated workers of a
//! fleet share the machine's cores with the servers they measure. With the connection polled
//! inside the caller's own awaits, a beat is one task wake to send and one to receive, which
//! roughly halves the load generator's CPU per beat, so the figures are the server's and not
//! the load generator's queueing. On the wire it is the same protocol a tonic client speaks:
//! HTTP/2 over TLS 1.3 with ALPN `h2`, `application/grpc` length-prefixed prost messages,
//! and the status in `grpc-status` trailers (or a trailers-only response).
//!
//! The caller must be awaiting one of the stream's methods for the connection to make
//! progress: [`BidiStream::send`] only queues a message; [`BidiStream::message`] and
//! [`BidiStream::idle_until`] flush it and read.
//!
//! TLS is the caller's rustls config: for gateways, the worker agent's own
//! (`muster_worker_agent::tls::gateway_tls`), so simulated workers check a gateway exactly as
//! real ones do.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tonic::{Code, Status};

/// The gRPC frame header: a compression flag and a big-endian length.
const FRAME_HEADER: usize = 5;
/// Largest message accepted from the server.
const MAX_MESSAGE: usize = 4 << 20;
/// How long the TLS and HTTP/2 handshakes may take once connected (a gateway busy with a
/// storm of handshakes answers late, not never).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Driver = h2::client::Connection<TlsStream<TcpStream>, Bytes>;

enum Inbound {
    /// The response headers have not arrived yet (grpc-go sends them with the first message).
    Waiting(h2::client::ResponseFuture),
    Open(h2::RecvStream),
    /// The stream ended; a further read answers this again.
    Ended(Option<Status>),
}

/// One open `Req`-stream / `Resp`-stream call on its own connection. Dropping it closes the
/// connection.
pub struct BidiStream<Req, Resp> {
    driver: Driver,
    outbound: h2::SendStream<Bytes>,
    inbound: Inbound,
    buffer: BytesMut,
    encode: BytesMut,
    _messages: PhantomData<fn(Req) -> Resp>,
}

fn transport(what: &str, err: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("{what}: {err}"))
}

/// A TCP connection to `addr`, from `source` when given.
async fn connect(source: Option<IpAddr>, addr: &str) -> std::io::Result<TcpStream> {
    let Some(source) = source else { return TcpStream::connect(addr).await };
    let target = tokio::net::lookup_host(addr)
        .await?
        .find(|target| target.is_ipv4() == source.is_ipv4())
        .ok_or_else(|| std::io::Error::other(format!("{addr} has no address of {source}'s family")))?;
    let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// Polls `future` while driving the connection; a connection that ends first is an error.
async fn driven<T>(driver: &mut Driver, future: impl Future<Output = T>) -> Result<T, Status> {
    tokio::select! {
        biased;
        out = future => Ok(out),
        closed = driver => Err(match closed {
            Ok(()) => Status::unavailable("the server closed the connection"),
            Err(err) => transport("the connection failed", err),
        }),
    }
}

impl<Req: prost::Message, Resp: prost::Message + Default> BidiStream<Req, Resp> {
    /// Connects to `addr` (`host:port`; TCP within `connect_timeout`, then the handshakes over
    /// `tls`) and opens `path` (such as `/muster.v1.HeartbeatService/ReportStatus`). The server
    /// sees nothing of the call until the first message is sent and flushed.
    pub async fn open(
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        connect_timeout: Duration,
    ) -> Result<Self, Status> {
        Self::open_from(None, addr, tls, path, connect_timeout).await
    }

    /// [`open`](Self::open) from the local address `source` (any port): one loopback address
    /// offers about 28,000 ephemeral ports, so a fleet of 100,000 connections spreads over
    /// several of 127.0.0.0/8.
    pub async fn open_from(
        source: Option<IpAddr>,
        addr: &str,
        tls: Arc<rustls::ClientConfig>,
        path: &str,
        connect_timeout: Duration,
    ) -> Result<Self, Status> {
        let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host).trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|err| Status::invalid_argument(format!("server address {addr}: {err}")))?;
        let late = |what: &str, limit: Duration| Status::deadline_exceeded(format!("{what} took over {limit:?}"));
        let tcp = tokio::time::timeout(connect_timeout, connect(source, addr))
            .await
            .map_err(|_| late(&format!("connecting to {addr}"), connect_timeout))?
            .map_err(|err| transport(&format!("connecting to {addr}"), err))?;
        tcp.set_nodelay(true).map_err(|err| transport("TCP_NODELAY", err))?;
        let handshakes = async {
            let io = TlsConnector::from(tls)
                .connect(server_name, tcp)
                .await
                .map_err(|err| transport(&format!("TLS handshake with {addr}"), err))?;
            h2::client::handshake(io).await.map_err(|err| transport("the HTTP/2 handshake", err))
        };
        let (requests, mut driver) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshakes)
            .await
            .map_err(|_| late(&format!("the handshakes with {addr}"), HANDSHAKE_TIMEOUT))??;
        let mut requests = driven(&mut driver, requests.ready())
            .await?
            .map_err(|err| transport("the HTTP/2 connection refused a stream", err))?;
        let request = http::Request::post(format!("https://{addr}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|err| Status::internal(format!("building the request: {err}")))?;
        let (response, outbound) =
            requests.send_request(request, false).map_err(|err| transport("opening the stream", err))?;
        Ok(Self {
            driver,
            outbound,
            inbound: Inbound::Waiting(response),
            buffer: BytesMut::new(),
            encode: BytesMut::new(),
            _messages: PhantomData,
        })
    }

    /// Queues `message`; it goes out at the next [`message`](Self::message) or
    /// [`idle_until`](Self::idle_until).
    pub fn send(&mut self, message: &Req) -> Result<(), Status> {
        let len = message.encoded_len();
        self.encode.reserve(FRAME_HEADER + len);
        self.encode.put_u8(0);
        self.encode.put_u32(u32::try_from(len).map_err(|_| Status::internal("message over 4 GiB"))?);
        message.encode(&mut self.encode).map_err(|err| Status::internal(format!("encoding: {err}")))?;
        let frame = self.encode.split().freeze();
        self.outbound.send_data(frame, false).map_err(|err| transport("sending", err))
    }

    /// The next message from the server; `None` once it ended the stream with status OK.
    pub async fn message(&mut self) -> Result<Option<Resp>, Status> {
        loop {
            match &mut self.inbound {
                Inbound::Ended(status) => return status.clone().map_or(Ok(None), Err),
                Inbound::Waiting(response) => {
                    let response = driven(&mut self.driver, response).await?;
                    self.inbound = match response {
                        Err(err) => Inbound::Ended(Some(transport("the response", err))),
                        Ok(response) if response.status() != http::StatusCode::OK => Inbound::Ended(Some(
                            Status::unknown(format!("HTTP status {} instead of 200", response.status())),
                        )),
                        // A trailers-only response: the status is in the headers.
                        Ok(response) if response.body().is_end_stream() => {
                            Inbound::Ended(ended(Status::from_header_map(response.headers())))
                        }
                        Ok(response) => Inbound::Open(response.into_body()),
                    };
                }
                Inbound::Open(body) => {
                    if let Some(message) = decode_frame::<Resp>(&mut self.buffer)? {
                        return Ok(Some(message));
                    }
                    match driven(&mut self.driver, body.data()).await? {
                        Some(Ok(chunk)) => {
                            let _ = body.flow_control().release_capacity(chunk.len());
                            self.buffer.extend_from_slice(&chunk);
                        }
                        Some(Err(err)) => self.inbound = Inbound::Ended(Some(transport("receiving", err))),
                        None => {
                            let trailers = driven(&mut self.driver, body.trailers()).await?;
                            let status = match trailers {
                                Ok(trailers) => ended(trailers.as_ref().and_then(Status::from_header_map)),
                                Err(err) => Some(transport("the trailers", err)),
                            };
                            self.inbound = Inbound::Ended(status);
                        }
                    }
                }
            }
        }
    }

    /// Keeps the connection going (flushing what was sent, answering pings) until `deadline`.
    pub async fn idle_until(&mut self, deadline: Instant) -> Result<(), Status> {
        driven(&mut self.driver, tokio::time::sleep_until(deadline.into())).await
    }
}

/// `None` for an OK status, the status otherwise (a missing one is an error too).
fn ended(status: Option<Status>) -> Option<Status> {
    match status {
        Some(status) if status.code() == Code::Ok => None,
        Some(status) => Some(status),
        None => Some(Status::internal("the stream ended without a grpc-status")),
    }
}

/// Takes one whole message off the front of `buffer`, if it holds one.
fn decode_frame<M: prost::Message + Default>(buffer: &mut BytesMut) -> Result<Option<M>, Status> {
    if buffer.len() < FRAME_HEADER {
        return Ok(None);
    }
    let compressed = buffer[0];
    let len = u32::from_be_bytes([buffer[1], buffer[2], buffer[3], buffer[4]]) as usize;
    if compressed != 0 {
        return Err(Status::internal("the server sent a compressed message; none was asked for"));
    }
    if len > MAX_MESSAGE {
        return Err(Status::resource_exhausted(format!("a {len}-byte message is over the {MAX_MESSAGE}-byte limit")));
    }
    if buffer.len() < FRAME_HEADER + len {
        return Ok(None);
    }
    buffer.advance(FRAME_HEADER);
    let frame = buffer.split_to(len);
    M::decode(frame).map(Some).map_err(|err| Status::internal(format!("decoding a message: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::v1;

    fn frame(message: &impl prost::Message) -> Vec<u8> {
        let body = message.encode_to_vec();
        let mut out = vec![0];
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn frames_split_anywhere_decode_once_whole() {
        let ack = v1::StatusAck { sequence: 7, ttl_ms: 1234, gateway_id: "gw-1".into(), ..Default::default() };
        let bytes = [frame(&ack), frame(&v1::StatusAck { sequence: 8, ..Default::default() })].concat();
        for cut in 0..bytes.len() {
            let mut buffer = BytesMut::from(&bytes[..cut]);
            let mut decoded = Vec::new();
            while let Some(message) = decode_frame::<v1::StatusAck>(&mut buffer).unwrap() {
                decoded.push(message.sequence);
            }
            buffer.extend_from_slice(&bytes[cut..]);
            while let Some(message) = decode_frame::<v1::StatusAck>(&mut buffer).unwrap() {
                decoded.push(message.sequence);
            }
            assert_eq!(decoded, [7, 8], "cut at {cut}");
            assert!(buffer.is_empty());
        }
    }

    #[test]
    fn compressed_and_oversized_frames_are_refused() {
        let mut compressed = BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
        let err = decode_frame::<v1::StatusAck>(&mut compressed).unwrap_err();
        assert!(err.message().contains("compressed"), "{err}");
        let mut huge = BytesMut::from(&[0u8, 0xff, 0xff, 0xff, 0xff][..]);
        assert_eq!(decode_frame::<v1::StatusAck>(&mut huge).unwrap_err().code(), Code::ResourceExhausted);
    }

    #[test]
    fn an_ok_status_ends_cleanly_and_a_missing_one_is_an_error() {
        assert!(ended(Some(Status::ok(""))).is_none());
        assert_eq!(ended(Some(Status::permission_denied("revoked"))).unwrap().code(), Code::PermissionDenied);
        assert_eq!(ended(None).unwrap().code(), Code::Internal);
    }
}
