//! Just enough of etcd's v3 gRPC API for the benchmark, with no etcd client crate: the few
//! messages it needs, declared by hand from the protocol's field numbers (prost skips the
//! fields left out), and unary calls through `tonic::client::Grpc` with a prost codec. The
//! lease keep-alive stream is opened in [`crate::fleet::keepalive`] with the same codec.

use std::time::Duration;

use http::uri::PathAndQuery;
use tonic::client::Grpc;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic_prost::ProstCodec;

use crate::workload::KvClient;

/// `etcdserverpb.ResponseHeader` (only what is used).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `etcdserverpb.PutRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub lease: i64,
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// `etcdserverpb.PutResponse` (header only; `prev_kv` is never asked for).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

/// `etcdserverpb.RangeRequest` (the leading fields; the rest keep their defaults).
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub limit: i64,
    #[prost(int64, tag = "4")]
    pub revision: i64,
    #[prost(int32, tag = "5")]
    pub sort_order: i32,
    #[prost(int32, tag = "6")]
    pub sort_target: i32,
    /// false: linearizable (the leader confirms its term with a quorum first).
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

/// `mvccpb.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    #[prost(int64, tag = "4")]
    pub version: i64,
    #[prost(bytes = "vec", tag = "5")]
    pub value: Vec<u8>,
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// `etcdserverpb.StatusRequest` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

/// `etcdserverpb.StatusResponse` (the leading fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(string, tag = "2")]
    pub version: String,
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    /// Member id of the leader this member knows (0: none).
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
}

/// `etcdserverpb.LeaseGrantRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantRequest {
    /// Advisory time-to-live in seconds.
    #[prost(int64, tag = "1")]
    pub ttl: i64,
    /// Requested lease id; 0 lets the server choose.
    #[prost(int64, tag = "2")]
    pub id: i64,
}

/// `etcdserverpb.LeaseGrantResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseGrantResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    #[prost(int64, tag = "3")]
    pub ttl: i64,
    #[prost(string, tag = "4")]
    pub error: String,
}

/// `etcdserverpb.LeaseKeepAliveRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveRequest {
    #[prost(int64, tag = "1")]
    pub id: i64,
}

/// `etcdserverpb.LeaseKeepAliveResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LeaseKeepAliveResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub id: i64,
    /// The renewed time-to-live in seconds; 0 or less: the lease no longer exists.
    #[prost(int64, tag = "3")]
    pub ttl: i64,
}

/// `etcdserverpb.WatchCreateRequest` (the leading fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchCreateRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// With `key`, the range [key, range_end): for a prefix, the prefix with its last byte + 1.
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub start_revision: i64,
    #[prost(bool, tag = "4")]
    pub progress_notify: bool,
    #[prost(bool, tag = "6")]
    pub prev_kv: bool,
}

/// `etcdserverpb.WatchRequest`: only the `create_request` arm (field 1) of its oneof, which is
/// the same bytes on the wire as an optional message field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    #[prost(message, optional, tag = "1")]
    pub create_request: Option<WatchCreateRequest>,
}

/// `mvccpb.Event`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// 0 PUT, 1 DELETE.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(message, optional, tag = "2")]
    pub kv: Option<KeyValue>,
    #[prost(message, optional, tag = "3")]
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.WatchResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "2")]
    pub watch_id: i64,
    #[prost(bool, tag = "3")]
    pub created: bool,
    #[prost(bool, tag = "4")]
    pub canceled: bool,
    #[prost(int64, tag = "5")]
    pub compact_revision: i64,
    #[prost(string, tag = "6")]
    pub cancel_reason: String,
    #[prost(bool, tag = "7")]
    pub fragment: bool,
    #[prost(message, repeated, tag = "11")]
    pub events: Vec<Event>,
}

/// The end of the key range holding every key that starts with `prefix` (etcd's convention:
/// the prefix with its last byte below 0xff incremented; `\0` for every key).
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";
const STATUS: &str = "/etcdserverpb.Maintenance/Status";
const LEASE_GRANT: &str = "/etcdserverpb.Lease/LeaseGrant";
/// The bidirectional keep-alive stream (`stream LeaseKeepAliveRequest` both ways).
pub const LEASE_KEEP_ALIVE: &str = "/etcdserverpb.Lease/LeaseKeepAlive";
/// The bidirectional watch stream (`stream WatchRequest` → `stream WatchResponse`).
pub const WATCH: &str = "/etcdserverpb.Watch/Watch";

/// The endpoint of the member at `addr` (`host:port`): `https` with `tls`, else plaintext.
pub fn endpoint(addr: &str, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Endpoint> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint =
        Endpoint::from_shared(format!("{scheme}://{addr}"))?.connect_timeout(Duration::from_secs(2)).tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.clone())?;
    }
    Ok(endpoint)
}

/// One connection to one etcd member.
#[derive(Clone)]
pub struct EtcdKv {
    grpc: Grpc<Channel>,
}

impl EtcdKv {
    /// A lazily connecting client of the member at `addr` (`host:port`, plaintext).
    pub fn new(addr: &str) -> anyhow::Result<Self> {
        Self::with_tls(addr, None)
    }

