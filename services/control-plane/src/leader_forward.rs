//! Any node answers the operator's calls: a follower that would answer "not the leader"
//! forwards the call to the leader instead and relays its answer.
//!
//! Why: the leader hint a follower returns names the leader's address inside the cluster
//! network (`control-plane-2:3669` under compose, a pod DNS name under Kubernetes), which a
//! client outside it cannot resolve; and `grpcurl`, like most generic gRPC tools, follows no
//! hints at all. etcd and the Kubernetes API server answer on every member for the same reason.
//!
//! How: only unary services that operators call are forwarded (a streaming body cannot be
//! buffered and replayed). The request body is buffered (bounded by the message limit), the
//! local handler runs first, and only an answer carrying a leader hint is replaced by the
//! leader's. The forwarded call goes out over this node's own mTLS identity, with the caller's
//! identity (already checked here) in `x-muster-forwarded-peer`; the leader's authorization
//! layer honours that header from control-plane certificates only and checks the call as the
//! original caller's, so the caller gets exactly the rights it has here. A forwarded call is
//! never forwarded again. If the leader cannot be reached (a partition), the
//! caller gets the original "not the leader" answer, never a stale local one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt as _, Full, Limited};
use muster_middleware::{
    ApiError, ChannelOptions, FORWARDED_PEER_HEADER, LEADER_ADDR_HEADER, Peer, TracedChannel, lazy_channel,
};
use muster_tls::ClientTls;
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt as _};

/// Bounds on reaching the leader. The leader is on the cluster's own network, so a connect
/// or a ping that takes a second means it is cut off; and a forwarded call that the leader
/// has not answered in [`FORWARD_TIMEOUT`] gets the local "not the leader" answer, whose hint
/// lets the caller go to the leader itself. (The longest call forwarded, `RevokeWorker`,
/// waits at most 3 s for the gateways.) A forwarded write that timed out may still be
/// applied: the answer is `UNAVAILABLE`, which promises nothing, and Muster's clients retry
/// with the same session and sequence, which the leader deduplicates.
const FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const FORWARD_KEEPALIVE: Duration = Duration::from_secs(1);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// Set on a forwarded call (the forwarding node's id); such a call is never forwarded again.
pub const FORWARDED_BY_HEADER: &str = "x-muster-forwarded-by";

/// The operator-facing unary services. Not the registrar's and gateways' services: their
/// clients follow leader hints themselves, and a hop would only add latency to them.
const FORWARDED_SERVICES: &[&str] = &[
    "/muster.v1.ClusterManagementService/",
    "/muster.v1.RaftClientService/",
    "/muster.v1.TokenService/",
    "/muster.v1.WorkerAdminService/",
];

/// Streaming methods of those services, which every node serves itself.
const SERVED_LOCALLY: &[&str] = &["/muster.v1.RaftClientService/Watch", "/muster.v1.WorkerAdminService/WatchWorkers"];

fn forwardable(path: &str) -> bool {
    FORWARDED_SERVICES.iter().any(|prefix| path.starts_with(prefix)) && !SERVED_LOCALLY.contains(&path)
}

/// Forwards not-leader answers of the API port to the leader.
#[derive(Clone)]
pub struct LeaderForwardLayer {
    forwarder: Arc<Forwarder>,
}

impl LeaderForwardLayer {
    /// `tls`: this node's client identity (`None` under `--insecure`); `max_body`: the largest
    /// request it buffers (the server's message limit).
    pub fn new(node_id: u64, tls: Option<ClientTls>, max_body: usize) -> Self {
        // A unary body is one message behind gRPC's 5-byte frame header.
        let max_body = max_body.saturating_add(5);
        let forwarder = Forwarder { node_id, tls, max_body, channels: Mutex::new(HashMap::new()) };
        Self { forwarder: Arc::new(forwarder) }
    }
}

impl<S> Layer<S> for LeaderForwardLayer {
    type Service = LeaderForward<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LeaderForward { inner, forwarder: self.forwarder.clone() }
    }
}

struct Forwarder {
    node_id: u64,
    tls: Option<ClientTls>,
    max_body: usize,
    /// One lazily connected channel per leader address seen.
    channels: Mutex<HashMap<String, TracedChannel>>,
}

