//! Worker CA rotation on a running cluster, the three steps of `musterctl workers rotate-ca`
//! against the PKI directory the registrars read, while 50 workers beat and a real worker
//! agent renews its certificate every few seconds:
//!
//! - begin: the gateway trusts a certificate of the next CA within seconds.
//! - promote: the registrars sign with the new CA without a restart; the agent moves to it
//!   through its normal renewal, and so does a newly registered worker.
//! - finish: refused while certificates of the old CA may still be valid, then (forced) the
//!   gateway refuses a certificate of the old CA.
//!
//! Throughout: no worker is marked Unreachable, no process restarts.

use std::time::Duration;

use anyhow::ensure;
use muster_e2e::agent::Agent;
use muster_e2e::cluster::channel;
use muster_e2e::fleet::{BeatPlan, Fleet, SimIdentity, register_all, token_for, wait_ready_workers};
use muster_e2e::gateway::Gateway;
use muster_e2e::process::run_musterctl;
use muster_e2e::registrar::Registrar;
use muster_e2e::v1::worker_registry_service_client::WorkerRegistryServiceClient;
use muster_e2e::worker_cert::key_and_csr;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg, v1};
use muster_tls::CertificateAuthority;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const WAIT: Duration = Duration::from_secs(60);
const WORKERS: usize = 50;

/// `musterctl workers rotate-ca STEP --dir DIR ...` as the operator: (succeeded, stdout, stderr).
async fn rotate(cluster: &Cluster, dir: &str, step: &str, extra: &[&str]) -> (bool, String, String) {
    let files = cluster.pki().expect("pki").operator();
    let endpoints: Vec<String> = cluster.live_ids().into_iter().map(|id| cluster.addrs(id).api.clone()).collect();
    let endpoints = endpoints.join(",");
    let (ca, cert, key) =
        (files.ca.display().to_string(), files.cert.display().to_string(), files.key.display().to_string());
    let mut args =
        vec!["--endpoints", &endpoints, "--ca", &ca, "--cert", &cert, "--key", &key, "workers", "rotate-ca", step];
    args.extend_from_slice(&["--dir", dir]);
    args.extend_from_slice(extra);
    run_musterctl(args, Duration::from_secs(30)).await
}

/// Whether a new connection to the gateway presenting `identity` is served (a health check).
async fn gateway_serves(gateway: &Gateway, ca_pem: &str, identity: &SimIdentity) -> anyhow::Result<()> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca_pem))
        .identity(Identity::from_pem(&identity.chain_pem, &identity.key_pem))
        .domain_name("localhost");
    let mut health = HealthClient::new(channel(&gateway.addr, Some(tls)));
    health.check(HealthCheckRequest { service: String::new() }).await?;
    Ok(())
}

/// Worker `worker_id` of `cluster_id` with a new key and a certificate signed by `ca`.
fn identity_from(ca: &CertificateAuthority, cluster_id: &str, worker_id: u64) -> SimIdentity {
    let (key, csr) = key_and_csr();
    let uri = format!("spiffe://{cluster_id}/worker/{worker_id}");
    let signed = ca.sign_csr(&csr, &format!("worker-{worker_id}"), &uri, Duration::from_secs(3600)).expect("signed");
    SimIdentity {
        worker_id,
        chain_pem: format!("{}{}", signed.cert_pem, ca.cert_pem()),
        key_pem: key.serialize_pem(),
        gateways: Vec::new(),
    }
}

