//! The peer listener: see the parent module.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use muster_config::ListenerLimits;
use muster_listener::Conn;
use muster_proto::v1;
use muster_tls::Role;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::StreamExt;

use super::{CHANGES_PATH, CONTENT_TYPE, ENTRIES_PATH, HEARTBEAT_PATH};

/// How long one peer request may take before the caller gets 408.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a kept-alive connection may sit between requests before its next headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// What a node answers its peers.
pub trait PeerProtocol: Send + Sync + 'static {
    fn heartbeat(&self, from: v1::StaticHeartbeat) -> impl Future<Output = v1::StaticHeartbeat> + Send;
    fn store(&self, entries: v1::StaticEntries) -> impl Future<Output = io::Result<v1::StaticStored>> + Send;
    fn changes(&self, request: v1::StaticChangesRequest) -> impl Future<Output = io::Result<v1::StaticChanges>> + Send;
}

/// Serves the peer protocol on `listener` until `shutdown` turns true; with `tls`, only clients
/// presenting a control-plane certificate of the cluster CA are served.
pub async fn serve<P: PeerProtocol>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: ListenerLimits,
    max_body_bytes: usize,
    protocol: Arc<P>,
    shutdown: watch::Receiver<bool>,
) {
    const NAME: &str = "static-peer";
    match tls {
        Some(config) => {
            let incoming = muster_listener::tls(listener, config, &limits, NAME);
            serve_connections(incoming, is_control_plane, max_body_bytes, protocol, shutdown).await;
        }
        None => {
            let incoming = muster_listener::plain(listener, &limits, NAME);
            serve_connections(incoming, |_| true, max_body_bytes, protocol, shutdown).await;
        }
    }
}

/// Whether the client's certificate names a control-plane node (the handshake already checked
/// it chains to the cluster CA).
fn is_control_plane<S>(conn: &Conn<tokio_rustls::server::TlsStream<S>>) -> bool {
    let (_, session) = conn.get_ref().get_ref();
    session
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| muster_tls::peer_identity(leaf.as_ref()))
        .is_some_and(|identity| identity.role == Role::ControlPlane)
}

async fn serve_connections<S, P>(
    mut incoming: muster_listener::Incoming<S>,
    admitted: impl Fn(&Conn<S>) -> bool,
    max_body_bytes: usize,
    protocol: Arc<P>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    P: PeerProtocol,
{
    let service = TowerToHyperService::new(muster_admin::http_service(
        "static-peer",
        max_body_bytes,
        RESPONSE_TIMEOUT,
        move |request| {
            let protocol = protocol.clone();
            async move { route(protocol.as_ref(), request, max_body_bytes).await }
        },
    ));
    loop {
        let conn = tokio::select! {
            next = incoming.next() => match next {
                Some(Ok(conn)) => conn,
                Some(Err(_)) => continue,
                None => return,
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if !admitted(&conn) {
            // Counted and logged like a failed handshake (a flood of strangers must not flood
            // the log); the connection closes unanswered.
            incoming.stats().handshake_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!("static peer listener: a client without a control-plane certificate was refused");
            continue;
        }
        let service = service.clone();
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(conn), service);
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        });
    }
}

async fn route<P: PeerProtocol, B>(protocol: &P, request: Request<B>, max_body_bytes: usize) -> Response<Full<Bytes>>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    if request.method() != http::Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "the static peer protocol is POST only");
        response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return response;
    }
    let path = request.uri().path().to_string();
    // The body arrives limited to `max_body_bytes` (`http_service`): reading past it fails.
    let body = match request.into_body().collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => {
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body refused ({err}); limit {max_body_bytes} bytes"),
            );
        }
    };
    match path.as_str() {
        HEARTBEAT_PATH => match decode(&body) {
            Ok(from) => proto(protocol.heartbeat(from).await),
            Err(response) => response,
        },
        ENTRIES_PATH => match decode(&body) {
            Ok(entries) => stored(protocol.store(entries).await),
            Err(response) => response,
        },
        CHANGES_PATH => match decode(&body) {
            Ok(request) => stored(protocol.changes(request).await),
            Err(response) => response,
        },
        _ => {
            text(StatusCode::NOT_FOUND, "not found; the static peer protocol is /static/v1/{heartbeat,entries,changes}")
        }
    }
}

#[allow(clippy::result_large_err)]
fn decode<M: Message + Default>(body: &[u8]) -> Result<M, Response<Full<Bytes>>> {
    M::decode(body).map_err(|err| text(StatusCode::BAD_REQUEST, &format!("malformed protobuf body: {err}")))
}

fn stored<M: Message>(result: io::Result<M>) -> Response<Full<Bytes>> {
    match result {
        Ok(message) => proto(message),
        Err(err) => {
            tracing::error!(error = %err, "static peer request failed on storage");
            text(StatusCode::INTERNAL_SERVER_ERROR, &format!("storage error: {err}"))
        }
    }
}

fn proto<M: Message>(message: M) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message.encode_to_vec())));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
    response
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{body}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}
