//! The heartbeat loop against fake gateways over real mTLS: the stream protocol (a full first
//! report, plain ones after, LEFT on shutdown), failover down the rendezvous ranking, moving
//! when the list names a new first choice, and the refusals that end the agent.

mod support;

use std::sync::Arc;
use std::time::Duration;

use muster_admin::AdminSource;
use muster_proto::v1;
use muster_tls::Role;
use muster_worker_agent::gateways::{Gateway, GatewayBook, GatewayList, rank};
use muster_worker_agent::heartbeat::Heartbeats;
use muster_worker_agent::status::AgentStatus;
use support::{Behaviour, Pki, WORKER_ID, next};
use tokio::sync::{mpsc, watch};

struct Agent {
    status: Arc<AgentStatus>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

/// Runs the heartbeat loop for worker 7 with `gateways` as its learned list.
fn agent(pki: &Pki, gateways: Vec<Gateway>) -> Agent {
    let dir = tempfile::tempdir().unwrap();
    let (_identity, identity) = support::shared(pki.worker_identity());
    let status = Arc::new(AgentStatus::new(identity.clone(), dir.path()));
    let heartbeats = Heartbeats {
        worker_id: WORKER_ID,
        identity,
        book: GatewayBook::new(dir.path().into(), GatewayList { epoch: 0, gateways }, &[]),
        profile: muster_worker_agent::profile::Profile::fixed(muster_worker_agent::profile::local(
            "test-host",
            &Default::default(),
        )),
        status: status.clone(),
        grace: Duration::from_secs(2),
    };
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(heartbeats.run(stopped));
    Agent { status, stop, task, _dir: dir }
}

fn gateway(id: &str, addr: &str) -> Gateway {
    Gateway { id: id.into(), addr: addr.into() }
}

fn ready() -> Behaviour {
    Behaviour { ttl_ms: 20, ..Default::default() }
}

#[tokio::test]
async fn beats_full_first_then_plain_and_leaves_on_shutdown() {
    let pki = Pki::new();
    let (tx, mut received) = mpsc::unbounded_channel();
    let addr = support::start_gateway(&pki, "gw-a", Role::Gateway, ready(), tx).await;
    let agent = agent(&pki, vec![gateway("gw-a", &addr)]);

    let first = next(&mut received).await.report;
    assert!(first.full && first.profile.is_some(), "the first report must be full: {first:?}");
    assert_eq!((first.sequence, first.state), (1, v1::WorkerState::Ready as i32));
    for sequence in 2..5 {
        let plain = next(&mut received).await.report;
        assert!(!plain.full && plain.profile.is_none(), "{plain:?}");
        assert_eq!((plain.sequence, plain.state), (sequence, v1::WorkerState::Ready as i32));
    }
    assert!(agent.status.is_ready(), "{}", agent.status.not_ready_reason());
    let metrics = agent.status.render_metrics();
    assert!(metrics.contains("muster_worker_gateway_info{gateway_id=\"gw-a\"} 1"), "{metrics}");
    assert!(metrics.contains("muster_worker_ttl_seconds{} 0.1"), "the TTL floor applies: {metrics}");

    agent.stop.send_replace(true);
    let left = loop {
        let report = next(&mut received).await.report;
        if report.state != v1::WorkerState::Ready as i32 {
            break report;
        }
    };
    assert_eq!(left.state, v1::WorkerState::Left as i32);
    agent.task.await.unwrap().expect("a graceful leave is a clean exit");
}

#[tokio::test]
async fn a_slow_ack_does_not_delay_the_next_beat() {
    // Acks take 800 ms; the TTL is 1 s. Beats must still come one TTL apart (the lease runs
    // from when the gateway received the report), not TTL + ack delay (1.8 s, past a short
    // grace).
    let pki = Pki::new();
    let (tx, mut received) = mpsc::unbounded_channel();
    let slow = Behaviour { ttl_ms: 1_000, ack_delay: Duration::from_millis(800), ..Default::default() };
    let addr = support::start_gateway(&pki, "gw-a", Role::Gateway, slow, tx).await;
    let agent = agent(&pki, vec![gateway("gw-a", &addr)]);
    let mut last = next(&mut received).await.at;
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let at = next(&mut received).await.at;
        gaps.push(at - last);
        last = at;
    }
    gaps.sort();
    assert!(gaps[1] < Duration::from_millis(1_500), "beats came {gaps:?} apart: the ack delay was added to the TTL");
    assert!(gaps[1] >= Duration::from_millis(950), "beats came {gaps:?} apart: sooner than the TTL");
    agent.stop.send_replace(true);
    agent.task.await.unwrap().expect("a graceful leave is a clean exit");
}

