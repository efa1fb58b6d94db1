//! Storage, paging and openraft errors → Muster's [`ApiError`], which the middleware crate
//! turns into gRPC statuses (leader hints included). Shared by the gRPC handlers and the
//! domain code (leases, the leadership seam), so it lives beside them, not under `grpc/`.

use muster_middleware::{ApiError, LeaderHint};
use openraft::errors::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};

use crate::store::PageError;
use crate::types::TypeConfig;

pub fn forward_to_leader(forward: &ForwardToLeader<TypeConfig>) -> ApiError {
    let leader = match (&forward.leader_id, &forward.leader_node) {
        (Some(id), Some(node)) => Some(LeaderHint { id: *id, addr: node.api_addr.clone() }),
        _ => None,
    };
    let message = match &leader {
        Some(hint) => format!("this node is not the leader; leader is node {} at {}", hint.id, hint.addr),
        None => "this node is not the leader and no leader is known yet (election in progress?)".to_string(),
    };
    ApiError::NotLeader { leader, message }
}

pub fn write_error(err: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ApiError {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => forward_to_leader(&forward),
        RaftError::APIError(ClientWriteError::LogEntryDiscarded(forward)) => ApiError::Unavailable(format!(
            "leadership changed before the write committed; its outcome is unknown, retry it with the same \
             client id and sequence ({})",
            forward_to_leader(&forward)
        )),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
            ApiError::FailedPrecondition(format!("membership change refused: {err}"))
        }
        RaftError::APIError(ClientWriteError::PreconditionFailed(err)) => ApiError::FailedPrecondition(err.to_string()),
        RaftError::Fatal(fatal) => ApiError::Unavailable(format!("raft node stopped: {fatal}")),
    }
}

pub fn read_error(err: RaftError<TypeConfig, LinearizableReadError<TypeConfig>>) -> ApiError {
    match err {
        RaftError::APIError(LinearizableReadError::ForwardToLeader(forward)) => forward_to_leader(&forward),
        RaftError::APIError(LinearizableReadError::QuorumNotEnough(err)) => {
            ApiError::Unavailable(format!("cannot confirm leadership with a quorum: {err}"))
        }
        RaftError::Fatal(fatal) => ApiError::Unavailable(format!("raft node stopped: {fatal}")),
    }
}

pub fn storage_error(err: std::io::Error) -> ApiError {
    ApiError::Internal(format!("storage: {err}"))
}

pub fn page_error(err: PageError) -> ApiError {
    match err {
        PageError::BadToken(bad) => ApiError::InvalidArgument(bad.to_string()),
        PageError::Storage(err) => storage_error(err),
    }
}
