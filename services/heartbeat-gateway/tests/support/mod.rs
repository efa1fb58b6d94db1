//! A gateway running in-process against a fake control plane (the LivenessService only), all
//! over real mTLS on loopback: a cluster CA with control-plane and gateway certificates, a
//! worker CA, and worker certificates as the registrar would issue them.

#![allow(dead_code)]

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_heartbeat_gateway::GatewayConfig;
use muster_proto::v1;
use muster_proto::v1::heartbeat_service_client::HeartbeatServiceClient;
use muster_proto::v1::liveness_service_server::{LivenessService, LivenessServiceServer};
use muster_tls::{CertSpec, CertificateAuthority, PkiInit, Role, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
use tonic::{Request, Response, Status, Streaming};

pub const CLUSTER: &str = "0123456789abcdef0123456789abcdef";
const VALIDITY: Duration = Duration::from_secs(3600);

/// Polls `check` every 20ms until it returns `Some`, failing after 10s with `what`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The fake leader: records batches, refuses revoked ids and ids ≥ 1000 (unknown).
#[derive(Default)]
pub struct Fake {
    pub worker_ca_pem: Mutex<String>,
    pub revoked: Mutex<HashSet<u64>>,
    pub batches: Mutex<Vec<v1::ReportLivenessRequest>>,
    /// Workers draining, listed in the answer to every batch that holds their beat.
    pub draining: Mutex<std::collections::HashMap<u64, v1::WorkerDrain>>,
}

impl Fake {
    /// Every beat of `worker` received so far.
    pub fn beats_of(&self, worker: u64) -> Vec<v1::WorkerBeat> {
        let batches = self.batches.lock().unwrap();
        batches.iter().flat_map(|batch| batch.beats.iter()).filter(|beat| beat.worker_id == worker).cloned().collect()
    }
}

struct FakeService(Arc<Fake>);

#[tonic::async_trait]
impl LivenessService for FakeService {
    async fn report_liveness(
        &self,
        request: Request<v1::ReportLivenessRequest>,
    ) -> Result<Response<v1::ReportLivenessResponse>, Status> {
        let request = request.into_inner();
        let revoked = self.0.revoked.lock().unwrap().clone();
        let refused = request
            .beats
            .iter()
            .filter_map(|beat| {
                let id = beat.worker_id;
                if revoked.contains(&id) {
                    Some(v1::WorkerRefusal {
                        worker_id: id,
                        state: v1::WorkerState::Revoked as i32,
                        ..Default::default()
                    })
                } else if id >= 1000 {
                    Some(v1::WorkerRefusal { worker_id: id, reason: format!("no worker {id}"), ..Default::default() })
                } else {
                    None
                }
            })
            .collect();
        let gateways =
            vec![v1::GatewayEndpoint { gateway_id: request.gateway_id.clone(), addr: request.gateway_addr.clone() }];
        let scheduling = {
            let drains = self.0.draining.lock().unwrap();
            let notice = |beat: &v1::WorkerBeat| {
                let drain = *drains.get(&beat.worker_id)?;
                Some(v1::SchedulingNotice { worker_id: beat.worker_id, drain: Some(drain), ineligible: true })
            };
            request.beats.iter().filter_map(notice).collect()
        };
        self.0.batches.lock().unwrap().push(request);
        Ok(Response::new(v1::ReportLivenessResponse {
            policy: Some(v1::TtlPolicy {
                min_ttl_ms: 1_000,
                max_ttl_ms: 60_000,
                grace_ms: 2_000,
                max_heartbeats_per_second: 100,
                failover_ttl_ms: 60_000,
            }),
            worker_count: 10,
            gateways,
            gateways_epoch: 7,
            refused,
            leader_term: 1,
            notices_through: 0,
            scheduling,
        }))
    }

    async fn list_gateways(
        &self,
        _request: Request<v1::ListGatewaysRequest>,
    ) -> Result<Response<v1::ListGatewaysResponse>, Status> {
        Err(Status::unimplemented("not used by gateways"))
    }

    async fn get_worker_ca_cert(
        &self,
        _request: Request<v1::GetWorkerCaCertRequest>,
    ) -> Result<Response<v1::GetWorkerCaCertResponse>, Status> {
        let cert_pem = self.0.worker_ca_pem.lock().unwrap().clone();
        Ok(Response::new(v1::GetWorkerCaCertResponse { cert_pem, cluster_id: CLUSTER.into() }))
    }
}

pub struct Harness {
    pub pki: tempfile::TempDir,
    pub fake: Arc<Fake>,
    pub worker_ca: CertificateAuthority,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    pub gateway: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Harness {
    /// A fake control plane and a gateway in front of it. The worker CA is published only
    /// when `publish_ca` (else call [`Harness::publish_worker_ca`]).
    pub async fn start(publish_ca: bool) -> Self {
        let pki = tempfile::tempdir().unwrap();
        muster_tls::init_pki(&PkiInit {
            dir: pki.path().to_path_buf(),
            cluster_name: "gateway-test".into(),
            nodes: vec![
                CertSpec::node("cp-1", Role::ControlPlane, VALIDITY),
                CertSpec::node("gw-1", Role::Gateway, VALIDITY),
            ],
            operator: false,
            force: false,
            validity: VALIDITY,
            ca_validity: VALIDITY,
        })
        .unwrap();
        let worker_ca = CertificateAuthority::generate("test worker CA", VALIDITY).unwrap();
        let fake = Arc::new(Fake::default());
        if publish_ca {
            *fake.worker_ca_pem.lock().unwrap() = worker_ca.cert_pem().to_string();
        }

        let cp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cp_addr = cp_listener.local_addr().unwrap();
        let cp_tls = TlsFiles::in_dir(pki.path(), "cp-1").server_tls().unwrap();
        let service = LivenessServiceServer::new(FakeService(fake.clone()));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .tls_config(cp_tls)
                .unwrap()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(cp_listener))
                .await
                .unwrap();
        });

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (addr, admin) = (listener.local_addr().unwrap(), admin_listener.local_addr().unwrap());
        let files = TlsFiles::in_dir(pki.path(), "gw-1");
        let config = GatewayConfig {
            listen_addr: addr,
            admin_addr: admin,
            control_plane: vec![cp_addr.to_string()],
            tls: muster_config::TlsConfig {
                insecure: false,
                ca_file: Some(files.ca),
                cert_file: Some(files.cert),
                key_file: Some(files.key),
                ..muster_config::TlsConfig::default()
            },
            batch_interval: Duration::from_millis(50),
            // Every report after the first on a stream is "too early": throttled, deterministically.
            min_report_interval: Duration::from_secs(3600),
            ..GatewayConfig::default()
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let gateway = tokio::spawn(muster_heartbeat_gateway::run(config, listener, admin_listener, async move {
            let _ = stopped.await;
        }));
        Self { pki, fake, worker_ca, addr, admin, stop: Some(stop), gateway: Some(gateway) }
    }

    pub fn publish_worker_ca(&self) {
        *self.fake.worker_ca_pem.lock().unwrap() = self.worker_ca.cert_pem().to_string();
    }

    /// `GET path` on the admin listener: (status line, body).
    pub async fn admin_get(&self, path: &str) -> (String, String) {
        let mut stream = tokio::net::TcpStream::connect(self.admin).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        (head.lines().next().unwrap_or_default().to_string(), body.to_string())
    }

    pub async fn wait_ready(&self) {
        eventually("the gateway to be ready", || async {
            let (status, _) = self.admin_get("/readyz").await;
            status.contains("200").then_some(())
        })
        .await;
    }

    fn cluster_ca(&self) -> Certificate {
        Certificate::from_pem(std::fs::read(self.pki.path().join("ca.pem")).unwrap())
    }

    /// A worker certificate for `id` of `cluster`, signed by the worker CA.
    pub fn worker_identity(&self, cluster: &str, id: u64) -> Identity {
        issue(&self.worker_ca, cluster, id)
    }

    /// The identity of a component certificate (`name`) signed by the cluster CA.
    pub fn component_identity(&self, name: &str) -> Identity {
        let files = TlsFiles::in_dir(self.pki.path(), name);
        Identity::from_pem(std::fs::read(files.cert).unwrap(), std::fs::read(files.key).unwrap())
    }

    /// A channel to the gateway presenting `identity` (or nothing).
    pub async fn channel(&self, identity: Option<Identity>) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new().ca_certificate(self.cluster_ca()).domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        Channel::from_shared(format!("https://{}", self.addr)).unwrap().tls_config(tls)?.connect().await
    }

    pub async fn worker(&self, id: u64) -> Channel {
        self.channel(Some(self.worker_identity(CLUSTER, id))).await.expect("connecting a worker")
    }

    /// Stops the gateway and waits for `run` to return.
    pub async fn shutdown(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.gateway.take() {
            Some(task) => tokio::time::timeout(Duration::from_secs(10), task).await.expect("run returns").unwrap(),
            None => Ok(()),
        }
    }
}

