//! Lazily connected channels, one per address, reused across calls.
//!
//! Every channel carries the client trace layer, so each call is a `grpc.client` span whose
//! `traceparent` the control plane adopts. The gateways' liveness batches are the one hot
//! call: their spans are DEBUG, so at `info` they are neither logged nor exported.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use muster_middleware::{GrpcClientTraceLayer, TracedChannel};
use muster_tls::ClientTls;
use tonic::transport::Endpoint;

use crate::ClientError;

/// Calls traced at DEBUG: a gateway sends one every `batch_interval`.
const QUIET_PATHS: &[&str] = &["/muster.v1.LivenessService/ReportLiveness"];

pub(crate) struct Channels {
    tls: Option<ClientTls>,
    connect_timeout: Duration,
    by_addr: Mutex<HashMap<String, TracedChannel>>,
}

impl Channels {
    pub(crate) fn new(tls: Option<ClientTls>, connect_timeout: Duration) -> Self {
        Self { tls, connect_timeout, by_addr: Mutex::default() }
    }

    pub(crate) fn get(&self, addr: &str) -> Result<TracedChannel, ClientError> {
        let mut by_addr = self.by_addr.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(channel) = by_addr.get(addr) {
            return Ok(channel.clone());
        }
        let invalid = |message: String| ClientError::InvalidEndpoint { endpoint: addr.to_string(), message };
        let host_port = addr.trim_start_matches("http://").trim_start_matches("https://");
        // `http`: with TLS, the handshake (and the server's role check) is ClientTls's.
        let endpoint = Endpoint::from_shared(format!("http://{host_port}"))
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true);
        let channel = match &self.tls {
            Some(tls) => tls.connect_lazy(endpoint),
            None => endpoint.connect_lazy(),
        };
        let channel = GrpcClientTraceLayer::new().with_quiet_paths(QUIET_PATHS).channel(channel);
        by_addr.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
