//! Durability across a whole-cluster crash: SIGKILL every node, start them all again from
//! their data directories, and every acknowledged key is still there.

use std::time::Duration;

use muster_e2e::kv::{expect_all, put_many};
use muster_e2e::{Cluster, Options, ReadConsistency};

const KEYS: usize = 100;

#[tokio::test(flavor = "multi_thread")]
async fn every_key_survives_killing_the_whole_cluster() {
    let mut cluster = Cluster::start(3, Options::default()).await;
    put_many(&cluster.client(), "durable", 0..KEYS).await.expect("writes");

    for id in cluster.ids() {
        cluster.kill(id);
    }
    for id in cluster.ids() {
        cluster.restart(id);
    }
    cluster.wait_started(Duration::from_secs(30)).await.expect("the restarted cluster elects a leader, all ready");

    let client = cluster.client();
    expect_all(&client, "durable", 0..KEYS, ReadConsistency::Linearizable).await.expect("keys after the restart");
    let list = client.list("durable-", 0, ReadConsistency::Linearizable).await.expect("list");
    assert_eq!(list.items.len(), KEYS);
    client.put("after-restart", "ok").await.expect("a write after the restart");
}
