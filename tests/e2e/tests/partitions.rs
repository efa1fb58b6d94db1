//! Network partitions, each node in its own network namespace (`muster_e2e::netns`): a
//! leader cut off from the rest serves no linearizable or lease read after the majority has
//! elected a new leader and written past it, acknowledges no write, and catches up once the
//! network heals; and a 5-node "bridge" (two pairs that reach each other only through a
//! middle node) still elects one leader and loses nothing.

use std::time::Duration;

use muster_e2e::kv::{expect_value, get};
use muster_e2e::netns::NamespaceNetwork;
use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg};
use muster_proto::v1;
use muster_proto::v1::raft_client_service_client::RaftClientServiceClient;

const WAIT: Duration = Duration::from_secs(30);
/// How long one direct call to a cut-off node may take before it counts as "no answer".
const CALL: Duration = Duration::from_secs(3);

fn options() -> Options {
    assert!(
        NamespaceNetwork::available(),
        "partition tests need root and the ip and nft commands (iproute2, nftables)"
    );
    Options { isolated_network: true, ..Options::tls() }
}

/// A read of `key` answered by node `id` itself (no following of leader hints): the value,
/// or `None` when the node refuses, hints elsewhere, or does not answer within [`CALL`].
async fn read_at(cluster: &Cluster, id: u64, key: &str, consistency: ReadConsistency) -> Option<Option<String>> {
    let mut client = RaftClientServiceClient::new(cluster.api_channel(id));
    let request = v1::ClientReadRequest {
        consistency: consistency as i32,
        query: Some(v1::client_read_request::Query::Get(v1::KvGet { key: key.to_string() })),
    };
    let response = tokio::time::timeout(CALL, client.handle_client_read(request)).await.ok()?.ok()?.into_inner();
    Some(match response.result {
        Some(v1::client_response::Result::Value(kv)) if response.found => {
            Some(String::from_utf8_lossy(&kv.value).into_owned())
        }
        _ => None,
    })
}

/// A write of `key` sent to node `id` itself, bounded by [`CALL`]: whether it was acknowledged.
async fn write_acked_at(cluster: &Cluster, id: u64, key: &str, value: &str) -> bool {
    let mut client = RaftClientServiceClient::new(cluster.api_channel(id));
    let request = v1::ClientWriteRequest {
        op: Some(v1::client_write_request::Op::Put(v1::KvPut { key: key.to_string(), value: value.as_bytes().to_vec() })),
        ..Default::default()
    };
    let answer = tokio::time::timeout(CALL, client.handle_client_write(request)).await;
    matches!(answer, Ok(Ok(response)) if response.get_ref().result.is_some())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_isolated_leader_serves_no_stale_read_and_catches_up_after_healing() {
    let mut cluster = Cluster::start(3, options()).await;
    let old = cluster.wait_for_leader(WAIT).await;
    cluster.client().put("k", "before").await.expect("put before the partition");
    let majority: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != old).collect();

    cluster.network().partition(&[vec![old], majority.clone()]).expect("cutting the leader off");
    let new = cluster.wait_for_new_leader(old, WAIT).await;
    assert!(majority.contains(&new));
    let majority_client = cluster.client_with(
        majority.iter().map(|id| cluster.addrs(*id).api.clone()).collect(),
        cluster.operator_client_tls(),
    );
    majority_client.put("k", "after").await.expect("the majority writes while the old leader is cut off");

    // The cut-off node may still believe it leads, but its quorum and its lease are gone.
    for consistency in [ReadConsistency::Linearizable, ReadConsistency::Lease] {
        let answer = read_at(&cluster, old, "k", consistency).await;
        assert!(
            answer.is_none(),
            "the cut-off node {old} answered a {consistency:?} read with {answer:?} after node {new} \
             was elected and acknowledged a newer write"
        );
    }
    assert!(!write_acked_at(&cluster, old, "lost", "x").await, "the cut-off node {old} acknowledged a write");

    cluster.network().heal().expect("healing");
    let client = cluster.client_for(old);
    eventually_msg(format!("node {old} catches up after healing"), WAIT, || {
        expect_value(&client, "k", b"after", ReadConsistency::Stale)
    })
    .await;
    for id in cluster.ids() {
        let value = get(&cluster.client_for(id), "k", ReadConsistency::Linearizable).await.expect("read after healing");
        assert_eq!(value.as_deref(), Some(&b"after"[..]), "node {id} after healing");
        assert_eq!(get(&cluster.client_for(id), "lost", ReadConsistency::Linearizable).await.expect("read"), None);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_five_node_bridge_elects_one_leader_and_loses_nothing() {
    let mut cluster = Cluster::start(5, options()).await;
    cluster.wait_for_leader(WAIT).await;
    cluster.client().put("k", "before").await.expect("put before the partition");

    // {1,2} and {4,5} reach each other only through node 3.
    cluster.network().partition(&[vec![1, 2], vec![4, 5]]).expect("making the bridge");
    let mut acked = Vec::new();
    for i in 0..20 {
        let value = format!("bridge-{i}");
        eventually_msg(format!("put k = {value} across the bridge"), WAIT, || async {
            anyhow::Ok(cluster.client().put("k", value.clone()).await?)
        })
        .await;
        acked.push(value);
    }
    let leader = cluster.wait_for_leader(WAIT).await;
    let last = acked.last().expect("writes").clone();
    expect_value(&cluster.client(), "k", last.as_bytes(), ReadConsistency::Linearizable)
        .await
        .unwrap_or_else(|err| panic!("leader {leader}, across the bridge: {err:#}"));

    cluster.network().heal().expect("healing");
    for id in cluster.ids() {
        let client = cluster.client_for(id);
        eventually_msg(format!("node {id} holds the last write"), WAIT, || {
            expect_value(&client, "k", last.as_bytes(), ReadConsistency::Stale)
        })
        .await;
    }
}
