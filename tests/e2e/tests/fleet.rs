//! Fleets of simulated workers (each with its own key, certificate and mTLS stream, see
//! `muster_e2e::fleet`): a thousand register and beat; the issued TTL halves when a second
//! gateway joins while each gateway stays within its budget; plaintext and foreign certificates are refused at the gateway while the fleet beats on; a mass silence
//! pauses expiry with a loud log line, after which down-marking runs at its bounded rate.
//! Crashing the leader and a gateway under a fleet is `fleet_at_scale.rs`.

use std::time::{Duration, Instant};

use anyhow::ensure;
use muster_e2e::fleet::{BeatPlan, Fleet, register_fleet, unreachable_count};
use muster_e2e::gateway::Gateway;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, HeartbeatPolicy, Options, eventually_msg, v1};

const WAIT: Duration = Duration::from_secs(90);

fn ca_pem(cluster: &Cluster) -> String {
    cluster.pki().expect("a TLS cluster").ca_pem()
}

async fn wait_all_beating(cluster: &Cluster, count: usize) {
    muster_e2e::fleet::wait_all_beating(cluster, count, WAIT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_simulated_workers_register_and_beat() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start(&cluster);
    gateway.wait_ready().await;

    let started = Instant::now();
    let identities = register_fleet(&cluster, &registrar, 1000).await;
    eprintln!("registered 1000 workers in {:?}", started.elapsed());
    let mut ids: Vec<u64> = identities.iter().map(|i| i.worker_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "every worker got its own id");

    let fleet =
        Fleet::start(&identities, &ca_pem(&cluster), BeatPlan { fixed_interval: None }).expect("starting the fleet");
    wait_all_beating(&cluster, 1000).await;
    assert_eq!(gateway.metric("muster_gateway_connected_workers").await.expect("metric"), 1000.0);
    assert!(fleet.stats.acks.load(std::sync::atomic::Ordering::Relaxed) >= 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_gateway_halves_the_ttl_and_each_stays_within_its_budget() {
    // 60 workers at 10 heartbeats/s per gateway: TTL 6 s with one gateway, 3 s with two.
    let policy = HeartbeatPolicy {
        min_ttl: "1s",
        max_ttl: "60s",
        grace: "3s",
        max_heartbeats_per_second: 10,
        failover_ttl: "30s",
    };
    let cluster = Cluster::start(1, Options { heartbeat: Some(policy), ..Options::tls() }).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let first = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    first.wait_ready().await;
    let identities = register_fleet(&cluster, &registrar, 60).await;
    let fleet =
        Fleet::start(&identities, &ca_pem(&cluster), BeatPlan { fixed_interval: None }).expect("starting the fleet");
    wait_all_beating(&cluster, 60).await;
    eventually_msg("one gateway issues a 6 s TTL", WAIT, || async {
        let ttl = first.metric("muster_gateway_ttl_seconds").await?;
        ensure!(ttl == 6.0, "gw-1 issues {ttl} s");
        Ok(())
    })
    .await;

    let second = Gateway::start_with(&cluster, "gw-2", "batch_interval = \"100ms\"\n");
    second.wait_ready().await;
    for gateway in [&first, &second] {
        eventually_msg(format!("{} issues a 3 s TTL", gateway.id), WAIT, || async move {
            let ttl = gateway.metric("muster_gateway_ttl_seconds").await?;
            ensure!(ttl == 3.0, "{} issues {ttl} s", gateway.id);
            Ok(())
        })
        .await;
    }
    eventually_msg("workers spread over both gateways", WAIT, || async {
        let spread = fleet.stats.spread();
        ensure!(spread.get("gw-1").is_some_and(|n| *n > 0) && spread.get("gw-2").is_some_and(|n| *n > 0), "{spread:?}");
        Ok(())
    })
    .await;

    // Over a window of several TTLs, neither gateway accepts more than its budget allows (the
    // rate plus one burst).
    const ACCEPTED: &str = "muster_gateway_heartbeats_accepted_total";
    let before = [first.metric(ACCEPTED).await.expect("metric"), second.metric(ACCEPTED).await.expect("metric")];
    let window_start = Instant::now();
    tokio::time::sleep(Duration::from_secs(9)).await;
    let after = [first.metric(ACCEPTED).await.expect("metric"), second.metric(ACCEPTED).await.expect("metric")];
    let window = window_start.elapsed().as_secs_f64();
    for (i, gateway) in [&first, &second].iter().enumerate() {
        let budget = gateway.metric("muster_gateway_budget_per_second").await.expect("budget");
        assert_eq!(budget, 10.0, "{}'s budget is max_heartbeats_per_second", gateway.id);
        let taken = after[i] - before[i];
        assert!(taken <= budget * window + budget, "{} accepted {taken} beats in {window:.1}s", gateway.id);
        assert!(
            taken > 0.0,
            "{} accepted no beats; spread {:?}\n{}",
            gateway.id,
            fleet.stats.spread(),
            gateway.metrics().await.unwrap_or_default()
        );
    }
    assert_eq!(unreachable_count(&cluster).await.expect("list"), 0);
}

/// Tries one ReportStatus on `addr` with `tls` (None: plaintext); Ok if the gateway acked.
async fn try_report(addr: &str, tls: Option<tonic::transport::ClientTlsConfig>) -> anyhow::Result<()> {
    use muster_proto::v1::heartbeat_service_client::HeartbeatServiceClient;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    let channel = endpoint.connect_timeout(Duration::from_secs(5)).connect().await?;
    let report =
        v1::StatusReport { sequence: 1, state: v1::WorkerState::Ready as i32, full: true, ..Default::default() };
    let mut acks =
        HeartbeatServiceClient::new(channel).report_status(futures::stream::iter([report])).await?.into_inner();
    let ack = tokio::time::timeout(Duration::from_secs(5), acks.message()).await??;
    ensure!(ack.is_some(), "the stream ended without an ack");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_and_foreign_certificates_are_refused_without_disturbing_the_fleet() {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let identities = register_fleet(&cluster, &registrar, 10).await;
    let fleet =
        Fleet::start(&identities, &ca_pem(&cluster), BeatPlan { fixed_interval: None }).expect("starting the fleet");
    wait_all_beating(&cluster, 10).await;

    // Plaintext: no TLS handshake, no stream.
    assert!(try_report(&gateway.addr, None).await.is_err(), "a plaintext stream was served");
    // A certificate naming worker 1 of this very cluster, but from a CA of the attacker's own.
    let cluster_id = cluster.client().metadata().await.expect("metadata").cluster_id;
    let rogue = muster_tls::CertificateAuthority::generate("rogue CA", Duration::from_secs(600)).expect("CA");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = muster_worker_agent::register::csr_pem(&key).expect("csr");
    let uri = format!("spiffe://{cluster_id}/worker/{}", identities[0].worker_id);
    let forged = rogue.sign_csr(&csr, "forged", &uri, Duration::from_secs(600)).expect("sign");
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca_pem(&cluster)))
        .identity(tonic::transport::Identity::from_pem(forged.cert_pem, key.serialize_pem()))
        .domain_name("localhost");
    assert!(try_report(&gateway.addr, Some(tls)).await.is_err(), "a foreign CA's certificate was served");
    // The operator's certificate (the cluster CA, not the worker CA) is no worker either.
    let operator = cluster.operator_tls().expect("operator TLS");
    assert!(try_report(&gateway.addr, Some(operator)).await.is_err(), "an operator certificate was served");

    // The fleet never noticed: every worker beats on, Ready, with fresh acks.
    let acks_before = fleet.stats.acks.load(std::sync::atomic::Ordering::Relaxed);
    eventually_msg("the fleet keeps beating", WAIT, || async {
        let acks = fleet.stats.acks.load(std::sync::atomic::Ordering::Relaxed);
        ensure!(acks >= acks_before + 20, "{acks} acks, waiting for 20 more than {acks_before}");
        Ok(())
    })
    .await;
    wait_all_beating(&cluster, 10).await;
    assert_eq!(unreachable_count(&cluster).await.expect("list"), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mass_silence_pauses_expiry_loudly_then_marks_at_a_bounded_rate() {
    let options = Options {
        heartbeat: Some(HeartbeatPolicy::fast()),
        leases: "max_expiries_per_second = 4\nmass_expiry_fraction = 0.5\nmass_expiry_min_workers = 10\n\
                 mass_expiry_pause = \"4s\"",
        ..Options::tls()
    };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start_unthrottled(&cluster);
    let gateway = Gateway::start_with(&cluster, "gw-1", "batch_interval = \"100ms\"\n");
    gateway.wait_ready().await;
    let identities = register_fleet(&cluster, &registrar, 20).await;
    let mut fleet =
        Fleet::start(&identities, &ca_pem(&cluster), BeatPlan { fixed_interval: None }).expect("starting the fleet");
    wait_all_beating(&cluster, 20).await;

    // All 20 go silent at once (a network fault, as far as the leader can tell). Their leases
    // end over one TTL (each after its own last beat), so the first few may be marked before
    // half the fleet is silent; from then on the pause holds the rest.
    fleet.stop();
    eventually_msg("the leader reports a mass silence", WAIT, || async {
        ensure!(cluster.log_tail(1, 200).contains("MASS SILENCE"), "not yet");
        Ok(())
    })
    .await;
    let marked_before_the_pause = unreachable_count(&cluster).await.expect("list");
    assert!(marked_before_the_pause < 10, "{marked_before_the_pause} marked: the pause came after half the fleet");
    // The pause is 4 s: for 2 s of it, nothing more is marked.
    let watch_until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < watch_until {
        let count = unreachable_count(&cluster).await.expect("list");
        assert_eq!(count, marked_before_the_pause, "expiry went on during the pause");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // After the pause they are marked, no faster than 4 a second: some observation must
    // catch the marking half done.
    let partial = std::sync::atomic::AtomicBool::new(false);
    eventually_msg("every silent worker marked Unreachable", WAIT, || async {
        let count = unreachable_count(&cluster).await?;
        if count > marked_before_the_pause && count < 20 {
            partial.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        ensure!(count == 20, "{count} of 20 Unreachable");
        Ok(())
    })
    .await;
    assert!(partial.into_inner(), "all 20 were marked at once: down-marking is not rate-limited");
}
