//! Votes, leader ids and log ids.

use muster_proto::v1;

use super::ConvertError;
use crate::types::{LeaderId, LogId, Vote};

fn leader_id_to_pb(id: &LeaderId) -> v1::LeaderId {
    v1::LeaderId { term: id.term, node_id: id.node_id }
}

fn leader_id_from_pb(id: v1::LeaderId) -> LeaderId {
    LeaderId { term: id.term, node_id: id.node_id }
}

pub fn vote_to_pb(vote: &Vote) -> v1::Vote {
    v1::Vote { leader_id: Some(leader_id_to_pb(&vote.leader_id)), committed: vote.committed }
}

pub fn vote_from_pb(vote: Option<v1::Vote>, message: &'static str) -> Result<Vote, ConvertError> {
    let vote = vote.ok_or_else(|| ConvertError::missing(message, "vote"))?;
    let leader_id = vote.leader_id.ok_or_else(|| ConvertError::missing(message, "vote.leader_id"))?;
    Ok(Vote { leader_id: leader_id_from_pb(leader_id), committed: vote.committed })
}

pub fn log_id_to_pb(log_id: &LogId) -> v1::LogId {
    v1::LogId { leader_id: Some(leader_id_to_pb(&log_id.leader_id)), index: log_id.index }
}

pub fn log_id_from_pb(log_id: v1::LogId, message: &'static str) -> Result<LogId, ConvertError> {
    let leader_id = log_id.leader_id.ok_or_else(|| ConvertError::missing(message, "log_id.leader_id"))?;
    Ok(LogId::new(leader_id_from_pb(leader_id), log_id.index))
}

pub fn opt_log_id_to_pb(log_id: &Option<LogId>) -> Option<v1::LogId> {
    log_id.as_ref().map(log_id_to_pb)
}

pub fn opt_log_id_from_pb(log_id: Option<v1::LogId>, message: &'static str) -> Result<Option<LogId>, ConvertError> {
    log_id.map(|id| log_id_from_pb(id, message)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vote_and_log_id_round_trip() {
        let vote = Vote { leader_id: LeaderId { term: 7, node_id: 3 }, committed: true };
        assert_eq!(vote_from_pb(Some(vote_to_pb(&vote)), "test").unwrap(), vote);
        let log_id = LogId::new(LeaderId { term: 2, node_id: 1 }, 42);
        assert_eq!(log_id_from_pb(log_id_to_pb(&log_id), "test").unwrap(), log_id);
        assert_eq!(opt_log_id_from_pb(opt_log_id_to_pb(&None), "test").unwrap(), None);
    }

    #[test]
    fn missing_vote_is_named() {
        let err = vote_from_pb(None, "VoteRequest").unwrap_err();
        assert_eq!(err.to_string(), "malformed VoteRequest: field `vote` is required");
    }
}
