//! [`ControlPlaneClient`]: KV and membership calls that land on the leader.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster_middleware::{ApiError, TracedChannel, leader_hint};
use muster_proto::v1;
use muster_proto::v1::cluster_management_service_client::ClusterManagementServiceClient;
use muster_proto::v1::raft_client_service_client::RaftClientServiceClient;
use muster_tls::ClientTls;
use tonic::{Code, Status};

use crate::channels::Channels;
use crate::{ClientError, TransportMismatch};

/// Longest pause between retries of one call.
const MAX_RETRY_BACKOFF: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// API addresses (`host:port`) of any control-plane nodes.
    pub endpoints: Vec<String>,
    /// mTLS material, checking that the server is a control-plane node
    /// (`ServerCheck::RoleAndHost(Role::ControlPlane)`); `None` for plaintext (`--insecure`).
    pub tls: Option<ClientTls>,
    /// How long one call may keep retrying (leader changes, unreachable nodes).
    pub timeout: Duration,
    /// Largest response accepted.
    pub max_message_bytes: usize,
}

impl ClientOptions {
    pub fn new(endpoints: Vec<String>) -> Self {
        Self { endpoints, tls: None, timeout: Duration::from_secs(15), max_message_bytes: 16 * 1024 * 1024 }
    }
}

pub struct ControlPlaneClient {
    options: ClientOptions,
    channels: Channels,
    /// Where the leader was last seen (index into the rotation or a hinted address).
    leader: Mutex<Option<String>>,
    next_endpoint: AtomicU64,
    client_id: u64,
    sequence: AtomicU64,
    /// Held for the whole of one `write`: the server keeps only the highest sequence applied
    /// per client, so a later sequence overtaking an earlier one in flight would make the
    /// earlier write look like a retry, answered `deduplicated` and never applied.
    write_order: tokio::sync::Mutex<()>,
}

/// Whether an error is worth retrying elsewhere (unreachable node, election in progress).
pub(crate) fn retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
        || (status.code() == Code::DeadlineExceeded && leader_hint(status).is_some())
}

impl ControlPlaneClient {
    pub fn new(options: ClientOptions) -> Result<Self, ClientError> {
        if options.endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        let channels = Channels::new(options.tls.clone(), Duration::from_secs(2));
        for endpoint in &options.endpoints {
            channels.get(endpoint)?;
        }
        Ok(Self {
            options,
            channels,
            leader: Mutex::default(),
            next_endpoint: AtomicU64::new(0),
            client_id: rand::random::<u64>() | 1,
            sequence: AtomicU64::new(0),
            write_order: tokio::sync::Mutex::new(()),
        })
    }

