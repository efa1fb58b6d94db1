//! Leader failure: `kill -9` the leader of a 3-node (mTLS) and a 5-node (plaintext) cluster;
//! a new leader takes over, writes go on, no acknowledged write is lost, and the killed node
//! catches up after a restart from its data directory.

use std::time::Duration;

use muster_e2e::kv::{expect_all, expect_value, key, put_many, value_of};
use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg};

const ELECTION: Duration = Duration::from_secs(30);
const CATCH_UP: Duration = Duration::from_secs(30);
const KEYS: usize = 50;

/// Writes `KEYS` keys, kills the leader, and checks a new leader serves writes and every
/// acknowledged key. Returns the killed node's id.
async fn kill_the_leader(cluster: &mut Cluster) -> u64 {
    let leader = cluster.wait_for_leader(ELECTION).await;
    put_many(&cluster.client(), "acked", 0..KEYS).await.expect("writes before the kill");

    cluster.kill(leader);
    let new_leader = cluster.wait_for_new_leader(leader, ELECTION).await;
    assert_ne!(new_leader, leader);

    let client = cluster.client();
    put_many(&client, "after-kill", 0..5).await.expect("writes after the failover");
    expect_all(&client, "acked", 0..KEYS, ReadConsistency::Linearizable)
        .await
        .expect("every write acknowledged before the kill survives it");
    expect_all(&client, "after-kill", 0..5, ReadConsistency::Linearizable).await.expect("writes after the failover");
    leader
}

#[tokio::test(flavor = "multi_thread")]
async fn three_tls_nodes_replicate_and_survive_a_leader_kill() {
    let mut cluster = Cluster::start(3, Options::tls()).await;
    let leader = cluster.wait_for_leader(ELECTION).await;

    // A put is visible at once, linearizably, through every node (followers hint at the leader).
    cluster.client().put("hello", "world").await.expect("first put");
    for id in cluster.ids() {
        expect_value(&cluster.client_for(id), "hello", b"world", ReadConsistency::Linearizable)
            .await
            .unwrap_or_else(|err| panic!("linearizable read through node {id}: {err:#}"));
    }
    // And each follower's own state machine gets it (stale reads are answered locally).
    for id in cluster.ids().into_iter().filter(|id| *id != leader) {
        let client = cluster.client_for(id);
        eventually_msg(format!("stale read on follower {id}"), CATCH_UP, || {
            expect_value(&client, "hello", b"world", ReadConsistency::Stale)
        })
        .await;
    }

    let killed = kill_the_leader(&mut cluster).await;

    let down = "written while the old leader was down";
    cluster.client().put("while-down", down).await.expect("put while a node is down");
    cluster.restart(killed);
    let client = cluster.client_for(killed);
    eventually_msg(format!("restarted node {killed} catches up"), CATCH_UP, || async {
        expect_value(&client, "while-down", down.as_bytes(), ReadConsistency::Stale).await?;
        expect_all(&client, "acked", 0..KEYS, ReadConsistency::Stale).await
    })
    .await;
    cluster.wait_ready(killed, CATCH_UP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn five_nodes_survive_a_leader_kill() {
    let mut cluster = Cluster::start(5, Options::default()).await;
    let killed = kill_the_leader(&mut cluster).await;
    assert!(!cluster.is_running(killed));
    let last = key("acked", KEYS - 1);
    expect_value(&cluster.client(), &last, &value_of(&last), ReadConsistency::Lease).await.expect("lease read");
}