pub fn issue(ca: &CertificateAuthority, cluster: &str, id: u64) -> Identity {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap().serialize_request(&key).unwrap();
    let uri = format!("spiffe://{cluster}/worker/{id}");
    let signed = ca.sign_csr(&csr.pem().unwrap(), &format!("worker-{id}"), &uri, VALIDITY).unwrap();
    Identity::from_pem(format!("{}{}", signed.cert_pem, ca.cert_pem()), key.serialize_pem())
}

/// One worker's open stream.
pub struct WorkerStream {
    pub reports: mpsc::Sender<v1::StatusReport>,
    pub acks: Streaming<v1::StatusAck>,
}

impl WorkerStream {
    pub async fn open(channel: Channel) -> Result<Self, Status> {
        let (reports, rx) = mpsc::channel(8);
        let acks = HeartbeatServiceClient::new(channel).report_status(ReceiverStream::new(rx)).await?.into_inner();
        Ok(Self { reports, acks })
    }

    /// Sends a report and waits (10s at most) for what comes back.
    pub async fn report(&mut self, report: v1::StatusReport) -> Result<v1::StatusAck, Status> {
        self.reports.send(report).await.map_err(|_| Status::internal("request stream closed"))?;
        self.next().await
    }

    pub async fn next(&mut self) -> Result<v1::StatusAck, Status> {
        match tokio::time::timeout(Duration::from_secs(10), self.acks.message()).await {
            Ok(Ok(Some(ack))) => Ok(ack),
            Ok(Ok(None)) => Err(Status::cancelled("the stream ended without a status")),
            Ok(Err(status)) => Err(status),
            Err(_) => panic!("no answer within 10s"),
        }
    }
}

pub fn full(sequence: u64) -> v1::StatusReport {
    v1::StatusReport {
        sequence,
        state: v1::WorkerState::Ready as i32,
        full: true,
        profile: Some(v1::WorkerProfile { hostname: "worker-host".into(), ..Default::default() }),
        ..Default::default()
    }
}

pub fn beat(sequence: u64, state: v1::WorkerState) -> v1::StatusReport {
    v1::StatusReport { sequence, state: state as i32, full: false, profile: None, gateways_epoch: 7, drained: false }
}