#[tokio::test]
async fn fails_over_down_the_ranking_and_starts_each_stream_full() {
    let pki = Pki::new();
    let (tx, mut received) = mpsc::unbounded_channel();
    let live = support::start_gateway(&pki, "gw-live", Role::Gateway, ready(), tx).await;
    let dead = support::dead_address().await;
    // Whichever of the two ids ranks first for worker 7 gets the dead address.
    let ids = ["gw-x", "gw-y"];
    let ranked = rank(WORKER_ID, &ids.map(|id| gateway(id, "")));
    let list = vec![gateway(&ranked[0].id, &dead), gateway(&ranked[1].id, &live)];
    let agent = agent(&pki, list);

    let first = next(&mut received).await;
    assert_eq!(first.gateway_id, "gw-live");
    assert!(first.report.full);
    assert!(agent.status.heartbeat_failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    agent.stop.send_replace(true);
    agent.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn moves_when_a_new_list_names_another_first_choice() {
    let pki = Pki::new();
    let (tx, mut received) = mpsc::unbounded_channel();
    // Ids chosen so that "new" outranks "old" for worker 7.
    let (old_id, new_id) = {
        let ranked = rank(WORKER_ID, &[gateway("gw-1", ""), gateway("gw-2", "")]);
        (ranked[1].id.clone(), ranked[0].id.clone())
    };
    let new_addr = support::start_gateway(&pki, &new_id, Role::Gateway, ready(), tx.clone()).await;
    let old_addr = support::start_gateway(&pki, &old_id, Role::Gateway, ready(), tx.clone()).await;
    let both = vec![
        v1::GatewayEndpoint { gateway_id: old_id.clone(), addr: old_addr.clone() },
        v1::GatewayEndpoint { gateway_id: new_id.clone(), addr: new_addr },
    ];
    // A third gateway, the only one the worker knows at first, announces both.
    let announcer = Behaviour { gateways: both, ..ready() };
    let first_addr = support::start_gateway(&pki, "gw-0", Role::Gateway, announcer, tx).await;
    let agent = agent(&pki, vec![gateway("gw-0", &first_addr)]);

    assert_eq!(next(&mut received).await.gateway_id, "gw-0");
    let moved = loop {
        let got = next(&mut received).await;
        if got.gateway_id != "gw-0" {
            break got;
        }
    };
    assert_eq!(moved.gateway_id, new_id, "the worker must move to its new first choice");
    assert!(moved.report.full && moved.report.sequence == 1, "a new stream starts full: {:?}", moved.report);
    agent.stop.send_replace(true);
    agent.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_revoked_worker_stops_with_the_way_out() {
    let pki = Pki::new();
    let (tx, _received) = mpsc::unbounded_channel();
    let refusing = Behaviour { refuse: Some(tonic::Code::PermissionDenied), ..ready() };
    let addr = support::start_gateway(&pki, "gw-a", Role::Gateway, refusing, tx).await;
    let agent = agent(&pki, vec![gateway("gw-a", &addr)]);
    let err = tokio::time::timeout(Duration::from_secs(10), agent.task)
        .await
        .expect("the agent kept going after a revocation")
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(err.contains("revoked") && err.contains("fresh bootstrap token"), "{err}");
}

#[tokio::test]
async fn a_server_that_is_not_a_gateway_is_refused() {
    let pki = Pki::new();
    let (tx, _received) = mpsc::unbounded_channel();
    let addr = support::start_gateway(&pki, "reg-1", Role::Registrar, ready(), tx).await;
    let tls = muster_worker_agent::tls::gateway_tls(&pki.worker_identity()).unwrap();
    let report = v1::StatusReport::default();
    let opened = muster_worker_agent::stream::ReportStream::open(&addr, tls, Duration::from_secs(5), report).await;
    let err = opened.err().expect("a registrar certificate was accepted as a gateway").to_string();
    assert!(err.contains("names spiffe://muster/registrar/reg-1, not a heartbeat gateway"), "{err}");
}
