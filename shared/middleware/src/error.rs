//! The one mapping from domain errors to gRPC status, and back for the leader hint.
//!
//! Handlers return [`ApiError`] and convert with `?`/`into()`; nothing else in Muster picks
//! gRPC codes. A follower answers with [`ApiError::NotLeader`], which travels as
//! `UNAVAILABLE` plus the leader's id and address in metadata so clients can follow it
//! ([`leader_hint`] reads it back). A refusal with a typed reason is [`ApiError::Refused`]:
//! the reason picks the code and travels in metadata too ([`refusal`](crate::refusal)).

use std::fmt;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::refusal::{Refused, insert_refusal};

/// Metadata key carrying the current leader's node id (decimal).
pub const LEADER_ID_HEADER: &str = "x-muster-leader-id";
/// Metadata key carrying the current leader's API address (`host:port`).
pub const LEADER_ADDR_HEADER: &str = "x-muster-leader-addr";

/// Metadata key of an OUT_OF_RANGE watch answer: the oldest revision a watch can resume from
/// on that node (its history holds every change after it).
pub const COMPACT_REVISION_HEADER: &str = "x-muster-compact-revision";
/// Metadata key of a watch ended for lag (RESOURCE_EXHAUSTED): the revision to resume from.
pub const RESUME_REVISION_HEADER: &str = "x-muster-resume-revision";

/// Why a watch ended before its consumer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The revision asked for is older than the node's history (OUT_OF_RANGE): list again,
    /// or resume from the oldest revision given.
    Compacted,
    /// The consumer fell too far behind (RESOURCE_EXHAUSTED): resume from the revision given.
    Lagging,
}

impl WatchEnd {
    fn header(self) -> &'static str {
        match self {
            WatchEnd::Compacted => COMPACT_REVISION_HEADER,
            WatchEnd::Lagging => RESUME_REVISION_HEADER,
        }
    }
}

/// Reads a watch's end back from a status: why, and the revision it names.
pub fn watch_end(status: &Status) -> Option<(WatchEnd, u64)> {
    let end = match status.code() {
        Code::OutOfRange => WatchEnd::Compacted,
        Code::ResourceExhausted => WatchEnd::Lagging,
        _ => return None,
    };
    let revision = status.metadata().get(end.header())?.to_str().ok()?.parse().ok()?;
    Some((end, revision))
}

/// Where the leader is, as far as the answering node knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's Raft node id.
    pub id: u64,
    /// The leader's API address, `host:port`.
    pub addr: String,
}

impl fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node {} at {}", self.id, self.addr)
    }
}

/// Every failure a Muster API can report, one variant per gRPC code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("already exists: {0}")]
    AlreadyExists(String),
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Only the leader can serve this; `leader` says where to go when it is known, `message`
    /// adds optional context (may be empty).
    #[error("not the leader; {}", not_leader_detail(leader.as_ref(), message))]
    NotLeader { leader: Option<LeaderHint>, message: String },
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("deadline exceeded: {0}")]
    DeadlineExceeded(String),
    #[error("resource exhausted: {0}")]
    ResourceExhausted(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    /// The operation was overtaken by another (a newer stream from the same worker).
    #[error("aborted: {0}")]
    Aborted(String),
    /// A value past the range this server accepts (a snapshot chunk past the end).
    #[error("out of range: {0}")]
    OutOfRange(String),
    /// Data arrived corrupted (a checksum that does not match).
    #[error("data loss: {0}")]
    DataLoss(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A refusal whose reason callers act on (a spent token, a revoked worker): the code is
    /// the reason's ([`Refused::code`]), the reason rides along in metadata.
    #[error("{0}")]
    Refused(Refused),
    /// A watch cannot go on from where it is; `revision` (also in metadata) says from where it
    /// can.
    #[error("{message}")]
    WatchEnded { end: WatchEnd, revision: u64, message: String },
}

impl ApiError {
    /// A [`ApiError::NotLeader`] without extra context.
    pub fn not_leader(leader: Option<LeaderHint>) -> Self {
        Self::NotLeader { leader, message: String::new() }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Self::InvalidArgument(_) => Code::InvalidArgument,
            Self::NotFound(_) => Code::NotFound,
            Self::AlreadyExists(_) => Code::AlreadyExists,
            Self::FailedPrecondition(_) => Code::FailedPrecondition,
            Self::NotLeader { .. } | Self::Unavailable(_) => Code::Unavailable,
            Self::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Self::ResourceExhausted(_) => Code::ResourceExhausted,
            Self::PermissionDenied(_) => Code::PermissionDenied,
            Self::Unauthenticated(_) => Code::Unauthenticated,
            Self::Aborted(_) => Code::Aborted,
            Self::OutOfRange(_) => Code::OutOfRange,
            Self::DataLoss(_) => Code::DataLoss,
            Self::Internal(_) => Code::Internal,
            Self::Refused(refused) => refused.code(),
            Self::WatchEnded { end: WatchEnd::Compacted, .. } => Code::OutOfRange,
            Self::WatchEnded { end: WatchEnd::Lagging, .. } => Code::ResourceExhausted,
        }
    }
}

