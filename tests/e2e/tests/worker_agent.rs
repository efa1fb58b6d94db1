//! The real `worker-agent`: it registers with a one-time token, pinning the registrar by the
//! CA key in the token, keeps its identity across restarts (a used-up token is no obstacle),
//! refuses a registrar whose chain does not match the pin, renews its certificate before it
//! expires, and stops loudly when renewal keeps failing until expiry.

use std::time::Duration;

use anyhow::ensure;
use muster_e2e::agent::Agent;
use muster_e2e::config::free_ports;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, Options, eventually_msg, v1};

const WAIT: Duration = Duration::from_secs(30);

fn agent(registrar: &str, token: &str) -> Agent {
    let mut agent = Agent::new(&[registrar.to_string()], token);
    agent.cluster_toml = "labels = { rack = \"r7\" }".into();
    agent
}

async fn one_use_token(cluster: &Cluster) -> String {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    cluster.client().create_token(request).await.expect("token").token
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_registers_once_and_reuses_its_identity() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start(&cluster);
    let mut agent = agent(&registrar.addr, &one_use_token(&cluster).await);

    agent.start();
    let id = agent.wait_identity(WAIT).await;
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(agent.identity_dir().join("key.pem")).expect("key").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600, "the private key is the owner's alone");
    agent.kill().await;

    // The token is spent; a restarted agent must come back on its saved identity.
    agent.start();
    assert_eq!(agent.wait_identity(WAIT).await, id, "same worker id after a restart");
    let workers = cluster.client().list_workers(v1::ListWorkersRequest::default()).await.expect("list");
    assert_eq!(workers.len(), 1, "a restart registered again: {workers:?}");
    assert_eq!(workers[0].labels.get("rack").map(String::as_str), Some("r7"), "configured labels reach the cluster");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registrar_that_does_not_match_the_pin_is_refused() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start(&cluster);
    let genuine = one_use_token(&cluster).await;
    let mut token = muster_token::decode(&genuine).expect("decode");
    token.ca_pin_sha256 = vec![0xAB; 32];
    let mut agent = agent(&registrar.addr, &muster_token::encode(&token));

    // Give the registrar time to come up first, so the refusal is the pin, not a refused connection.
    let mut probe = self::agent(&registrar.addr, &one_use_token(&cluster).await);
    probe.start();
    probe.wait_identity(WAIT).await;
    probe.kill().await;

    agent.start();
    let status = agent.wait_exit(WAIT).await;
    assert!(!status.success(), "the agent registered through an unpinned registrar");
    let log = agent.log();
    assert!(log.contains("pinned by the bootstrap token"), "unclear refusal: {log}");
    let tokens = cluster.client().list_tokens(true).await.expect("tokens");
    assert!(
        tokens.iter().any(|t| t.token_id == token.token_id && t.remaining_uses == 1),
        "the refusal spent the token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_waits_for_a_registrar_that_is_not_up_yet() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let [port] = free_ports::<1>();
    let addr = format!("127.0.0.1:{port}");
    let mut agent = agent(&addr, &one_use_token(&cluster).await);
    agent.start();

    // The agent logs a failed attempt and keeps going while nothing listens there.
    agent.wait_log("registrar not reachable", WAIT).await;
    assert!(agent.is_running(), "the agent gave up instead of retrying");
    let _registrar = Registrar::start_at(&cluster, &addr);
    assert!(agent.wait_identity(WAIT).await > 0);
}

/// Certificates this short are renewed 5–8 s after they are issued.
const SHORT_CERTS: &str = "worker_cert_validity = \"10s\"";

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_renews_its_certificate_before_it_expires() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start_with(&cluster, SHORT_CERTS);
    let mut agent = agent(&registrar.addr, &one_use_token(&cluster).await);
    agent.start();
    let id = agent.wait_identity(WAIT).await;
    let first_expiry = agent.cert_expires_at().expect("expiry");

    let watched = &agent;
    let renewed = eventually_msg("the agent renews its certificate", WAIT, || {
        let expiry = watched.cert_expires_at().unwrap_or(0);
        async move {
            ensure!(expiry > first_expiry, "identity.json still expires at {expiry}");
            let metrics = watched.metrics().await?;
            let shown = metrics.lines().find(|line| line.starts_with("muster_worker_cert_expires_at{"));
            ensure!(shown.is_some_and(|line| line.ends_with(&format!(" {expiry}"))), "stale expiry: {metrics}");
            ensure!(!metrics.contains("muster_worker_renewals_total{} 0"), "not counted yet: {metrics}");
            Ok(expiry)
        }
    })
    .await;
    assert_eq!(agent.worker_id(), Some(id), "renewal keeps the worker id");
    let record = cluster.client().worker_action(muster_e2e::WorkerAction::Get, id).await.expect("get");
    assert!(record.cert_expires_at_unix >= renewed, "the control plane saw the renewal: {record:?}");
    assert!(agent.is_running(), "the agent exited");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_cannot_renew_stops_at_expiry_with_the_way_out() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start_with(&cluster, SHORT_CERTS);
    let mut agent = agent(&registrar.addr, &one_use_token(&cluster).await);
    agent.start();
    agent.wait_identity(WAIT).await;
    drop(registrar);

    let status = agent.wait_exit(WAIT).await;
    let stderr = agent.log();
    assert!(!status.success(), "an expired agent exited cleanly: {stderr}");
    assert!(stderr.contains("certificate renewal failed"), "renewal failures were not logged: {stderr}");
    assert!(stderr.contains("expired") && stderr.contains("fresh bootstrap token"), "no way out given: {stderr}");
}
