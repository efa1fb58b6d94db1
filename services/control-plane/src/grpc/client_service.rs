//! `RaftClientService`: the KV API, over the leadership seam so it serves both backends:
//! writes are proposed (through the Raft log, or static mode's tagged replication); reads are
//! answered at the consistency level the request asks for, from the applied state, and say
//! which leader and term (or epoch) they reflect.

use std::sync::Arc;

use muster_middleware::ApiError;
use muster_proto::v1;
use muster_proto::v1::raft_client_service_server::RaftClientService;
use prost::Message as _;
use tonic::{Request, Response, Status};

use crate::errors::storage_error;
use crate::leadership::{AppliedKv as _, Confirmation, Leadership};
use crate::write_batch::WriteBatcher;

/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 4096;

/// The KV service over `node`, with the message limits of the API port. With a `batcher`,
/// concurrent writes share log entries: a put queued behind others shares their entry (one
/// log append, replication, apply transaction and revision); a lone write is written as
/// itself and waits for nothing.
pub fn kv_server<N: Leadership>(
    node: Arc<N>,
    limits: &muster_config::Limits,
    batcher: Option<WriteBatcher>,
) -> muster_proto::v1::raft_client_service_server::RaftClientServiceServer<ClientApi<N>> {
    let api = ClientApi { node, batcher, max_write_bytes: max_write_bytes(limits.max_message_bytes) };
    muster_proto::v1::raft_client_service_server::RaftClientServiceServer::new(api)
        .max_decoding_message_size(limits.max_message_bytes)
        .max_encoding_message_size(limits.max_message_bytes)
}

pub struct ClientApi<N> {
    node: Arc<N>,
    /// Concurrent writes share log entries while they queue (Raft mode); none: each write is
    /// proposed alone (static mode replicates each write by itself).
    batcher: Option<WriteBatcher>,
    /// See [`max_write_bytes`].
    max_write_bytes: usize,
}

impl<N> Clone for ClientApi<N> {
    fn clone(&self) -> Self {
        Self { node: self.node.clone(), batcher: self.batcher.clone(), max_write_bytes: self.max_write_bytes }
    }
}

/// The largest encoded write command: half a peer message (`limits.max_message_bytes`) less a
/// thirty-second of it (at least 1 KiB). Everything that carries a write must fit one message:
/// its log entry inside an AppendEntries, its answer with the value it replaced, and a watch
/// event with `prev_kv`, which carries the new value and the one it replaced (each at most this
/// large, so together under a message with room for keys and framing). A write that filled a
/// whole message was accepted by the leader, refused by every follower, and held up the log
/// behind it for good; one over half a message made a `prev_kv` watch of its key fail for good.
pub(crate) fn max_write_bytes(max_message_bytes: usize) -> usize {
    (max_message_bytes / 2).saturating_sub((max_message_bytes / 32).max(1024)).max(1)
}

impl<N: Leadership> ClientApi<N> {
    fn check_size(&self, command: &v1::Command) -> Result<(), ApiError> {
        let bytes = command.encoded_len();
        if bytes > self.max_write_bytes {
            return Err(ApiError::InvalidArgument(format!(
                "write is too large: {bytes} bytes encoded; the limit is {} (half of limits.max_message_bytes less \
                 room: a watch event carries a value and the one it replaced in one message)",
                self.max_write_bytes
            )));
        }
        Ok(())
    }

    fn response(&self, result: v1::client_response::Result, found: bool) -> v1::ClientResponse {
        // From Raft's metrics watch (or static mode's view): no storage read on the request path.
        let standing = self.node.standing();
        v1::ClientResponse {
            applied_index: standing.applied_index,
            node_id: self.node.id(),
            result: Some(result),
            found,
            leader_id: standing.leader.unwrap_or(0),
            term: standing.term,
        }
    }
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::InvalidArgument("key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApiError::InvalidArgument(format!("key is {} bytes; the limit is {MAX_KEY_BYTES}", key.len())));
    }
    Ok(())
}