fn signed_by(chain_pem: &str, ca: &CertificateAuthority) -> bool {
    chain_pem.trim_end().ends_with(ca.cert_pem().trim_end())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_ca_is_replaced_in_three_steps_while_workers_beat() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(3, options).await;
    // Hour-long certificates for the fleet; ten-second ones for the agent (it renews every 5-8 s).
    let registrar = Registrar::start_unthrottled(&cluster);
    let renewing = Registrar::start_with(&cluster, "worker_cert_validity = \"10s\"\n");
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let pki = cluster.pki().expect("a TLS cluster");
    let dir = pki.dir().display().to_string();
    let ca_pem = pki.ca_pem();
    let client = cluster.client();
    let cluster_id = client.metadata().await.expect("metadata").cluster_id;
    let token = token_for(&cluster, WORKERS as u32 + 3).await;
    let mut identities = register_all(&registrar.addr, &ca_pem, &token, WORKERS + 1, 16).await.expect("workers");
    // One registered worker that does not beat: its id is used for certificates made here.
    let probe_id = identities.pop().expect("a spare worker").worker_id;
    let old_ca = CertificateAuthority::load(&pki.dir().join("worker-ca.pem"), &pki.dir().join("worker-ca-key.pem"))
        .expect("the worker CA");
    let _fleet = Fleet::start(&identities, &ca_pem, BeatPlan { fixed_interval: None }).expect("the fleet");
    let mut agent = Agent::new(std::slice::from_ref(&renewing.addr), &token);
    agent.start();
    let agent_id = agent.wait_beating(WAIT).await;
    let ready = v1::ListWorkersRequest { state: v1::WorkerState::Ready as i32, ..Default::default() };
    wait_ready_workers(&cluster, WORKERS + 1, WAIT).await;
    let pids_before = (registrar.pid(), renewing.pid());

    // Oversize and malformed CA certificates are refused by name before anything is stored,
    // from an operator (rotation) and from a registrar (EnsureWorkerCa).
    let oversize = format!("{}{}", "-----BEGIN CERTIFICATE-----\n", "A".repeat(1 << 20));
    let trust_next = |pem: &str| v1::RotateWorkerCaRequest {
        step: Some(v1::RotateWorkerCa { step: Some(v1::rotate_worker_ca::Step::TrustNext(pem.into())) }),
        force: false,
    };
    for (pem, expected) in
        [(oversize.as_str(), "max_ca_cert_pem_bytes"), ("not a certificate", "not a PEM certificate")]
    {
        let refused = client.rotate_worker_ca(trust_next(pem)).await;
        assert!(
            matches!(&refused, Err(muster_e2e::ClientError::Status(s)) if s.code() == tonic::Code::InvalidArgument && s.message().contains(expected)),
            "trust_next {expected}: {refused:?}"
        );
    }
    let mut registry = WorkerRegistryServiceClient::new(channel(
        &cluster.addrs(1).api,
        Some(pki.component_tls(muster_tls::Role::Registrar, "reg-1")),
    ));
    let proposed = v1::InitWorkerCa { cert_pem: oversize.clone(), ..Default::default() };
    let refused = registry.ensure_worker_ca(v1::EnsureWorkerCaRequest { proposed: Some(proposed) }).await;
    assert!(
        matches!(&refused, Err(s) if s.code() == tonic::Code::InvalidArgument && s.message().contains("max_ca_cert_pem_bytes")),
        "an oversize EnsureWorkerCa: {refused:?}"
    );

    // 1. begin: the gateway trusts a certificate of the next CA.
    let (ok, stdout, stderr) = rotate(&cluster, &dir, "begin", &[]).await;
    assert!(ok && stdout.contains("next:    sha256:"), "begin: {stdout}\n{stderr}");
    let next =
        CertificateAuthority::load(&pki.dir().join("worker-ca-next.pem"), &pki.dir().join("worker-ca-next-key.pem"))
            .expect("the next worker CA");
    let of_next = identity_from(&next, &cluster_id, probe_id);
    eventually_msg("the gateway serves a worker of the next CA", WAIT, || gateway_serves(&gateway, &ca_pem, &of_next))
        .await;
    let (ok, stdout, _) = rotate(&cluster, &dir, "begin", &[]).await;
    assert!(ok && stdout.contains("had been taken already"), "begin again: {stdout}");

    // 2. promote: the registrars sign with it; the agent moves to it by renewing.
    let (ok, stdout, stderr) = rotate(&cluster, &dir, "promote", &[]).await;
    assert!(ok && stdout.contains("retired: sha256:"), "promote: {stdout}\n{stderr}");
    assert_eq!(std::fs::read_to_string(pki.dir().join("worker-ca.pem")).unwrap(), next.cert_pem());
    eventually_msg("the agent renewed onto the new worker CA", WAIT, || async {
        let chain = std::fs::read_to_string(agent.identity_dir().join("cert.pem"))?;
        ensure!(signed_by(&chain, &next), "its certificate is still the old CA's");
        Ok(())
    })
    .await;
    eventually_msg("a new worker gets a certificate of the new worker CA", WAIT, || async {
        let newcomer = register_all(&registrar.addr, &ca_pem, &token, 1, 1).await?.remove(0);
        ensure!(signed_by(&newcomer.chain_pem, &next), "registered under the old CA");
        Ok(())
    })
    .await;
    // The old CA's certificates are still trusted: the fleet's have an hour to run.
    let of_old = identity_from(&old_ca, &cluster_id, probe_id);
    gateway_serves(&gateway, &ca_pem, &of_old).await.expect("the retired CA is trusted until finish");

    // 3. finish: refused while the fleet's certificates of the old CA are valid; forced, the
    // gateway refuses them.
    let (ok, stdout, stderr) = rotate(&cluster, &dir, "finish", &[]).await;
    assert!(!ok && stderr.contains("force"), "finish without --force: {stdout}\n{stderr}");
    let (ok, stdout, stderr) = rotate(&cluster, &dir, "finish", &["--force"]).await;
    assert!(ok && !stdout.contains("retired:"), "finish: {stdout}\n{stderr}");
    eventually_msg("the gateway refuses a worker of the dropped CA", WAIT, || async {
        ensure!(gateway_serves(&gateway, &ca_pem, &of_old).await.is_err(), "still served");
        Ok(())
    })
    .await;
    gateway_serves(&gateway, &ca_pem, &of_next).await.expect("the new CA's workers are served");
    agent.kill().await;
    agent.start();
    assert_eq!(agent.wait_beating(WAIT).await, agent_id, "the agent came back as itself");

    // Nothing restarted; no beating worker was marked Unreachable (the fleet's open connections
    // were made before the drop and stay up; the agent's last renewal was under the new CA).
    // The spare worker and the newcomers never beat, so their first leases lapse.
    assert_eq!((registrar.pid(), renewing.pid()), pids_before, "no registrar restarted");
    assert!(gateway.is_running(), "the gateway runs");
    let beating: std::collections::BTreeSet<u64> = identities.iter().map(|i| i.worker_id).chain([agent_id]).collect();
    let unreachable = v1::ListWorkersRequest { state: v1::WorkerState::Unreachable as i32, ..Default::default() };
    let lapsed = cluster.client().list_workers(unreachable).await.expect("a list");
    let lapsed: Vec<u64> = lapsed.iter().map(|w| w.worker_id).filter(|id| beating.contains(id)).collect();
    assert!(lapsed.is_empty(), "beating workers marked Unreachable: {lapsed:?}");
    let still_ready = cluster.client().list_workers(ready).await.expect("a list");
    let still_ready: std::collections::BTreeSet<u64> = still_ready.iter().map(|w| w.worker_id).collect();
    assert!(beating.is_subset(&still_ready), "not Ready: {:?}", beating.difference(&still_ready).collect::<Vec<_>>());
}
