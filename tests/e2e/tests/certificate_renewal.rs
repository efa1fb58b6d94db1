//! Certificates that lapse while the cluster runs: every deployable is issued certificates
//! valid for well under a minute, shows when they expire (metric and log) while 50 workers beat
//! and a writer writes, then `musterctl tls renew` re-issues them and each process loads the new
//! files without a restart. Past the old expiry, new connections (an operator to every node, a
//! new worker through the registrar and the gateway) handshake with the renewed certificates;
//! no worker was marked Unreachable, no write failed, no process restarted.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_e2e::fleet::{BeatPlan, Fleet, register_all, register_one, token_for, wait_ready_workers};
use muster_e2e::gateway::Gateway;
use muster_e2e::probe::{cert_expiries, metric_value, metrics_body as metrics_of};
use muster_e2e::process::run_musterctl;
use muster_e2e::registrar::Registrar;
use muster_e2e::writer::Writer;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg, v1};

/// How long the first certificates last: enough to start the cluster and its fleet, short
/// enough that the test outlives them.
const LEAF_VALIDITY: Duration = Duration::from_secs(45);
const WAIT: Duration = Duration::from_secs(60);
const WORKERS: usize = 50;

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A deployable as the test sees it: its admin address, the role its certificate names and
/// where its log is.
struct Deployable {
    what: String,
    admin: String,
    role: &'static str,
}

/// The expiry of the certificate the process presents.
fn own_expiry(metrics: &str, role: &str) -> Option<i64> {
    cert_expiries(metrics, role).first().map(|(_, expiry)| *expiry)
}