impl Forwarder {
    fn channel(&self, addr: &str) -> Result<TracedChannel, String> {
        let mut channels = self.channels.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = channels.get(addr) {
            return Ok(channel.clone());
        }
        // With TLS, the handshake (and the leader's role check) is ClientTls's. Traced, so
        // the leader's server span is a child of this hop, not a sibling.
        let options = ChannelOptions {
            connect_timeout: FORWARD_CONNECT_TIMEOUT,
            keepalive: FORWARD_KEEPALIVE,
            quiet_paths: &["/muster.v1.RaftClientService/"],
        };
        let channel = lazy_channel(addr, self.tls.as_ref(), options)
            .map_err(|err| format!("bad leader address {addr:?}: {err}"))?;
        channels.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Sends the buffered call to the leader at `addr`.
    async fn forward(&self, addr: &str, call: BufferedCall) -> Result<Response<Body>, String> {
        let channel = self.channel(addr)?;
        let mut request = Request::builder().method(call.method).uri(call.uri);
        let headers = request.headers_mut().expect("a fresh builder has headers");
        *headers = call.headers;
        headers.remove(http::header::HOST);
        headers.insert(FORWARDED_BY_HEADER, HeaderValue::from(self.node_id));
        if let Some(peer) = call.peer.and_then(|peer| HeaderValue::from_str(&peer).ok()) {
            headers.insert(FORWARDED_PEER_HEADER, peer);
        }
        let request = request.body(Body::new(Full::new(call.body))).map_err(|err| err.to_string())?;
        let response = tokio::time::timeout(FORWARD_TIMEOUT, channel.oneshot(request))
            .await
            .map_err(|_| format!("leader {addr} did not answer within {FORWARD_TIMEOUT:?}"))?
            .map_err(|err| format!("leader {addr}: {err}"))?;
        Ok(response.map(Body::new))
    }
}

/// What it takes to send a call again.
struct BufferedCall {
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    /// The caller's `spiffe://` identity (none under `--insecure`).
    peer: Option<String>,
    body: bytes::Bytes,
}

/// The middleware of [`LeaderForwardLayer`].
#[derive(Clone)]
pub struct LeaderForward<S> {
    inner: S,
    forwarder: Arc<Forwarder>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for LeaderForward<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone is the ready one's sibling; keep the ready service for this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let forwarder = self.forwarder.clone();
        if request.headers().contains_key(FORWARDED_BY_HEADER) || !forwardable(request.uri().path()) {
            return Box::pin(inner.call(request));
        }
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let body = match Limited::new(body, forwarder.max_body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(err) => {
                    let err = if err.is::<http_body_util::LengthLimitError>() {
                        ApiError::ResourceExhausted(format!(
                            "request too large: over {} bytes (limits.max_message_bytes plus the frame header)",
                            forwarder.max_body
                        ))
                    } else {
                        ApiError::InvalidArgument(format!("cannot read the request: {err}"))
                    };
                    return Ok(tonic::Status::from(err).into_http());
                }
            };
            let call = BufferedCall {
                method: parts.method.clone(),
                uri: parts.uri.clone(),
                headers: parts.headers.clone(),
                peer: parts.extensions.get::<Peer>().map(|Peer(peer)| peer.spiffe_id()),
                body: body.clone(),
            };
            let local = inner.call(Request::from_parts(parts, Body::new(Full::new(body)))).await?;
            let Some(leader) = leader_hint(&local) else {
                return Ok(local);
            };
            match forwarder.forward(&leader, call).await {
                Ok(answer) => Ok(answer),
                Err(err) => {
                    tracing::debug!(error = %err, "forwarding to the leader failed; answering with the hint");
                    Ok(local)
                }
            }
        })
    }
}

/// The leader's address, when the local answer is "not the leader, ask ADDR".
fn leader_hint(response: &Response<Body>) -> Option<String> {
    let failed = response.headers().get("grpc-status").is_some_and(|status| status.as_bytes() != b"0");
    let addr = response.headers().get(LEADER_ADDR_HEADER)?.to_str().ok()?;
    (failed && !addr.is_empty()).then(|| addr.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_operator_services_are_forwarded() {
        assert!(forwardable("/muster.v1.WorkerAdminService/ListWorkers"));
        assert!(forwardable("/muster.v1.RaftClientService/HandleClientWrite"));
        assert!(!forwardable("/muster.v1.LivenessService/ReportLiveness"));
        assert!(!forwardable("/muster.v1.WorkerRegistryService/RegisterWorker"));
        assert!(!forwardable("/grpc.health.v1.Health/Check"));
    }

    #[test]
    fn a_hint_is_read_only_from_a_failed_answer() {
        let not_leader = tonic::Status::unavailable("not the leader");
        let mut response = not_leader.into_http::<Body>();
        response.headers_mut().insert(LEADER_ADDR_HEADER, HeaderValue::from_static("control-plane-2:3669"));
        assert_eq!(leader_hint(&response).as_deref(), Some("control-plane-2:3669"));

        let mut ok = Response::new(Body::empty());
        ok.headers_mut().insert("grpc-status", HeaderValue::from_static("0"));
        ok.headers_mut().insert(LEADER_ADDR_HEADER, HeaderValue::from_static("control-plane-2:3669"));
        assert_eq!(leader_hint(&ok), None);
    }
}
