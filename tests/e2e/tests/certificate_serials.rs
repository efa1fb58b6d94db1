//! Certificate serials and revocation, attacked end to end against real processes: a worker
//! certificate that was replaced by a renewal stops working on its next report once the worker
//! uses the new one (on every gateway, without waiting for anything to expire), a certificate
//! the cluster never issued (minted with the worker CA key) never gets an ack, `Renew` cannot
//! turn either into a recorded certificate, and after `RevokeWorker` answers, a revoked
//! worker's streams get no further ack. A real agent switches to its renewed certificate on
//! its own and its old one is retired.

use std::time::Duration;

use anyhow::ensure;
use muster_e2e::agent::Agent;
use muster_e2e::fleet::{SimIdentity, gateway_tls, register_all};
use muster_e2e::gateway::Gateway;
use muster_e2e::grpc_stream::BidiStream;
use muster_e2e::registrar::Registrar;
use muster_e2e::worker_cert::{self, WorkerLeaf, key_and_csr};
use muster_e2e::{Cluster, HeartbeatPolicy, Options, WorkerAction, eventually_msg, v1};
use muster_tls::CertificateAuthority;
use tonic::Code;

const WAIT: Duration = Duration::from_secs(60);
const REPORT_STATUS: &str = "/muster.v1.HeartbeatService/ReportStatus";
/// Gateways batch this often, so notices travel fast.
const GATEWAY_TOML: &str = "batch_interval = \"100ms\"\nmin_report_interval = \"0s\"\n";

struct Tier {
    cluster: Cluster,
    registrar: Registrar,
    gateways: [Gateway; 2],
    ca_pem: String,
}

async fn tier(registrar_toml: &str) -> Tier {
    let options = Options { heartbeat: Some(HeartbeatPolicy::fast()), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    let registrar = Registrar::start_with(&cluster, registrar_toml);
    let gateways =
        [Gateway::start_with(&cluster, "gw-1", GATEWAY_TOML), Gateway::start_with(&cluster, "gw-2", GATEWAY_TOML)];
    for gateway in &gateways {
        gateway.wait_ready().await;
    }
    let ca_pem = cluster.pki().expect("a TLS cluster").ca_pem();
    Tier { cluster, registrar, gateways, ca_pem }
}

impl Tier {
    async fn register(&self, count: usize) -> Vec<SimIdentity> {
        let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: count as u32, ..Default::default() };
        let token = self.cluster.client().create_token(request).await.expect("token").token;
        eventually_msg("workers register through the registrar", WAIT, || {
            register_all(&self.registrar.addr, &self.ca_pem, &token, count, count)
        })
        .await
    }

    /// `Renew` as `identity`: the renewed identity, or the registrar's refusal.
    async fn renew(&self, identity: &SimIdentity) -> Result<SimIdentity, tonic::Status> {
        let renewed = worker_cert::renew(&self.registrar.addr, &self.ca_pem, &identity.chain_pem, &identity.key_pem);
        let (response, key) = renewed.await?;
        Ok(SimIdentity { chain_pem: response.certificate_chain_pem, key_pem: key.serialize_pem(), ..identity.clone() })
    }

    async fn record(&self, id: u64) -> v1::WorkerRecord {
        self.cluster.client().worker_action(WorkerAction::Get, id).await.expect("GetWorker")
    }
}

/// The hex serial of a chain's leaf, as the cluster records it.
fn serial_of(chain_pem: &str) -> String {
    WorkerLeaf::of(chain_pem).serial_hex()
}

/// A certificate for the worker of `of` that the cluster never issued, signed with the worker
/// CA key (what a thief of that key, or of a registrar's files, could make).
fn minted(tier: &Tier, of: &SimIdentity) -> SimIdentity {
    let pki = tier.cluster.pki().expect("pki").dir().to_path_buf();
    let worker_ca = CertificateAuthority::load(&pki.join("worker-ca.pem"), &pki.join("worker-ca-key.pem")).unwrap();
    let (key, csr_pem) = key_and_csr();
    let uri = WorkerLeaf::of(&of.chain_pem).uri;
    let name = format!("worker-{}", of.worker_id);
    let signed = worker_ca.sign_csr(&csr_pem, &name, &uri, Duration::from_secs(3600)).unwrap();
    SimIdentity {
        chain_pem: format!("{}{}", signed.cert_pem, worker_ca.cert_pem()),
        key_pem: key.serialize_pem(),
        ..of.clone()
    }
}

