//! Lazily connected channels, one per address, reused across calls.
//!
//! Every channel carries the client trace layer, so each call is a `grpc.client` span whose
//! `traceparent` the control plane adopts. The gateways' liveness batches are the one hot
//! call: their spans are DEBUG, so at `info` they are neither logged nor exported.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use muster_middleware::{ChannelOptions, TracedChannel, lazy_channel};
use muster_tls::ClientTls;

use crate::ClientError;

/// Keepalive ping period and timeout: a connection into a network cut is dropped within
/// twice this, and the call on it is retried on another node.
const KEEPALIVE: Duration = Duration::from_secs(2);

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
        let options =
            ChannelOptions { connect_timeout: self.connect_timeout, keepalive: KEEPALIVE, quiet_paths: QUIET_PATHS };
        let channel = lazy_channel(addr, self.tls.as_ref(), options)
            .map_err(|err| ClientError::InvalidEndpoint { endpoint: addr.to_string(), message: err.to_string() })?;
        by_addr.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }
}
