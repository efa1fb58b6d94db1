//! The rolling-upgrade safety net: a node that meets a log entry of a command format newer than
//! its own stops applying with an error naming the entry and the format, and applies nothing
//! of it (an older release used to decode an unknown kind of command as nothing and skip it,
//! leaving its state behind the other nodes').

use std::time::Duration;

use muster_control_plane::store::legacy_fixture;
use muster_e2e::{Cluster, Options, ReadConsistency, eventually_msg, v1};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread")]
async fn a_command_of_a_newer_format_stops_the_node_with_an_error_naming_it() {
    let mut cluster = Cluster::start(1, Options::default()).await;
    cluster.client().put("before", b"1".to_vec()).await.expect("a put");
    cluster.kill(1);

    // What a newer release's leader could have written: a put, in a format this one predates.
    let from_the_future = v1::Command {
        format_version: muster_proto::COMMAND_FORMAT_VERSION + 98,
        op: Some(v1::command::Op::Put(v1::KvPut { key: "from-the-future".into(), value: b"x".to_vec() })),
        ..Default::default()
    };
    let index = legacy_fixture::append_command(&cluster.data_dir(1), from_the_future).expect("appending the entry");
    cluster.restart(1);

    let format = muster_proto::COMMAND_FORMAT_VERSION + 98;
    let expected = format!("entry {index}: command format {format} is newer than this release applies");
    eventually_msg("the node says which entry it cannot apply and why", WAIT, || async {
        let log = cluster.log_text(1);
        anyhow::ensure!(log.contains(&expected), "not yet:\n{}", cluster.log_tail(1, 10));
        anyhow::ensure!(log.contains("the state machine stopped applying"));
        Ok(())
    })
    .await;
    let put = cluster.client().put("after", b"2".to_vec()).await;
    assert!(put.is_err(), "a node that stopped applying takes no write: {put:?}");

    // Nothing of the entry was applied; what came before it was (a stale read is served from
    // the node's own applied state, with no Raft).
    let client = cluster.client();
    let before = client.get("before", ReadConsistency::Stale).await.expect("a stale read");
    assert!(before.is_some(), "the entries before the unreadable one are applied");
    let future = client.get("from-the-future", ReadConsistency::Stale).await.expect("a stale read");
    assert!(future.is_none(), "the newer command was applied: {future:?}");
}
