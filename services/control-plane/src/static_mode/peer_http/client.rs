//! Dialling one peer: see the parent module.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use muster_proto::v1;
use prost::Message;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use super::{CHANGES_PATH, CONTENT_TYPE, ENTRIES_PATH, HEARTBEAT_PATH};

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("no answer from peer {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("peer {addr}: {what}")]
    Transport { addr: String, what: String },
    #[error("peer {addr} answered {status}: {body}")]
    Refused { addr: String, status: http::StatusCode, body: String },
}

/// One peer's endpoint, with the connection kept between requests.
pub struct PeerClient {
    addr: String,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    max_body_bytes: usize,
    connection: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl PeerClient {
    /// `tls`: dial with this client configuration (it checks the server is a control-plane
    /// node at `addr`'s host); `None` under `--insecure`. Every request, dial included, must
    /// finish within `timeout`.
    pub fn new(addr: String, tls: Option<Arc<rustls::ClientConfig>>, timeout: Duration, max_body_bytes: usize) -> Self {
        Self { addr, tls, timeout, max_body_bytes, connection: Mutex::new(None) }
    }

    pub async fn heartbeat(&self, own: &v1::StaticHeartbeat) -> Result<v1::StaticHeartbeat, PeerError> {
        self.call(HEARTBEAT_PATH, own).await
    }

    pub async fn store(&self, entries: &v1::StaticEntries) -> Result<v1::StaticStored, PeerError> {
        self.call(ENTRIES_PATH, entries).await
    }

    pub async fn changes(&self, request: &v1::StaticChangesRequest) -> Result<v1::StaticChanges, PeerError> {
        self.call(CHANGES_PATH, request).await
    }

    async fn call<Req: Message, Resp: Message + Default>(&self, path: &str, body: &Req) -> Result<Resp, PeerError> {
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, self.exchange(path, body.encode_to_vec())).await {
            Ok(Ok(bytes)) => Resp::decode(bytes).map_err(|err| self.transport(format!("malformed answer: {err}"))),
            Ok(Err(err)) => {
                self.connection.lock().await.take();
                Err(err)
            }
            Err(_) => {
                self.connection.lock().await.take();
                Err(PeerError::Timeout { addr: self.addr.clone(), timeout })
            }
        }
    }

    async fn exchange(&self, path: &str, body: Vec<u8>) -> Result<Bytes, PeerError> {
        // One request at a time per peer: the prober and the write path share the connection.
        let mut connection = self.connection.lock().await;
        if connection.as_ref().is_none_or(|sender| sender.is_closed()) {
            *connection = Some(self.dial().await?);
        }
        let sender = connection.as_mut().expect("dialled above");
        sender.ready().await.map_err(|err| self.transport(format!("connection lost: {err}")))?;
        let request = http::Request::post(path)
            .header(http::header::HOST, self.addr.as_str())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(Full::new(Bytes::from(body)))
            .map_err(|err| self.transport(err.to_string()))?;
        let response = sender.send_request(request).await.map_err(|err| self.transport(err.to_string()))?;
        let status = response.status();
        let bytes = Limited::new(response.into_body(), self.max_body_bytes)
            .collect()
            .await
            .map_err(|err| self.transport(format!("reading the answer: {err}")))?
            .to_bytes();
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes).trim().to_string();
            return Err(PeerError::Refused { addr: self.addr.clone(), status, body });
        }
        Ok(bytes)
    }

    async fn dial(&self) -> Result<SendRequest<Full<Bytes>>, PeerError> {
        let tcp = TcpStream::connect(&self.addr).await.map_err(|err| self.transport(format!("connect: {err}")))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(config) => {
                let host = host_of(&self.addr);
                let name = ServerName::try_from(host.to_string())
                    .map_err(|err| self.transport(format!("`{host}` is not a valid server name: {err}")))?;
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let stream = connector.connect(name, tcp).await.map_err(|err| self.transport(format!("TLS: {err}")))?;
                self.handshake(stream).await
            }
            None => self.handshake(tcp).await,
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, PeerError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.transport(format!("HTTP handshake: {err}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    fn transport(&self, what: String) -> PeerError {
        PeerError::Transport { addr: self.addr.clone(), what }
    }
}

/// The host of `host:port`, IPv6 brackets removed.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_of_strips_the_port_and_ipv6_brackets() {
        assert_eq!(super::host_of("cp1:3668"), "cp1");
        assert_eq!(super::host_of("[::1]:3668"), "::1");
        assert_eq!(super::host_of("127.0.0.1:1"), "127.0.0.1");
    }
}