impl ApiError {
    /// An upstream Muster server's error as this server's own: the same code and words, a
    /// typed refusal kept typed (a registrar relays the control plane's refusals this way).
    pub fn relayed(status: &Status) -> Self {
        let message = status.message().to_owned();
        if let Some(reason) = crate::refusal::refusal(status) {
            return Refused::new(reason, message).into();
        }
        match status.code() {
            Code::InvalidArgument => Self::InvalidArgument(message),
            Code::OutOfRange => Self::OutOfRange(message),
            Code::NotFound => Self::NotFound(message),
            Code::AlreadyExists => Self::AlreadyExists(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::Aborted => Self::Aborted(message),
            Code::Unavailable | Code::Cancelled => Self::Unavailable(message),
            Code::DeadlineExceeded => Self::DeadlineExceeded(message),
            Code::ResourceExhausted => Self::ResourceExhausted(message),
            Code::PermissionDenied => Self::PermissionDenied(message),
            Code::Unauthenticated => Self::Unauthenticated(message),
            Code::DataLoss => Self::DataLoss(message),
            Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal => {
                Self::Internal(format!("upstream {:?}: {message}", status.code()))
            }
        }
    }
}

/// "leader is node N at ADDR" or "leader unknown", then the optional context.
fn not_leader_detail(leader: Option<&LeaderHint>, message: &str) -> String {
    let mut detail = match leader {
        Some(leader) => format!("leader is {leader}"),
        None => "leader unknown (election in progress?)".to_owned(),
    };
    if !message.is_empty() {
        detail.push_str(": ");
        detail.push_str(message);
    }
    detail
}

impl From<ApiError> for Status {
    fn from(err: ApiError) -> Self {
        let code = err.code();
        match err {
            ApiError::NotLeader { leader, message } => {
                let mut metadata = MetadataMap::new();
                if let Some(leader) = &leader {
                    insert_leader(&mut metadata, leader);
                }
                let text = format!("this node is not the leader; {}", not_leader_detail(leader.as_ref(), &message));
                Status::with_metadata(code, text, metadata)
            }
            ApiError::Internal(message) => {
                // Internal errors are bugs or broken storage: always leave a trace server-side.
                tracing::error!(error = %message, "internal error returned to client");
                Status::new(code, message)
            }
            ApiError::WatchEnded { end, revision, message } => {
                let mut metadata = MetadataMap::new();
                metadata.insert(end.header(), MetadataValue::from(revision));
                Status::with_metadata(code, message, metadata)
            }
            ApiError::Refused(Refused { reason, message }) => {
                let mut metadata = MetadataMap::new();
                insert_refusal(&mut metadata, reason);
                Status::with_metadata(code, message, metadata)
            }
            ApiError::InvalidArgument(message)
            | ApiError::NotFound(message)
            | ApiError::AlreadyExists(message)
            | ApiError::FailedPrecondition(message)
            | ApiError::Unavailable(message)
            | ApiError::DeadlineExceeded(message)
            | ApiError::ResourceExhausted(message)
            | ApiError::PermissionDenied(message)
            | ApiError::Unauthenticated(message)
            | ApiError::Aborted(message)
            | ApiError::OutOfRange(message)
            | ApiError::DataLoss(message) => Status::new(code, message),
        }
    }
}

/// Writes the hint; an address that is not valid metadata is left out (the id still helps).
fn insert_leader(metadata: &mut MetadataMap, leader: &LeaderHint) {
    metadata.insert(LEADER_ID_HEADER, MetadataValue::from(leader.id));
    if let Ok(addr) = MetadataValue::try_from(leader.addr.as_str()) {
        metadata.insert(LEADER_ADDR_HEADER, addr);
    }
}

/// Reads the leader hint back from a status, if the server sent a complete one.
pub fn leader_hint(status: &Status) -> Option<LeaderHint> {
    let metadata = status.metadata();
    let id = metadata.get(LEADER_ID_HEADER)?.to_str().ok()?.parse().ok()?;
    let addr = metadata.get(LEADER_ADDR_HEADER)?.to_str().ok()?.trim();
    if addr.is_empty() {
        return None;
    }
    Some(LeaderHint { id, addr: addr.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint() -> LeaderHint {
        LeaderHint { id: 3, addr: "10.0.0.3:3669".to_owned() }
    }

    #[test]
    fn each_variant_maps_to_its_code_with_the_bare_message() {
        let cases = [
            (ApiError::InvalidArgument("x".into()), Code::InvalidArgument),
            (ApiError::NotFound("x".into()), Code::NotFound),
            (ApiError::AlreadyExists("x".into()), Code::AlreadyExists),
            (ApiError::FailedPrecondition("x".into()), Code::FailedPrecondition),
            (ApiError::Unavailable("x".into()), Code::Unavailable),
            (ApiError::DeadlineExceeded("x".into()), Code::DeadlineExceeded),
            (ApiError::ResourceExhausted("x".into()), Code::ResourceExhausted),
            (ApiError::PermissionDenied("x".into()), Code::PermissionDenied),
            (ApiError::Unauthenticated("x".into()), Code::Unauthenticated),
            (ApiError::Aborted("x".into()), Code::Aborted),
            (ApiError::OutOfRange("x".into()), Code::OutOfRange),
            (ApiError::DataLoss("x".into()), Code::DataLoss),
            (ApiError::Internal("x".into()), Code::Internal),
        ];
        for (err, code) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert_eq!(status.message(), "x");
            assert_eq!(leader_hint(&status), None);
        }
    }

    #[test]
    fn not_leader_carries_the_hint_in_metadata_and_message() {
        let status = Status::from(ApiError::not_leader(Some(hint())));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), "this node is not the leader; leader is node 3 at 10.0.0.3:3669");
        assert_eq!(leader_hint(&status), Some(hint()));
    }

