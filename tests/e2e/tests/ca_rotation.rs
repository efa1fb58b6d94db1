//! Cluster CA rotation on a running cluster, the three steps of `musterctl tls rotate-ca` run
//! against the PKI directory every process reads (as with compose's shared volume), while 50
//! workers beat, a real worker agent renews its certificate every few seconds and a writer
//! writes:
//!
//! - begin: every deployable trusts both CAs; the agent gets the bundle at its next renewal.
//! - reissue: every deployable serves a certificate of the new CA; new tokens pin the new CA
//!   and a worker registers with one; the old operator certificate still works.
//! - finish: every deployable trusts the new CA alone, and the old operator certificate is
//!   refused; the agent, restarted, reconnects with what it renewed.
//!
//! Throughout: no process restarts, no write fails, no worker is marked Unreachable.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use muster_e2e::agent::Agent;
use muster_e2e::fleet::{BeatPlan, Fleet, register_all, register_one, token_for, wait_ready_workers};
use muster_e2e::gateway::Gateway;
use muster_e2e::probe::{cert_expiries, metric_value, metrics_body};
use muster_e2e::process::run_musterctl;
use muster_e2e::registrar::{Registrar, UNTHROTTLED};
use muster_e2e::writer::Writer;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg, v1};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

const WAIT: Duration = Duration::from_secs(60);
const WORKERS: usize = 50;

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// `musterctl tls rotate-ca STEP --dir DIR ...`, which must succeed; its output.
async fn rotate(dir: &str, step: &str, extra: &[&str]) -> String {
    let mut args = vec!["tls", "rotate-ca", step, "--dir", dir];
    args.extend_from_slice(extra);
    let (ok, stdout, stderr) = run_musterctl(args, Duration::from_secs(30)).await;
    assert!(ok, "rotate-ca {step} failed: {stdout}\n{stderr}");
    stdout
}

/// A condition on one deployable's TLS series: (the CAs it trusts, the certificate it serves,
/// the whole `/metrics` body), each CA or certificate as (name, expiry).
type TlsCheck = fn(&[(String, i64)], &[(String, i64)], &str) -> anyhow::Result<()>;