/// One `ReportStatus` stream as one certificate.
struct Beating {
    stream: BidiStream<v1::StatusReport, v1::StatusAck>,
    sequence: u64,
}

impl Beating {
    async fn open(gateway: &Gateway, identity: &SimIdentity, ca_pem: &str) -> Self {
        let tls = gateway_tls(identity, ca_pem).expect("worker TLS");
        let stream = BidiStream::open(&gateway.addr, tls, REPORT_STATUS, Duration::from_secs(10))
            .await
            .expect("opening a ReportStatus stream");
        Self { stream, sequence: 0 }
    }

    /// Sends the next report and waits for its answer: the ack, or the status the stream ends
    /// with.
    async fn beat(&mut self) -> Result<v1::StatusAck, tonic::Status> {
        self.sequence += 1;
        let report = v1::StatusReport {
            sequence: self.sequence,
            state: v1::WorkerState::Ready as i32,
            full: self.sequence == 1,
            profile: (self.sequence == 1)
                .then(|| v1::WorkerProfile { hostname: "serial-test".into(), ..Default::default() }),
            ..Default::default()
        };
        // A stream the gateway already ended refuses the send; its status is the next message.
        let _ = self.stream.send(&report);
        match tokio::time::timeout(Duration::from_secs(10), self.stream.message()).await {
            Ok(Ok(Some(ack))) => Ok(ack),
            Ok(Ok(None)) => Err(tonic::Status::unknown("the stream ended without a status")),
            Ok(Err(status)) => Err(status),
            Err(_) => Err(tonic::Status::deadline_exceeded("no answer within 10 s")),
        }
    }
}

fn assert_refused(answer: Result<v1::StatusAck, tonic::Status>, code: Code, what: &str) {
    let status = answer.expect_err(what);
    assert_eq!(status.code(), code, "{what}: {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replaced_or_minted_certificate_gets_no_ack_and_renew_cannot_launder_it() {
    let tier = tier("").await;
    let [gw1, gw2] = &tier.gateways;
    let original = tier.register(1).await.remove(0);
    let id = original.worker_id;
    let mut old_stream = Beating::open(gw1, &original, &tier.ca_pem).await;
    old_stream.beat().await.expect("the registered certificate is acked");

    // The worker renews; until it uses the new certificate, the old one still works.
    let renewed = tier.renew(&original).await.expect("Renew");
    let record = tier.record(id).await;
    assert_eq!(
        (record.cert_serial.as_str(), record.previous_cert_serial.as_str()),
        (serial_of(&renewed.chain_pem).as_str(), serial_of(&original.chain_pem).as_str())
    );
    old_stream.beat().await.expect("the previous certificate works until the renewed one is used");

    // The worker beats with the renewed certificate through the other gateway: the old one is
    // retired, and the gateway holding its stream hears so before that stream's next report.
    let mut new_stream = Beating::open(gw2, &renewed, &tier.ca_pem).await;
    new_stream.beat().await.expect("the renewed certificate is acked");
    eventually_msg("gw-1 applies the retirement", WAIT, || async {
        let refused = gw1.metric("muster_gateway_refused_total").await?;
        ensure!(refused >= 1.0, "gw-1 has refused {refused}");
        Ok(())
    })
    .await;
    assert_refused(old_stream.beat().await, Code::Unauthenticated, "the replaced certificate's next report");
    eventually_msg("the FSM forgets the replaced serial", WAIT, || async {
        let record = tier.record(id).await;
        ensure!(record.previous_cert_serial.is_empty(), "previous is {}", record.previous_cert_serial);
        Ok(())
    })
    .await;
    for gateway in [gw1, gw2] {
        let mut again = Beating::open(gateway, &original, &tier.ca_pem).await;
        assert_refused(again.beat().await, Code::Unauthenticated, "a new stream with the replaced certificate");
    }
    let Err(status) = tier.renew(&original).await else { panic!("Renew with the replaced certificate worked") };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("not its current certificate"), "{status:?}");

    // A certificate minted with the worker CA key for the same worker id never gets an ack,
    // and cannot be renewed into a recorded one.
    let forged = minted(&tier, &original);
    let mut forged_stream = Beating::open(gw2, &forged, &tier.ca_pem).await;
    let status = forged_stream.beat().await.expect_err("a minted certificate was acked");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains(&serial_of(&forged.chain_pem)), "the refusal names the serial: {status:?}");
    let Err(status) = tier.renew(&forged).await else { panic!("Renew with a minted certificate worked") };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(tier.record(id).await.cert_serial, serial_of(&renewed.chain_pem), "nothing was recorded");

    // The worker itself is untouched: its current certificate keeps beating, and it is Ready.
    let mut current = Beating::open(gw1, &renewed, &tier.ca_pem).await;
    current.beat().await.expect("the current certificate beats on either gateway");
    current.beat().await.expect("and keeps beating");
    assert_eq!(tier.record(id).await.state, v1::WorkerState::Ready as i32);
}