/// Turns a client request into the log command, validating it first.
pub(crate) fn to_command(request: v1::ClientWriteRequest) -> Result<v1::Command, ApiError> {
    use v1::client_write_request::Op as In;
    use v1::command::Op as Out;
    let op = match request.op {
        Some(In::Put(put)) => {
            check_key(&put.key)?;
            Out::Put(put)
        }
        Some(In::Delete(del)) => {
            check_key(&del.key)?;
            Out::Delete(del)
        }
        Some(In::Cas(cas)) => {
            check_key(&cas.key)?;
            if cas.expect_absent && !cas.expected.is_empty() {
                return Err(ApiError::InvalidArgument(
                    "cas: set either `expected` or `expect_absent`, not both".into(),
                ));
            }
            Out::Cas(cas)
        }
        None => return Err(ApiError::InvalidArgument("write request has no operation (put, delete or cas)".into())),
    };
    if request.client_id != 0 && request.sequence == 0 {
        return Err(ApiError::InvalidArgument("a write with a client_id needs a sequence number starting at 1".into()));
    }
    Ok(v1::Command { client_id: request.client_id, sequence: request.sequence, op: Some(op), ..Default::default() })
}

#[tonic::async_trait]
impl<N: Leadership> RaftClientService for ClientApi<N> {
    type WatchStream = crate::watch::KvWatchStream;

    async fn watch(&self, request: Request<v1::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let connection = request.remote_addr();
        let request = request.into_inner();
        let watches = self.node.watches().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "this node runs mode = \"static\", which keeps no revisions to watch from; watch a raft or \
                 worker-tier cluster"
                    .into(),
            )
        })?;
        if request.linearizable {
            self.node.caught_up().await?;
        }
        Ok(Response::new(watches.watch_kv(request, connection)?))
    }

    async fn handle_client_write(
        &self,
        request: Request<v1::ClientWriteRequest>,
    ) -> Result<Response<v1::ClientResponse>, Status> {
        let command = to_command(request.into_inner())?;
        self.check_size(&command)?;
        let written = match &self.batcher {
            Some(batcher) => batcher.propose_command(command).await?,
            None => self.node.propose_command(command).await?,
        };
        Ok(Response::new(self.response(v1::client_response::Result::Write(written), true)))
    }

    async fn handle_client_read(
        &self,
        request: Request<v1::ClientReadRequest>,
    ) -> Result<Response<v1::ClientResponse>, Status> {
        let request = request.into_inner();
        let consistency = v1::ReadConsistency::try_from(request.consistency)
            .map_err(|_| ApiError::InvalidArgument(format!("unknown read consistency {}", request.consistency)))?;
        let policy = match consistency {
            v1::ReadConsistency::Unspecified | v1::ReadConsistency::Linearizable => Some(Confirmation::Quorum),
            v1::ReadConsistency::Lease => Some(Confirmation::Lease),
            v1::ReadConsistency::Stale => None,
        };
        let query =
            request.query.ok_or_else(|| ApiError::InvalidArgument("read request has no query (get or list)".into()))?;
        if let v1::client_read_request::Query::Get(get) = &query {
            check_key(&get.key)?;
        }
        if let Some(policy) = policy {
            // Waits until this node's state machine has applied the confirmed read index.
            self.node.confirm(policy).await?;
        }
        let reply = match query {
            v1::client_read_request::Query::Get(get) => {
                match self.node.applied().get(&get.key).map_err(storage_error)? {
                    Some(value) => self.response(v1::client_response::Result::Value(value), true),
                    None => self.response(v1::client_response::Result::Value(Default::default()), false),
                }
            }
            v1::client_read_request::Query::List(list) => {
                let (items, truncated) =
                    self.node.applied().list(&list.prefix, list.limit as usize).map_err(storage_error)?;
                let found = !items.is_empty();
                self.response(v1::client_response::Result::List(v1::KeyValueList { items, truncated }), found)
            }
        };
        Ok(Response::new(reply))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_writes_fit_one_message_with_room_for_their_framing() {
        assert_eq!(max_write_bytes(4 * 1024 * 1024), 2 * 1024 * 1024 - 128 * 1024);
        assert_eq!(max_write_bytes(8 * 1024), 3 * 1024, "at least 1 KiB of room");
        assert_eq!(max_write_bytes(100), 1, "a tiny limit still lets something through");
    }

    #[test]
    fn bad_writes_are_named() {
        let empty = v1::ClientWriteRequest {
            op: Some(v1::client_write_request::Op::Put(v1::KvPut { key: String::new(), value: vec![] })),
            ..Default::default()
        };
        assert_eq!(to_command(empty).unwrap_err().to_string(), "invalid argument: key must not be empty");
        let none = v1::ClientWriteRequest::default();
        assert!(to_command(none).unwrap_err().to_string().contains("no operation"));
        let no_seq = v1::ClientWriteRequest {
            client_id: 4,
            op: Some(v1::client_write_request::Op::Delete(v1::KvDelete { key: "k".into() })),
            ..Default::default()
        };
        assert!(to_command(no_seq).unwrap_err().to_string().contains("sequence"));
    }
}