/// `musterctl cluster status -o json` as the operator.
async fn cluster_status(cluster: &Cluster) -> serde_json::Value {
    let files = cluster.pki().expect("pki").operator();
    let endpoints: Vec<String> = cluster.ids().into_iter().map(|id| cluster.addrs(id).api.clone()).collect();
    let endpoints = endpoints.join(",");
    let (ca, cert, key) =
        (files.ca.display().to_string(), files.cert.display().to_string(), files.key.display().to_string());
    let args =
        ["--endpoints", &endpoints, "--ca", &ca, "--cert", &cert, "--key", &key, "cluster", "status", "-o", "json"];
    let (ok, stdout, stderr) = run_musterctl(args, Duration::from_secs(30)).await;
    assert!(ok, "musterctl cluster status failed: {stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|err| panic!("status is not JSON ({err}): {stdout}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn short_lived_certificates_are_renewed_and_reloaded_everywhere_without_a_restart() {
    let options =
        Options { heartbeat: Some(HeartbeatPolicy::fast()), leaf_cert_validity: Some(LEAF_VALIDITY), ..Options::tls() };
    let cluster = Cluster::start(3, options).await;
    let mut registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let pki = cluster.pki().expect("a TLS cluster");
    let token = token_for(&cluster, WORKERS as u32).await;
    let identities = register_all(&registrar.addr, &pki.ca_pem(), &token, WORKERS, 16).await.expect("50 workers");
    let _fleet = Fleet::start(&identities, &pki.ca_pem(), BeatPlan { fixed_interval: None }).expect("the fleet");
    wait_ready_workers(&cluster, WORKERS, WAIT).await;

    // A writer that keeps writing through all of it.
    let writer = Writer::start(cluster.client(), "renewal", Duration::from_secs(15), Duration::from_millis(20));

    let mut deployables: Vec<Deployable> = cluster
        .ids()
        .into_iter()
        .map(|id| Deployable {
            what: format!("node {id}"),
            admin: cluster.addrs(id).admin.clone(),
            role: "control-plane",
        })
        .collect();
    deployables.push(Deployable { what: "registrar".into(), admin: registrar.admin.clone(), role: "registrar" });
    deployables.push(Deployable { what: "gateway".into(), admin: gateway.admin.clone(), role: "gateway" });
    let pids_before: Vec<u32> = cluster.ids().into_iter().map(|id| cluster.pid(id)).chain(registrar.pid()).collect();

    // Before renewal: every deployable says when its certificate and its CA expire, and warns.
    let mut first_expiry = i64::MAX;
    for deployable in &deployables {
        let metrics = metrics_of(&deployable.admin).await.expect("metrics");
        let expiry = own_expiry(&metrics, deployable.role)
            .unwrap_or_else(|| panic!("{}: no certificate expiry in /metrics:\n{metrics}", deployable.what));
        assert!(expiry <= now_unix() + LEAF_VALIDITY.as_secs() as i64, "{}: expires at {expiry}", deployable.what);
        assert!(
            metrics.contains("muster_tls_cert_expires_at_seconds{role=\"ca\""),
            "{}: no CA expiry",
            deployable.what
        );
        first_expiry = first_expiry.min(expiry);
    }
    let logs =
        [cluster.log_text(1), cluster.log_text(2), cluster.log_text(3), registrar.log(), gateway.log_tail(100_000)];
    for (log, deployable) in logs.iter().zip(&deployables) {
        assert!(log.contains("TLS certificate expires in"), "{} logged no expiry warning:\n{log}", deployable.what);
    }
    assert!(first_expiry > now_unix() + 5, "the test setup took too long: certificates expire at {first_expiry}");

    // `cluster status` names the earliest expiry across the cluster, and knows the registrar's
    // and the gateway's certificates from their connections.
    let status = cluster_status(&cluster).await;
    let earliest = status["certificates"]["earliest"]["not_after_unix"].as_i64().expect("an earliest expiry");
    assert!(earliest <= first_expiry, "status says {earliest}, a deployable says {first_expiry}: {status}");
    let known: Vec<String> = status["certificates"]["certificates"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| format!("{}/{}", c["role"].as_str().unwrap_or(""), c["name"].as_str().unwrap_or("")))
        .collect();
    for name in ["control-plane/node-1", "control-plane/node-3", "registrar/reg-1", "gateway/gw-1", "operator/operator"]
    {
        assert!(known.iter().any(|k| k == name), "status does not know {name}: {known:?}");
    }

    // Renew every certificate of the directory; each process picks its own up.
    let dir = pki.dir().display().to_string();
    let (ok, stdout, stderr) =
        run_musterctl(["tls", "renew", "--dir", dir.as_str(), "--validity", "1h"], Duration::from_secs(30)).await;
    assert!(ok, "musterctl tls renew failed: {stdout}\n{stderr}");
    for name in ["node-1", "node-2", "node-3", "reg-1", "gw-1", "operator"] {
        assert!(stdout.contains(name), "renew did not list {name}:\n{stdout}");
    }
    for deployable in &deployables {
        eventually_msg(format!("{} serves with the renewed certificate", deployable.what), WAIT, || async {
            let metrics = metrics_of(&deployable.admin).await?;
            let expiry = own_expiry(&metrics, deployable.role).unwrap_or_default();
            anyhow::ensure!(expiry >= now_unix() + 1800, "expires at {expiry}");
            anyhow::ensure!(metric_value(&metrics, "muster_tls_reloads_total").unwrap_or_default() >= 1.0);
            Ok(())
        })
        .await;
    }

    // Past the old certificates' expiry (a wait for the clock, not for the system).
    let expired_at = UNIX_EPOCH + Duration::from_secs(first_expiry as u64 + 2);
    if let Ok(left) = expired_at.duration_since(SystemTime::now()) {
        tokio::time::sleep(left).await;
    }

    // New handshakes use the renewed certificates: an operator to every node on a new
    // connection, and a new worker through the registrar and the gateway.
    for id in cluster.ids() {
        let fresh = muster_e2e::cluster::channel(&cluster.addrs(id).api, Some(pki.operator_tls()));
        let mut meta = v1::cluster_management_service_client::ClusterManagementServiceClient::new(fresh);
        meta.get_cluster_metadata(v1::MetadataRequest {})
            .await
            .unwrap_or_else(|err| panic!("node {id} on a new connection after the old certificate expired: {err}"));
    }
    let newcomer = register_one(&cluster, &registrar).await;
    let late = Fleet::start(std::slice::from_ref(&newcomer), &pki.ca_pem(), BeatPlan { fixed_interval: None })
        .expect("a new worker");
    eventually_msg("the new worker's first beat is acked", WAIT, || async {
        anyhow::ensure!(late.stats.acks.load(Ordering::Relaxed) > 0, "no ack yet");
        Ok(())
    })
    .await;
    writer.wait_for_more(10, "writes go on past the old expiry", WAIT).await;
    let written = writer.stop().await;
    assert_eq!(written.failures, 0, "writes failed: {:?}", written.first_error);

    // Nothing restarted, no worker was marked Unreachable.
    cluster.check_processes().expect("every node runs");
    assert!(gateway.is_running(), "the gateway runs");
    assert!(!registrar.exited(), "the registrar runs");
    let pids_after: Vec<u32> = cluster.ids().into_iter().map(|id| cluster.pid(id)).chain(registrar.pid()).collect();
    assert_eq!(pids_before, pids_after, "no process restarted");
    let leader = cluster.wait_for_leader(WAIT).await;
    let leader_metrics = metrics_of(&cluster.addrs(leader).admin).await.expect("leader metrics");
    assert_eq!(metric_value(&leader_metrics, "muster_leases_expiries_total"), Some(0.0), "a worker expired");
    let unreachable = v1::ListWorkersRequest { state: v1::WorkerState::Unreachable as i32, ..Default::default() };
    assert!(cluster.client().list_workers(unreachable).await.expect("a list").is_empty());
}
