//! The pipelined replication RPC (`RaftReplicationService/StreamAppend`) against a real node,
//! called the way a stolen control-plane certificate would: a request from a stale term is
//! answered HigherVote and changes nothing, a malformed request ends the stream with
//! INVALID_ARGUMENT naming the message, and the node keeps serving with its data intact.
//! (Who may call it at all is the authorization matrix's test.)

use muster_e2e::cluster::channel;
use muster_e2e::v1::raft_replication_service_client::RaftReplicationServiceClient;
use muster_e2e::{Cluster, Options, v1};
use tonic::Code;

#[tokio::test(flavor = "multi_thread")]
async fn a_node_certificate_cannot_rewrite_the_log_over_the_pipelined_rpc() {
    let cluster = Cluster::start(1, Options::tls()).await;
    cluster.client().put("before", "kept").await.expect("a write");
    let pki = cluster.pki().expect("a TLS cluster");
    let mut peer = RaftReplicationServiceClient::new(channel(&cluster.addrs(1).raft, Some(pki.node_tls(2))));

    // A "leader" of term 0 trying to replace the log: refused with the node's own vote.
    let stale = v1::AppendEntriesRequest {
        vote: Some(v1::Vote { leader_id: Some(v1::LeaderId { term: 0, node_id: 2 }), committed: true }),
        prev_log_id: None,
        entries: vec![v1::Entry {
            log_id: Some(v1::LogId { leader_id: Some(v1::LeaderId { term: 0, node_id: 2 }), index: 1 }),
            payload: Some(v1::entry::Payload::Blank(v1::Blank {})),
        }],
        leader_commit: None,
    };
    let mut answers =
        peer.stream_append(tokio_stream::iter([stale])).await.expect("a node certificate is admitted").into_inner();
    let answer = answers.message().await.expect("an answer").expect("one answer per request");
    match answer.result {
        Some(v1::stream_append_response::Result::HigherVote(vote)) => {
            assert!(vote.leader_id.is_some_and(|id| id.term >= 1), "the node's own vote: {vote:?}")
        }
        other => panic!("a stale leader's append was not refused: {other:?}"),
    }
    assert!(answer.command_format >= 1, "the answer says which command format the node reads");

    // A request without a vote is malformed: the stream ends naming it.
    let malformed = v1::AppendEntriesRequest::default();
    let mut answers = peer.stream_append(tokio_stream::iter([malformed])).await.expect("admitted").into_inner();
    let status = answers.message().await.expect_err("a malformed request ends the stream");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("AppendEntriesRequest"), "the error names the message: {status:?}");

    assert!(cluster.is_running(1), "the node survived");
    let kept = cluster.client().get("before", v1::ReadConsistency::Linearizable).await.expect("a read");
    assert_eq!(kept.map(|kv| kv.value), Some(b"kept".to_vec()), "the log was not rewritten");
    cluster.client().put("after", "v").await.expect("the node still takes writes");
}