    #[test]
    fn hint_survives_the_trip_through_http_headers() {
        let status = Status::from(ApiError::not_leader(Some(hint())));
        let response = status.into_http::<()>();
        let back = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(back.code(), Code::Unavailable);
        assert_eq!(leader_hint(&back), Some(hint()));
    }

    #[test]
    fn unknown_leader_sends_no_hint_and_says_so() {
        let err = ApiError::NotLeader { leader: None, message: "cannot write".into() };
        assert_eq!(err.to_string(), "not the leader; leader unknown (election in progress?): cannot write");
        let status = Status::from(err);
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.metadata().get(LEADER_ID_HEADER).is_none());
        assert_eq!(leader_hint(&status), None);
    }

    #[test]
    fn partial_or_malformed_hint_is_ignored() {
        let mut metadata = MetadataMap::new();
        metadata.insert(LEADER_ID_HEADER, MetadataValue::from_static("three"));
        metadata.insert(LEADER_ADDR_HEADER, MetadataValue::from_static("h:1"));
        assert_eq!(leader_hint(&Status::with_metadata(Code::Unavailable, "", metadata)), None);

        let mut metadata = MetadataMap::new();
        metadata.insert(LEADER_ID_HEADER, MetadataValue::from_static("3"));
        assert_eq!(leader_hint(&Status::with_metadata(Code::Unavailable, "", metadata)), None);
    }

    #[test]
    fn a_relayed_status_keeps_its_code_words_and_refusal() {
        for code in [Code::NotFound, Code::PermissionDenied, Code::Unavailable, Code::InvalidArgument] {
            let relayed = Status::from(ApiError::relayed(&Status::new(code, "why")));
            assert_eq!((relayed.code(), relayed.message()), (code, "why"));
        }
        let refused = Status::from(ApiError::from(Refused::new(muster_proto::v1::Refusal::WorkerRevoked, "revoked")));
        let relayed = Status::from(ApiError::relayed(&refused));
        assert_eq!(crate::refusal(&relayed), Some(muster_proto::v1::Refusal::WorkerRevoked));
        assert_eq!(Status::from(ApiError::relayed(&Status::unimplemented("no"))).code(), Code::Internal);
    }

    #[test]
    fn display_keeps_the_category_prefix() {
        assert_eq!(ApiError::NotFound("worker 7".into()).to_string(), "not found: worker 7");
        assert_eq!(ApiError::not_leader(Some(hint())).to_string(), "not the leader; leader is node 3 at 10.0.0.3:3669");
    }
}