fn certificates_in(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Whether a new connection to `api` presenting `cert`/`key` and trusting `ca` is served.
async fn served(api: &str, ca: &str, cert: &str, key: &str) -> Result<(), tonic::Status> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name("localhost");
    let channel = muster_e2e::cluster::channel(api, Some(tls));
    let mut client = v1::cluster_management_service_client::ClusterManagementServiceClient::new(channel);
    client.get_cluster_metadata(v1::MetadataRequest {}).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cluster_ca_is_replaced_in_three_steps_while_workers_beat_and_writes_go_on() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(3, options).await;
    // Ten-second worker certificates: the agent renews every 5-8 s.
    let mut registrar = Registrar::start_with(&cluster, &format!("{UNTHROTTLED}worker_cert_validity = \"10s\"\n"));
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let pki = cluster.pki().expect("a TLS cluster");
    let dir = pki.dir().display().to_string();
    let old_ca = pki.ca_pem();
    let token = token_for(&cluster, WORKERS as u32 + 1).await;
    let identities = register_all(&registrar.addr, &old_ca, &token, WORKERS, 16).await.expect("50 workers");
    let _fleet = Fleet::start(&identities, &old_ca, BeatPlan { fixed_interval: None }).expect("the fleet");
    let mut agent = Agent::new(std::slice::from_ref(&registrar.addr), &token);
    agent.start();
    let agent_id = agent.wait_beating(WAIT).await;
    wait_ready_workers(&cluster, WORKERS + 1, WAIT).await;
    // The operator's certificate of the old CA, kept to show it is refused at the end.
    let old_operator = pki.operator();
    let old_operator_cert = std::fs::read_to_string(&old_operator.cert).expect("operator.pem");
    let old_operator_key = std::fs::read_to_string(&old_operator.key).expect("operator-key.pem");

    // A writer that keeps writing through all of it.
    let writer = Writer::start(cluster.client(), "rotation", Duration::from_secs(15), Duration::from_millis(20));
    let mut deployables: Vec<(String, String, &str)> = cluster
        .ids()
        .into_iter()
        .map(|id| (format!("node {id}"), cluster.addrs(id).admin.clone(), "control-plane"))
        .collect();
    deployables.push(("registrar".into(), registrar.admin.clone(), "registrar"));
    deployables.push(("gateway".into(), gateway.admin.clone(), "gateway"));
    let pids_before: Vec<u32> = cluster.ids().into_iter().map(|id| cluster.pid(id)).chain(registrar.pid()).collect();
    let wait_all = |what: &'static str, check: TlsCheck| {
        let deployables = &deployables;
        async move {
            for (name, admin, role) in deployables {
                eventually_msg(format!("{name}: {what}"), WAIT, || async {
                    let metrics = metrics_body(admin).await?;
                    check(&cert_expiries(&metrics, "ca"), &cert_expiries(&metrics, role), &metrics)
                })
                .await;
            }
        }
    };

    // 1. begin: both CAs trusted everywhere; the agent's bundle has both after a renewal.
    let begun = rotate(&dir, "begin", &[]).await;
    assert!(begun.contains("ca.pem trusts:") && begun.contains("(rotated"), "{begun}");
    assert_eq!(certificates_in(&pki.ca_pem()), 2);
    wait_all("trusts the old and the new CA", |cas, _, _| {
        ensure!(cas.len() == 2, "trusts {cas:?}");
        Ok(())
    })
    .await;
    eventually_msg("the agent renewed and holds both CAs", WAIT, || async {
        let bundle = std::fs::read_to_string(agent.identity_dir().join("ca.pem"))?;
        ensure!(certificates_in(&bundle) == 2, "its bundle holds {} CAs", certificates_in(&bundle));
        Ok(())
    })
    .await;

    // 2. reissue: every deployable serves a certificate of the new CA; tokens pin it.
    let reissued = rotate(&dir, "reissue", &["--validity", "1h"]).await;
    for name in ["node-1", "node-2", "node-3", "reg-1", "gw-1", "operator"] {
        assert!(reissued.contains(name), "reissue did not list {name}:\n{reissued}");
    }
    let bundle = pki.ca_pem();
    let new_ca = bundle[..bundle.find("-----END CERTIFICATE-----").expect("a certificate") + 25].to_string() + "\n";
    assert!(!old_ca.contains(new_ca.trim()), "the new CA comes first in ca.pem");
    wait_all("serves a certificate of the new CA", |_, own, metrics| {
        // The reissued certificates are valid for an hour, the old ones for a day: an expiry
        // within the hour is the new certificate, not merely one that has not expired.
        let reissued = now_unix() + 1800..=now_unix() + 3600 + 60;
        ensure!(!own.is_empty() && own.iter().all(|(_, expiry)| reissued.contains(expiry)), "serves {own:?}");
        ensure!(metric_value(metrics, "muster_tls_reloads_total").unwrap_or_default() >= 2.0);
        Ok(())
    })
    .await;
    for id in cluster.ids() {
        let operator = pki.operator();
        let (cert, key) =
            (std::fs::read_to_string(&operator.cert).unwrap(), std::fs::read_to_string(&operator.key).unwrap());
        served(&cluster.addrs(id).api, &new_ca, &cert, &key)
            .await
            .unwrap_or_else(|err| panic!("node {id} trusting only the new CA: {err}"));
        served(&cluster.addrs(id).api, &bundle, &old_operator_cert, &old_operator_key)
            .await
            .unwrap_or_else(|err| panic!("node {id} refused the old operator before finish: {err}"));
    }
    let newcomer = register_one(&cluster, &registrar).await;
    let late = Fleet::start(std::slice::from_ref(&newcomer), &new_ca, BeatPlan { fixed_interval: None })
        .expect("a worker trusting only the new CA");
    eventually_msg("a worker registered with a new token beats", WAIT, || async {
        ensure!(late.stats.acks.load(Ordering::Relaxed) > 0, "no ack yet");
        Ok(())
    })
    .await;

    // 3. finish: the new CA alone; a certificate of the old one is refused.
    let finished = rotate(&dir, "finish", &[]).await;
    assert!(finished.contains("ca.pem trusts:"), "{finished}");
    assert_eq!(certificates_in(&pki.ca_pem()), 1);
    wait_all("trusts the new CA alone", |cas, _, _| {
        ensure!(cas.len() == 1 && cas[0].0.contains("rotated"), "trusts {cas:?}");
        Ok(())
    })
    .await;
    for id in cluster.ids() {
        let refused = served(&cluster.addrs(id).api, &pki.ca_pem(), &old_operator_cert, &old_operator_key).await;
        assert!(refused.is_err(), "node {id} served a certificate of the dropped CA");
    }
    eventually_msg("the agent holds the new CA alone", WAIT, || async {
        let bundle = std::fs::read_to_string(agent.identity_dir().join("ca.pem"))?;
        ensure!(bundle.trim() == new_ca.trim(), "its bundle holds {} CAs", certificates_in(&bundle));
        Ok(())
    })
    .await;
    agent.kill().await;
    agent.start();
    assert_eq!(agent.wait_beating(WAIT).await, agent_id, "the agent came back as itself");

    writer.wait_for_more(10, "writes go on", WAIT).await;
    let written = writer.stop().await;
    assert_eq!(written.failures, 0, "writes failed: {:?}", written.first_error);
    cluster.check_processes().expect("every node runs");
    assert!(gateway.is_running() && !registrar.exited(), "the gateway and the registrar run");
    let pids_after: Vec<u32> = cluster.ids().into_iter().map(|id| cluster.pid(id)).chain(registrar.pid()).collect();
    assert_eq!(pids_before, pids_after, "no process restarted");
    let leader = cluster.wait_for_leader(WAIT).await;
    let leader_metrics = metrics_body(&cluster.addrs(leader).admin).await.expect("leader metrics");
    assert_eq!(metric_value(&leader_metrics, "muster_leases_expiries_total"), Some(0.0), "a worker expired");
    let unreachable = v1::ListWorkersRequest { state: v1::WorkerState::Unreachable as i32, ..Default::default() };
    assert!(cluster.client().list_workers(unreachable).await.expect("a list").is_empty());
}