    /// This client's session id (writes are deduplicated per id and sequence number).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    fn pick_target(&self) -> String {
        if let Some(leader) = self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return leader;
        }
        let n = self.next_endpoint.fetch_add(1, Ordering::Relaxed) as usize;
        self.options.endpoints[n % self.options.endpoints.len()].clone()
    }

    /// The next endpoint in the rotation and its channel (a watch moving to another node).
    pub(crate) fn next_endpoint(&self) -> Result<(String, TracedChannel), ClientError> {
        let n = self.next_endpoint.fetch_add(1, Ordering::Relaxed) as usize;
        let target = self.options.endpoints[n % self.options.endpoints.len()].clone();
        let channel = self.channels.get(&target)?;
        Ok((target, channel))
    }

    pub(crate) fn options(&self) -> &ClientOptions {
        &self.options
    }

    fn remember_leader(&self, addr: Option<String>) {
        *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = addr;
    }

    /// Runs `call` against the leader: follows hints, rotates through endpoints on
    /// unreachable nodes, and backs off during elections, until the timeout.
    pub(crate) async fn on_leader<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(TracedChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.with_retries(true, call).await
    }

    /// Runs `call` against any reachable node.
    async fn on_any<T, F, Fut>(&self, call: F) -> Result<T, ClientError>
    where
        F: Fn(TracedChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.with_retries(false, call).await
    }

    async fn with_retries<T, F, Fut>(&self, follow_leader: bool, call: F) -> Result<T, ClientError>
    where
        F: Fn(TracedChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(50);
        loop {
            let target = self.pick_target();
            let result = match self.channels.get(&target) {
                Ok(channel) => call(channel).await,
                Err(err) => return Err(err),
            };
            let status = match result {
                Ok(value) => {
                    if follow_leader {
                        self.remember_leader(Some(target));
                    }
                    return Ok(value);
                }
                Err(status) => status,
            };
            if let Some(mismatch) = TransportMismatch::of(&status, self.options.tls.is_some()) {
                return Err(ClientError::Transport { target, detail: status.message().to_string(), mismatch });
            }
            if !retryable(&status) {
                return Err(ClientError::Status(status));
            }
            match leader_hint(&status).filter(|_| follow_leader) {
                Some(hint) if hint.addr != target => {
                    tracing::debug!(leader = hint.id, addr = %hint.addr, "following leader hint");
                    self.channels.get(&hint.addr)?;
                    self.remember_leader(Some(hint.addr));
                    continue;
                }
                _ => self.remember_leader(None),
            }
            if started.elapsed() >= self.options.timeout {
                let (elapsed, last) = (started.elapsed(), status.message().to_string());
                return Err(ClientError::Exhausted { elapsed, target, last });
            }
            tracing::debug!(%target, error = %status.message(), "retrying");
            tokio::time::sleep(backoff).await;
            // Capped low: a new leader is elected within about a second, and a client that
            // slept a long backoff past that would add its own outage to the cluster's.
            backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
        }
    }

    fn kv(&self, channel: TracedChannel) -> RaftClientServiceClient<TracedChannel> {
        RaftClientServiceClient::new(channel)
            .max_decoding_message_size(self.options.max_message_bytes)
            .max_encoding_message_size(self.options.max_message_bytes)
    }

    /// Proposes a write once: the same sequence number is reused on every retry. Concurrent
    /// writes through one client are sent one at a time, in sequence order (use several
    /// clients to pipeline).
    pub async fn write(&self, op: v1::client_write_request::Op) -> Result<v1::CommandResult, ClientError> {
        let _in_order = self.write_order.lock().await;
        let sequence = self.sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let request = v1::ClientWriteRequest { client_id: self.client_id, sequence, op: Some(op) };
        let response = self
            .on_leader(|channel| {
                let request = request.clone();
                async move { self.kv(channel).handle_client_write(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        match response.result {
            Some(v1::client_response::Result::Write(result)) => Ok(result),
            _ => Err(ClientError::Status(ApiError::Internal("write answered without a write result".into()).into())),
        }
    }

    /// Sends a write exactly as given (the caller controls client id and sequence).
    pub async fn write_raw(&self, request: v1::ClientWriteRequest) -> Result<v1::ClientResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move { self.kv(channel).handle_client_write(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    pub async fn put(&self, key: &str, value: impl Into<Vec<u8>>) -> Result<v1::CommandResult, ClientError> {
        self.write(v1::client_write_request::Op::Put(v1::KvPut { key: key.to_string(), value: value.into() })).await
    }

    pub async fn delete(&self, key: &str) -> Result<v1::CommandResult, ClientError> {
        self.write(v1::client_write_request::Op::Delete(v1::KvDelete { key: key.to_string() })).await
    }

    /// Sets `key` to `new_value` if it holds `expected` (`None`: if it does not exist).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<v1::CommandResult, ClientError> {
        let cas = v1::KvCompareAndSwap {
            key: key.to_string(),
            expect_absent: expected.is_none(),
            expected: expected.unwrap_or_default(),
            new_value: new_value.into(),
            expected_mod_revision: None,
        };
        self.write(v1::client_write_request::Op::Cas(cas)).await
    }

    /// Sets `key` to `new_value` if its last write was at `mod_revision` (0: if it does not
    /// exist), whatever its value.
    pub async fn compare_revision_and_swap(
        &self,
        key: &str,
        mod_revision: u64,
        new_value: impl Into<Vec<u8>>,
    ) -> Result<v1::CommandResult, ClientError> {
        let cas = v1::KvCompareAndSwap {
            key: key.to_string(),
            new_value: new_value.into(),
            expected_mod_revision: Some(mod_revision),
            ..Default::default()
        };
        self.write(v1::client_write_request::Op::Cas(cas)).await
    }

    /// Reads; linearizable and lease reads go to the leader, stale reads to any node.
    pub async fn read(&self, request: v1::ClientReadRequest) -> Result<v1::ClientResponse, ClientError> {
        let call = |channel| {
            let request = request.clone();
            async move { self.kv(channel).handle_client_read(request).await.map(tonic::Response::into_inner) }
        };
        if request.consistency == v1::ReadConsistency::Stale as i32 {
            self.on_any(call).await
        } else {
            self.on_leader(call).await
        }
    }

    pub async fn get(&self, key: &str, consistency: v1::ReadConsistency) -> Result<Option<v1::KeyValue>, ClientError> {
        let request = v1::ClientReadRequest {
            consistency: consistency as i32,
            query: Some(v1::client_read_request::Query::Get(v1::KvGet { key: key.to_string() })),
        };
        let response = self.read(request).await?;
        Ok(match response.result {
            Some(v1::client_response::Result::Value(value)) if response.found => Some(value),
            _ => None,
        })
    }

    pub async fn list(
        &self,
        prefix: &str,
        limit: u32,
        consistency: v1::ReadConsistency,
    ) -> Result<v1::KeyValueList, ClientError> {
        let request = v1::ClientReadRequest {
            consistency: consistency as i32,
            query: Some(v1::client_read_request::Query::List(v1::KvList { prefix: prefix.to_string(), limit })),
        };
        match self.read(request).await?.result {
            Some(v1::client_response::Result::List(list)) => Ok(list),
            _ => Ok(v1::KeyValueList::default()),
        }
    }

    /// Cluster metadata as seen by the leader (it alone knows replication progress), or by
    /// whichever node answers if the leader does not.
    pub async fn metadata(&self) -> Result<v1::ClusterMembership, ClientError> {
        let any = self
            .on_any(|channel| async move {
                ClusterManagementServiceClient::new(channel)
                    .get_cluster_metadata(v1::MetadataRequest {})
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        if any.leader_id == 0 || any.leader_id == any.node_id || any.leader_api_addr.is_empty() {
            return Ok(any);
        }
        Ok(self.metadata_of(&any.leader_api_addr).await.unwrap_or(any))
    }

    /// Metadata from one specific node (no retries elsewhere).
    pub async fn metadata_of(&self, endpoint: &str) -> Result<v1::ClusterMembership, ClientError> {
        let channel = self.channels.get(endpoint)?;
        ClusterManagementServiceClient::new(channel)
            .get_cluster_metadata(v1::MetadataRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(ClientError::Status)
    }

    pub async fn discover_leader(&self) -> Result<v1::LeaderDiscoveryResponse, ClientError> {
        self.on_any(|channel| async move {
            let response = ClusterManagementServiceClient::new(channel)
                .discover_leader(v1::LeaderDiscoveryRequest {})
                .await?
                .into_inner();
            if response.known { Ok(response) } else { Err(ApiError::Unavailable("no leader known yet".into()).into()) }
        })
        .await
    }

    pub async fn join(&self, request: v1::JoinRequest) -> Result<v1::JoinResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                ClusterManagementServiceClient::new(channel)
                    .join_cluster(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn update_conf(
        &self,
        change: v1::cluster_conf_change_request::Change,
    ) -> Result<v1::ClusterConfUpdateResponse, ClientError> {
        let request = v1::ClusterConfChangeRequest { change: Some(change) };
        self.on_leader(|channel| {
            let request = request.clone();
            async move {
                ClusterManagementServiceClient::new(channel)
                    .update_cluster_conf(request)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }
}
