//! Log compaction and joining: after enough writes the log is snapshotted and purged, so a
//! node that joins later can only catch up through a snapshot. It joins as a learner, is
//! promoted to voter, serves linearizable reads, and is removed again.

use std::time::Duration;

use anyhow::{Context, ensure};
use muster_e2e::kv::{expect_all, expect_value, key, put_many, value_of};
use muster_e2e::v1::cluster_conf_change_request::Change;
use muster_e2e::v1::snapshot_service_client::SnapshotServiceClient;
use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg, v1};

const WAIT: Duration = Duration::from_secs(30);
const KEYS: usize = 300;
const NEW: u64 = 4;

fn role_of(meta: &v1::ClusterMembership, id: u64) -> Option<v1::MemberRole> {
    meta.members.iter().find(|m| m.node_id == id).map(|m| v1::MemberRole::try_from(m.role).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_joins_through_a_snapshot_then_is_promoted_and_removed() {
    let options = Options { snapshot_after_logs: 50, max_logs_to_keep: 0, ..Options::default() };
    let mut cluster = Cluster::start(3, options).await;
    let client = cluster.client();
    put_many(&client, "snap", 0..KEYS).await.expect("writes");

    // Compaction: the policy snapshots every 50 entries and keeps no log behind the snapshot;
    // PurgeLog with snapshot_first then covers everything written so far.
    let leader = cluster.wait_for_leader(WAIT).await;
    let mut snapshots = SnapshotServiceClient::new(cluster.raft_channel(leader));
    let purged = snapshots
        .purge_log(v1::PurgeLogRequest { snapshot_first: true, upto: 0 })
        .await
        .expect("PurgeLog on the leader")
        .into_inner();
    assert!(purged.purged.is_some_and(|p| p.index > 0), "PurgeLog purged nothing: {purged:?}");
    let meta = cluster.metadata_of(leader).await.expect("leader metadata");
    assert!(meta.purged_index > 0 && meta.snapshot_index >= meta.purged_index, "log not compacted: {meta:?}");

    // Join through a follower: the join request follows the leader hint.
    let via = cluster.ids().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.add_node(NEW, via);
    eventually_msg("node 4 becomes a learner", WAIT, || async {
        let meta = cluster.metadata_of(leader).await?;
        ensure!(role_of(&meta, NEW) == Some(v1::MemberRole::Learner), "members: {:?}", meta.members);
        Ok(())
    })
    .await;
    let learner = cluster.client_for(NEW);
    let first = key("snap", 0);
    eventually_msg("node 4 catches up", WAIT, || async {
        expect_value(&learner, &first, &value_of(&first), ReadConsistency::Stale).await?;
        let list = learner.list("snap-", 0, ReadConsistency::Stale).await.context("list")?;
        ensure!(list.items.len() == KEYS, "node 4 has {} of {KEYS} keys", list.items.len());
        Ok(())
    })
    .await;
    let meta = cluster.metadata_of(NEW).await.expect("node 4 metadata");
    assert!(meta.snapshot_index > 0, "node 4 caught up without installing a snapshot: {meta:?}");
    cluster.wait_ready(NEW, WAIT).await;

    let promoted = client.update_conf(Change::Promote(v1::NodeIds { node_ids: vec![NEW] })).await.expect("promote");
    let membership = promoted.membership.expect("membership in the answer");
    assert_eq!(role_of(&membership, NEW), Some(v1::MemberRole::Voter), "after promote: {:?}", membership.members);
    learner.put("through-4", "ok").await.expect("write through node 4");
    expect_value(&learner, "through-4", b"ok", ReadConsistency::Linearizable).await.expect("linearizable via node 4");
    expect_all(&learner, "snap", 0..KEYS, ReadConsistency::Linearizable).await.expect("every key via node 4");

    client.update_conf(Change::Remove(v1::NodeIds { node_ids: vec![NEW] })).await.expect("remove");
    eventually_msg("node 4 leaves the membership", WAIT, || async {
        let leader = cluster.current_leader().await?;
        let meta = cluster.metadata_of(leader).await?;
        ensure!(role_of(&meta, NEW).is_none() && !meta.joint, "members: {:?}", meta.members);
        Ok(())
    })
    .await;
    client.put("after-remove", "ok").await.expect("writes go on without node 4");
}
