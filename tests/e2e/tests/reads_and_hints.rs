//! Read-after-write through every node, a follower relaying a write to the leader (and the
//! leader hint it answers with when it does not relay), and exactly-once application of a
//! retried write (same client id and sequence).

use std::time::Duration;

use anyhow::{Context, ensure};
use muster_e2e::kv::expect_value;
use muster_e2e::v1::raft_client_service_client::RaftClientServiceClient;
use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg, v1};
use muster_middleware::{LeaderHint, leader_hint};

const WAIT: Duration = Duration::from_secs(30);

/// The control plane's mark on a relayed call (`leader_forward::FORWARDED_BY_HEADER`).
const FORWARDED_BY_HEADER: &str = "x-muster-forwarded-by";

fn put(key: &str, value: &str) -> v1::client_write_request::Op {
    v1::client_write_request::Op::Put(v1::KvPut { key: key.to_string(), value: value.as_bytes().to_vec() })
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_follow_writes_on_every_node() {
    let cluster = Cluster::start(3, Options::default()).await;
    for writer in cluster.ids() {
        let key = format!("written-via-{writer}");
        cluster.client_for(writer).put(&key, writer.to_string()).await.expect("put");
        for reader in cluster.ids() {
            // Linearizable (ReadIndex) and lease reads both land on the leader and see the write.
            for consistency in [ReadConsistency::Linearizable, ReadConsistency::Lease] {
                expect_value(&cluster.client_for(reader), &key, writer.to_string().as_bytes(), consistency)
                    .await
                    .unwrap_or_else(|err| panic!("{consistency:?} read of {key} through node {reader}: {err:#}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_follower_names_the_leader_and_retries_apply_once() {
    let cluster = Cluster::start(3, Options::default()).await;

    // A follower relays the write to the leader and returns the leader's answer.
    eventually_msg("a follower relays a write to the leader", WAIT, || async {
        let leader = cluster.current_leader().await?;
        let follower = cluster.ids().into_iter().find(|id| *id != leader).context("a follower")?;
        let request = v1::ClientWriteRequest { client_id: 0, sequence: 0, op: Some(put("direct", "x")) };
        RaftClientServiceClient::new(cluster.api_channel(follower))
            .handle_client_write(request)
            .await
            .with_context(|| format!("follower {follower} did not relay the write"))?;
        Ok(())
    })
    .await;
    expect_value(&cluster.client(), "direct", b"x", ReadConsistency::Linearizable).await.expect("the relayed write");

    // A call that was already relayed once is not relayed again: the follower answers with the
    // hint, which must name the leader a majority agrees on, with its API address; retried if
    // an election happens to run in between.
    eventually_msg("a follower's write error carries the leader hint", WAIT, || async {
        let leader = cluster.current_leader().await?;
        let follower = cluster.ids().into_iter().find(|id| *id != leader).context("a follower")?;
        let write = v1::ClientWriteRequest { client_id: 0, sequence: 0, op: Some(put("direct", "y")) };
        let mut request = tonic::Request::new(write);
        request.metadata_mut().insert(FORWARDED_BY_HEADER, tonic::metadata::MetadataValue::from(leader));
        let status = RaftClientServiceClient::new(cluster.api_channel(follower))
            .handle_client_write(request)
            .await
            .err()
            .with_context(|| format!("follower {follower} accepted a write marked as already relayed"))?;
        ensure!(status.code() == tonic::Code::Unavailable, "code {:?}: {}", status.code(), status.message());
        let expected = LeaderHint { id: leader, addr: cluster.addrs(leader).api.clone() };
        ensure!(leader_hint(&status) == Some(expected), "hint {:?} in {status:?}", leader_hint(&status));
        ensure!(status.message().contains(&cluster.addrs(leader).api), "message: {}", status.message());
        Ok(())
    })
    .await;

    let client = cluster.client();
    let first = client
        .write_raw(v1::ClientWriteRequest { client_id: 42, sequence: 1, op: Some(put("once", "first")) })
        .await
        .expect("first write");
    let retry = client
        .write_raw(v1::ClientWriteRequest { client_id: 42, sequence: 1, op: Some(put("once", "second")) })
        .await
        .expect("retried write");
    let (Some(v1::client_response::Result::Write(first)), Some(v1::client_response::Result::Write(retry))) =
        (first.result, retry.result)
    else {
        panic!("writes answered without write results");
    };
    assert!(!first.deduplicated && first.succeeded, "first write: {first:?}");
    assert!(retry.deduplicated, "the retry was applied again: {retry:?}");
    assert_eq!(retry.index, first.index, "the retry answers with the original result");
    expect_value(&client, "once", b"first", ReadConsistency::Linearizable).await.expect("value of the first write");
}
