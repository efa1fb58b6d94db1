//! A worker whose certificate expired while its agent was stopped comes back by itself, against
//! real processes: with 10 s certificates, an agent stopped past its certificate's expiry
//! registers again with the token in its token file on restart (saying so loudly), is Ready
//! under a new id whose record names the old one (`replaces`), and the old record is Left with
//! `replaced_by`. A revoked worker never comes back this way: its agent stops with the reason,
//! and no new worker appears.

use muster_e2e::agent::Agent;
use muster_e2e::worker_tier::{WAIT, WorkerTier};
use muster_e2e::{WorkerAction, eventually_msg, v1};

/// Waits (with a deadline) until the agent's saved certificate has expired.
async fn wait_expired(agent: &Agent) {
    let expires = agent.cert_expires_at().expect("a saved identity");
    eventually_msg("the saved certificate to expire", WAIT, || async {
        let now = muster_proto::clock::unix_now();
        anyhow::ensure!(now > expires, "{} s to go", expires - now);
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_identity_registers_again_linked_to_the_old_and_a_revoked_one_never() {
    let tier = WorkerTier::start("", "worker_cert_validity = \"10s\"\n").await;
    let client = tier.cluster.client();

    // Two uses each: the registration, and the one after expiry.
    let mut agent = tier.agent(2).await;
    agent.start();
    let old_id = agent.wait_beating(WAIT).await;
    assert!(agent.terminate().await.success());
    wait_expired(&agent).await;
    agent.start();
    let new_id = agent.wait_beating(WAIT).await;
    assert_ne!(new_id, old_id, "a new worker id");
    agent.wait_log("IDENTITY EXPIRED", WAIT).await;
    let new = client.worker_action(WorkerAction::Get, new_id).await.expect("the new worker");
    assert_eq!((new.replaces, new.state), (old_id, v1::WorkerState::Ready as i32), "{new:?}");
    let old = client.worker_action(WorkerAction::Get, old_id).await.expect("the old worker");
    assert_eq!((old.replaced_by, old.state), (new_id, v1::WorkerState::Left as i32), "{old:?}");

    let mut revoked = tier.agent(2).await;
    revoked.start();
    let revoked_id = revoked.wait_beating(WAIT).await;
    client.worker_action(WorkerAction::Revoke, revoked_id).await.expect("revoke");
    let status = revoked.wait_exit(WAIT).await;
    assert!(!status.success(), "a revoked agent stops with an error");
    wait_expired(&revoked).await;
    let before = client.list_workers(v1::ListWorkersRequest::default()).await.expect("list").len();
    revoked.start();
    let status = revoked.wait_exit(WAIT).await;
    assert!(!status.success(), "refused: {}", revoked.log());
    assert!(revoked.log().contains("never comes back"), "the reason is named: {}", revoked.log());
    let after = client.list_workers(v1::ListWorkersRequest::default()).await.expect("list").len();
    assert_eq!(before, after, "no new worker for a revoked one");
}