#[tokio::test(flavor = "multi_thread")]
async fn after_revoke_answers_a_revoked_worker_gets_no_further_ack() {
    let tier = tier("").await;
    let [gw1, gw2] = &tier.gateways;
    let mut workers = tier.register(2).await;
    let (victim, bystander) = (workers.remove(0), workers.remove(0));
    // The victim's certificate is in use on both gateways (a worker and a thief of its files).
    let mut streams =
        [Beating::open(gw1, &victim, &tier.ca_pem).await, Beating::open(gw2, &victim, &tier.ca_pem).await];
    for stream in &mut streams {
        stream.beat().await.expect("acked before the revocation");
    }
    let mut other = Beating::open(gw1, &bystander, &tier.ca_pem).await;
    other.beat().await.expect("the bystander is acked");

    tier.cluster.client().worker_action(WorkerAction::Revoke, victim.worker_id).await.expect("revoke");
    // No waiting: RevokeWorker answered once every live gateway had applied the revocation.
    for stream in &mut streams {
        assert_refused(stream.beat().await, Code::PermissionDenied, "the revoked worker's next report");
    }
    for gateway in [gw1, gw2] {
        let mut again = Beating::open(gateway, &victim, &tier.ca_pem).await;
        assert_refused(again.beat().await, Code::PermissionDenied, "a new stream of the revoked worker");
    }
    other.beat().await.expect("the bystander keeps its stream");
    let Err(status) = tier.renew(&victim).await else { panic!("a revoked worker renewed") };
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_switches_to_its_renewed_certificate_and_the_old_one_is_retired() {
    // Ten-second certificates are renewed 5–8 s after they are issued.
    let tier = tier("worker_cert_validity = \"10s\"\n").await;
    let token = {
        let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
        tier.cluster.client().create_token(request).await.expect("token").token
    };
    let mut agent = Agent::new(std::slice::from_ref(&tier.registrar.addr), &token);
    agent.start();
    let id = agent.wait_beating(WAIT).await;
    let first = &tier.record(id).await.cert_serial;
    let watched = &agent;
    let tier_ref = &tier;
    eventually_msg("the agent beats with its renewed certificate and the old one is retired", WAIT, || async move {
        let chain = std::fs::read_to_string(watched.identity_dir().join("cert.pem"))?;
        let on_disk = serial_of(&chain);
        let record = tier_ref.record(id).await;
        ensure!(on_disk != *first, "not renewed yet");
        ensure!(record.cert_serial == on_disk, "the record has {}, the agent {on_disk}", record.cert_serial);
        ensure!(record.previous_cert_serial.is_empty(), "{} not retired yet", record.previous_cert_serial);
        ensure!(record.state == v1::WorkerState::Ready as i32, "worker is {}", record.state);
        Ok(())
    })
    .await;
    assert!(agent.is_running(), "the agent stopped:\n{}", agent.log());
}
