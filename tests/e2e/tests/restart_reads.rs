//! No stale read after a restart. A leader that is `kill -9`'d and restarted before any other
//! node's election timer fires comes back as the leader of the same term, without an
//! election, knowing only the commit index it saved (which lags on purpose). Such a leader
//! once answered linearizable reads from before writes it had acknowledged. Here a key is
//! written in a burst, the leader (or the whole cluster) is killed and restarted at once,
//! and every node's linearizable and lease reads must return the last acknowledged value:
//! 50 tries of each.

use std::time::Duration;

use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg};

const TRIES: usize = 50;
/// Writes per burst: enough that the saved commit index lags the last acknowledged write.
const BURST: usize = 20;
const WAIT: Duration = Duration::from_secs(30);

/// Long election timeouts, so a restarted leader is back well before any follower campaigns
/// (the case under test); heartbeats as usual.
fn options() -> Options {
    Options { raft_timing: ["50ms", "2s", "3s"], ..Options::tls() }
}

/// Writes `key` = `<round>-<i>` for i in 0..BURST through the leader; returns the last value.
async fn burst(cluster: &Cluster, key: &str, round: usize) -> String {
    let client = cluster.client();
    let mut last = String::new();
    for i in 0..BURST {
        let value = format!("{round}-{i}");
        eventually_msg(format!("put {key} = {value}"), WAIT, || async {
            anyhow::Ok(client.put(key, value.clone()).await?)
        })
        .await;
        last = value;
    }
    last
}

/// Every node's reads of `key`, linearizable and lease, return `expected` (retried while no
/// leader answers; a stale answer fails at once).
async fn assert_fresh_everywhere(cluster: &Cluster, key: &str, expected: &str, what: &str) {
    for id in cluster.ids() {
        let client = cluster.client_for(id);
        for consistency in [ReadConsistency::Linearizable, ReadConsistency::Lease] {
            let value = eventually_msg(format!("node {id} answers a {consistency:?} read"), WAIT, || async {
                anyhow::Ok(
                    client.get(key, consistency).await?.map(|kv| String::from_utf8_lossy(&kv.value).into_owned()),
                )
            })
            .await;
            assert_eq!(
                value.as_deref(),
                Some(expected),
                "{what}: node {id} served a stale {consistency:?} read of {key}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_restarted_within_the_election_timeout_serves_no_stale_read() {
    let mut cluster = Cluster::start(3, options()).await;
    let mut restored = 0;
    for round in 0..TRIES {
        let leader = cluster.wait_for_leader(WAIT).await;
        let last = burst(&cluster, "restart-reads", round).await;
        cluster.kill(leader);
        cluster.restart(leader);
        assert_fresh_everywhere(&cluster, "restart-reads", &last, &format!("try {round}")).await;
        if cluster.wait_for_leader(WAIT).await == leader {
            restored += 1;
        }
    }
    // The case under test must have happened, or the test proves nothing.
    assert!(restored >= TRIES / 2, "the restarted node led again in only {restored} of {TRIES} tries");
    cluster.check_processes().expect("no node crashed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_cluster_killed_and_restarted_serves_no_stale_read() {
    let mut cluster = Cluster::start(3, options()).await;
    for round in 0..TRIES {
        cluster.wait_for_leader(WAIT).await;
        let last = burst(&cluster, "cluster-restart-reads", round).await;
        for id in cluster.ids() {
            cluster.kill(id);
        }
        for id in cluster.ids() {
            cluster.restart(id);
        }
        assert_fresh_everywhere(&cluster, "cluster-restart-reads", &last, &format!("try {round}")).await;
    }
    cluster.check_processes().expect("no node crashed");
}
