//! Network partitions, each node in its own network namespace (`muster_e2e::netns`): a
//! leader cut off from the rest serves no linearizable or lease read after the majority has
//! elected a new leader and written past it, acknowledges no write, and catches up once the
//! network heals; and in a 5-node "bridge" (two pairs that reach each other only through a
//! middle node) the leader keeps its majority, nodes cut off from it answer at once with a
//! hint, and nothing is lost.

use std::time::Duration;

use muster_e2e::kv::{expect_value, get, read_at_node, write_acked_at_node};
use muster_e2e::netns::NamespaceNetwork;
use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg, v1};
use muster_middleware::leader_hint;
use muster_proto::v1::raft_client_service_client::RaftClientServiceClient;

const WAIT: Duration = Duration::from_secs(30);
/// How long one direct call to a cut-off node may take before it counts as "no answer".
const CALL: Duration = Duration::from_secs(3);
/// Within how long a node that cannot reach the leader answers a write with a hint: well
/// under the server's 10 s request deadline (it forwards for at most 5 s, and its connection
/// to a cut-off leader is dropped after a missed 1 s keepalive).
const FORWARD_ANSWER: Duration = Duration::from_secs(8);

fn options() -> Options {
    assert!(
        NamespaceNetwork::available(),
        "partition tests need root and the ip and nft commands (iproute2, nftables)"
    );
    Options { isolated_network: true, ..Options::tls() }
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
    let majority_client = cluster
        .client_with(majority.iter().map(|id| cluster.addrs(*id).api.clone()).collect(), cluster.operator_client_tls());
    majority_client.put("k", "after").await.expect("the majority writes while the old leader is cut off");

    // The cut-off node may still believe it leads, but its quorum and its lease are gone.
    for consistency in [ReadConsistency::Linearizable, ReadConsistency::Lease] {
        let answer = read_at_node(&cluster, old, "k", consistency, CALL).await;
        assert!(
            answer.is_none(),
            "the cut-off node {old} answered a {consistency:?} read with {answer:?} after node {new} \
             was elected and acknowledged a newer write"
        );
    }
    assert!(
        !write_acked_at_node(&cluster, old, "lost", "x", CALL).await,
        "the cut-off node {old} acknowledged a write"
    );

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
    let leader = cluster.wait_for_leader(WAIT).await;
    // The leader and one node, and two others, reach each other only through the middle one.
    let others: Vec<u64> = cluster.ids().into_iter().filter(|id| *id != leader).collect();
    let (middle, near, far) = (others[0], others[1], vec![others[2], others[3]]);
    // Written through a far node, so its connection to the leader is open when the cut comes.
    assert!(write_acked_at_node(&cluster, far[0], "k", "before", WAIT).await, "a write forwarded by node {}", far[0]);
    cluster.network().partition(&[vec![leader, near], far.clone()]).expect("making the bridge");

    // A node cut off from the leader answers a write at once ("not the leader", naming it),
    // instead of holding it until the request deadline while its forward goes nowhere.
    let mut api = RaftClientServiceClient::new(cluster.api_channel(far[0]));
    let write = v1::ClientWriteRequest {
        op: Some(v1::client_write_request::Op::Put(v1::KvPut { key: "far".into(), value: b"x".to_vec() })),
        ..Default::default()
    };
    match tokio::time::timeout(FORWARD_ANSWER, api.handle_client_write(write)).await {
        Ok(Err(status)) => assert!(
            status.code() == tonic::Code::Unavailable && leader_hint(&status).is_some_and(|hint| hint.id == leader),
            "node {} (cut off from leader {leader}, middle {middle}) answered {status:?}",
            far[0]
        ),
        Ok(Ok(answer)) => panic!("node {} acknowledged a write it cannot replicate: {answer:?}", far[0]),
        Err(_) => panic!("node {} held a write for {FORWARD_ANSWER:?} without answering", far[0]),
    }

    // One client, which remembers the leader once it has found it; a node cut off from the
    // leader answers "not the leader" within about a second (its forward cannot connect).
    let client = cluster.client();
    let mut acked = Vec::new();
    for i in 0..20 {
        let value = format!("bridge-{i}");
        eventually_msg(format!("put k = {value} across the bridge"), WAIT, || async {
            anyhow::Ok(client.put("k", value.clone()).await?)
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