    /// A lazily connecting client of the member at `addr`, over TLS when given.
    pub fn with_tls(addr: &str, tls: Option<&ClientTlsConfig>) -> anyhow::Result<Self> {
        let channel = endpoint(addr, tls)?.timeout(Duration::from_secs(15)).connect_lazy();
        Ok(Self { grpc: Grpc::new(channel) })
    }

    async fn unary<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp, tonic::Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = self.grpc.clone();
        grpc.ready().await.map_err(|err| tonic::Status::unavailable(format!("etcd not reachable: {err}")))?;
        let codec = ProstCodec::<Req, Resp>::default();
        Ok(grpc.unary(tonic::Request::new(request), PathAndQuery::from_static(path), codec).await?.into_inner())
    }

    pub async fn put_raw(&self, key: Vec<u8>, value: Vec<u8>) -> Result<PutResponse, tonic::Status> {
        self.unary(PUT, PutRequest { key, value, ..Default::default() }).await
    }

    /// A single-key linearizable range.
    pub async fn get_raw(&self, key: Vec<u8>) -> Result<RangeResponse, tonic::Status> {
        self.unary(RANGE, RangeRequest { key, serializable: false, ..Default::default() }).await
    }

    pub async fn status(&self) -> Result<StatusResponse, tonic::Status> {
        self.unary(STATUS, StatusRequest {}).await
    }

    /// Grants a lease of `ttl_secs` with a server-chosen id; returns the id.
    pub async fn lease_grant(&self, ttl_secs: i64) -> Result<i64, tonic::Status> {
        let response: LeaseGrantResponse = self.unary(LEASE_GRANT, LeaseGrantRequest { ttl: ttl_secs, id: 0 }).await?;
        if !response.error.is_empty() {
            return Err(tonic::Status::internal(format!("LeaseGrant: {}", response.error)));
        }
        Ok(response.id)
    }
}

impl KvClient for EtcdKv {
    async fn put(&self, key: String, value: Vec<u8>) -> anyhow::Result<()> {
        self.put_raw(key.into_bytes(), value).await?;
        Ok(())
    }

    async fn get(&self, key: String) -> anyhow::Result<bool> {
        Ok(!self.get_raw(key.into_bytes()).await?.kvs.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    #[test]
    fn put_request_uses_the_wire_field_numbers() {
        let bytes = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }.encode_to_vec();
        // Field 1 (key) and 2 (value), both length-delimited.
        assert_eq!(bytes, [0x0a, 1, b'k', 0x12, 1, b'v']);
        let range = RangeRequest { key: b"k".to_vec(), serializable: true, ..Default::default() }.encode_to_vec();
        assert_eq!(range, [0x0a, 1, b'k', 0x38, 1]);
    }

    #[test]
    fn lease_messages_use_the_wire_field_numbers() {
        assert_eq!(LeaseGrantRequest { ttl: 6, id: 0 }.encode_to_vec(), [0x08, 6]);
        assert_eq!(LeaseKeepAliveRequest { id: 300 }.encode_to_vec(), [0x08, 0xac, 0x02]);
        // header {revision: 1}, ID 7, TTL 6.
        let response = LeaseKeepAliveResponse::decode([0x0a, 2, 0x18, 1, 0x10, 7, 0x18, 6].as_slice()).unwrap();
        assert_eq!((response.id, response.ttl), (7, 6));
        assert_eq!(response.header.map(|h| h.revision), Some(1));
        let granted = LeaseGrantResponse::decode([0x10, 9, 0x18, 6, 0x22, 1, b'x'].as_slice()).unwrap();
        assert_eq!((granted.id, granted.ttl, granted.error.as_str()), (9, 6, "x"));
    }

    #[test]
    fn watch_messages_use_the_wire_field_numbers() {
        let create = WatchCreateRequest { key: b"a".to_vec(), range_end: b"b".to_vec(), ..Default::default() };
        let request = WatchRequest { create_request: Some(create) }.encode_to_vec();
        assert_eq!(request, [0x0a, 6, 0x0a, 1, b'a', 0x12, 1, b'b']);
        // created, then events[0] = {kv: {key: "k"}} at field 11.
        let response = WatchResponse::decode([0x18, 1, 0x5a, 5, 0x12, 3, 0x0a, 1, b'k'].as_slice()).unwrap();
        assert!(response.created);
        assert_eq!(response.events[0].kv.as_ref().map(|kv| kv.key.as_slice()), Some(b"k".as_slice()));
    }

    #[test]
    fn a_prefix_range_ends_after_its_last_key() {
        assert_eq!(prefix_range_end(b"bench/"), b"bench0");
        assert_eq!(prefix_range_end(b"a\xff"), b"b");
        assert_eq!(prefix_range_end(b""), [0]);
    }

    #[test]
    fn range_response_skips_unknown_fields() {
        // kvs[0] = {key: "k", value: "v"}, count = 1, then an unknown field 5 (bool more).
        let kv = KeyValue { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }.encode_to_vec();
        let mut bytes = vec![0x12, kv.len() as u8];
        bytes.extend(kv);
        bytes.extend([0x20, 1, 0x28, 1]);
        let decoded = RangeResponse::decode(bytes.as_slice()).unwrap();
        assert_eq!(decoded.kvs.len(), 1);
        assert_eq!(decoded.kvs[0].value, b"v");
        assert_eq!(decoded.count, 1);
    }
}
