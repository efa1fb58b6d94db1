//! The peer RPC messages: AppendEntries and RequestVote, both directions.

use muster_proto::v1;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, StreamAppendError, StreamAppendResult, VoteRequest, VoteResponse,
};

use super::{ConvertError, entry_from_pb, entry_to_pb, opt_log_id_from_pb, opt_log_id_to_pb, vote_from_pb, vote_to_pb};
use crate::types::TypeConfig;

pub fn append_request_to_pb(req: &AppendEntriesRequest<TypeConfig>) -> v1::AppendEntriesRequest {
    v1::AppendEntriesRequest {
        vote: Some(vote_to_pb(&req.vote)),
        prev_log_id: opt_log_id_to_pb(&req.prev_log_id),
        entries: req.entries.iter().map(entry_to_pb).collect(),
        leader_commit: opt_log_id_to_pb(&req.leader_commit),
    }
}

pub fn append_request_from_pb(req: v1::AppendEntriesRequest) -> Result<AppendEntriesRequest<TypeConfig>, ConvertError> {
    Ok(AppendEntriesRequest {
        vote: vote_from_pb(req.vote, "AppendEntriesRequest")?,
        prev_log_id: opt_log_id_from_pb(req.prev_log_id, "AppendEntriesRequest")?,
        entries: req.entries.into_iter().map(entry_from_pb).collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from_pb(req.leader_commit, "AppendEntriesRequest")?,
    })
}

pub fn append_response_to_pb(resp: &AppendEntriesResponse<TypeConfig>) -> v1::AppendEntriesResponse {
    use v1::append_entries_response::Result as R;
    let result = match resp {
        AppendEntriesResponse::Success => R::Success(v1::Blank {}),
        AppendEntriesResponse::PartialSuccess(matching) => {
            R::PartialSuccess(v1::PartialSuccess { matching: opt_log_id_to_pb(matching) })
        }
        AppendEntriesResponse::Conflict => R::Conflict(v1::Blank {}),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_pb(vote)),
    };
    v1::AppendEntriesResponse { result: Some(result), command_format: muster_proto::COMMAND_FORMAT_VERSION }
}

pub fn append_response_from_pb(
    resp: v1::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<TypeConfig>, ConvertError> {
    use v1::append_entries_response::Result as R;
    Ok(match resp.result.ok_or_else(|| ConvertError::missing("AppendEntriesResponse", "result"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => {
            AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(p.matching, "AppendEntriesResponse")?)
        }
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(vote) => AppendEntriesResponse::HigherVote(vote_from_pb(Some(vote), "AppendEntriesResponse")?),
    })
}

/// One pipelined answer on the wire.
pub fn stream_append_result_to_pb(result: &StreamAppendResult<TypeConfig>) -> v1::StreamAppendResponse {
    use v1::stream_append_response::Result as R;
    let result = match result {
        Ok(matching) => R::Matched(v1::PartialSuccess { matching: opt_log_id_to_pb(matching) }),
        Err(StreamAppendError::Conflict(log_id)) => R::Conflict(super::log_id_to_pb(log_id)),
        Err(StreamAppendError::HigherVote(vote)) => R::HigherVote(vote_to_pb(vote)),
    };
    v1::StreamAppendResponse { result: Some(result), command_format: muster_proto::COMMAND_FORMAT_VERSION }
}

pub fn stream_append_result_from_pb(
    resp: v1::StreamAppendResponse,
) -> Result<StreamAppendResult<TypeConfig>, ConvertError> {
    use v1::stream_append_response::Result as R;
    Ok(match resp.result.ok_or_else(|| ConvertError::missing("StreamAppendResponse", "result"))? {
        R::Matched(matched) => Ok(opt_log_id_from_pb(matched.matching, "StreamAppendResponse")?),
        R::Conflict(log_id) => Err(StreamAppendError::Conflict(super::log_id_from_pb(log_id, "StreamAppendResponse")?)),
        R::HigherVote(vote) => Err(StreamAppendError::HigherVote(vote_from_pb(Some(vote), "StreamAppendResponse")?)),
    })
}

pub fn vote_request_to_pb(req: &VoteRequest<TypeConfig>) -> v1::VoteRequest {
    v1::VoteRequest { vote: Some(vote_to_pb(&req.vote)), last_log_id: opt_log_id_to_pb(&req.last_log_id) }
}

pub fn vote_request_from_pb(req: v1::VoteRequest) -> Result<VoteRequest<TypeConfig>, ConvertError> {
    Ok(VoteRequest::new(vote_from_pb(req.vote, "VoteRequest")?, opt_log_id_from_pb(req.last_log_id, "VoteRequest")?))
}

pub fn vote_response_to_pb(resp: &VoteResponse<TypeConfig>) -> v1::VoteResponse {
    v1::VoteResponse {
        vote: Some(vote_to_pb(&resp.vote)),
        vote_granted: resp.vote_granted,
        last_log_id: opt_log_id_to_pb(&resp.last_log_id),
    }
}

pub fn vote_response_from_pb(resp: v1::VoteResponse) -> Result<VoteResponse<TypeConfig>, ConvertError> {
    Ok(VoteResponse::new(
        vote_from_pb(resp.vote, "VoteResponse")?,
        opt_log_id_from_pb(resp.last_log_id, "VoteResponse")?,
        resp.vote_granted,
    ))
}
