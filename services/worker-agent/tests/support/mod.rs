//! A fake heartbeat gateway over real mTLS, and the PKI around it: a cluster CA with gateway
//! (and other role) certificates, a worker CA and a worker identity it signed. The fake acks
//! every report at once and tells the test what it received.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use muster_proto::v1;
use muster_proto::v1::heartbeat_service_server::{HeartbeatService, HeartbeatServiceServer};
use muster_tls::{CertSpec, CertificateAuthority, Role};
use muster_worker_agent::identity::{Identity, IdentityMeta};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::transport::{Certificate, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

pub const WORKER_ID: u64 = 7;
const VALIDITY: Duration = Duration::from_secs(3600);

pub struct Pki {
    pub cluster_ca: CertificateAuthority,
    pub worker_ca: CertificateAuthority,
}

impl Pki {
    pub fn new() -> Self {
        Self {
            cluster_ca: CertificateAuthority::generate("test cluster CA", VALIDITY).unwrap(),
            worker_ca: CertificateAuthority::generate("test worker CA", VALIDITY).unwrap(),
        }
    }

    /// Worker 7's identity, as Register would have handed it out.
    pub fn worker_identity(&self) -> Identity {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = muster_worker_agent::register::csr_pem(&key).unwrap();
        let uri = format!("spiffe://test-cluster/worker/{WORKER_ID}");
        let signed = self.worker_ca.sign_csr(&csr, "worker-7", &uri, VALIDITY).unwrap();
        Identity {
            meta: IdentityMeta {
                worker_id: WORKER_ID,
                cluster_id: "test-cluster".into(),
                cert_expires_at_unix: signed.not_after_unix,
                cert_issued_at_unix: signed.not_after_unix - VALIDITY.as_secs() as i64,
            },
            cert_chain_pem: format!("{}{}", signed.cert_pem, self.worker_ca.cert_pem()),
            key_pem: key.serialize_pem(),
            ca_bundle_pem: self.cluster_ca.cert_pem().to_string(),
        }
    }
}

/// What the fake does with a stream.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Refuse every stream with this code.
    pub refuse: Option<tonic::Code>,
    /// Hand this list (with epoch 1) to workers holding another epoch.
    pub gateways: Vec<v1::GatewayEndpoint>,
    pub ttl_ms: u32,
    /// How long each ack is held back.
    pub ack_delay: Duration,
}

/// One report as a gateway saw it.
#[derive(Debug)]
pub struct Received {
    pub gateway_id: String,
    pub report: v1::StatusReport,
    /// When the gateway read it.
    pub at: tokio::time::Instant,
}

struct Fake {
    id: String,
    behaviour: Behaviour,
    received: mpsc::UnboundedSender<Received>,
}

type AckStream = Pin<Box<dyn Stream<Item = Result<v1::StatusAck, Status>> + Send>>;

#[tonic::async_trait]
impl HeartbeatService for Fake {
    type ReportStatusStream = AckStream;

    async fn report_status(
        &self,
        request: Request<Streaming<v1::StatusReport>>,
    ) -> Result<Response<AckStream>, Status> {
        assert!(request.peer_certs().is_some_and(|certs| !certs.is_empty()), "the worker presented no certificate");
        if let Some(code) = self.behaviour.refuse {
            return Err(Status::new(code, format!("worker {WORKER_ID} is revoked")));
        }
        let mut reports = request.into_inner();
        let (acks, out) = mpsc::channel(8);
        let (id, behaviour, received) = (self.id.clone(), self.behaviour.clone(), self.received.clone());
        tokio::spawn(async move {
            while let Ok(Some(report)) = reports.message().await {
                let stale = !behaviour.gateways.is_empty() && report.gateways_epoch != 1;
                let ack = v1::StatusAck {
                    sequence: report.sequence,
                    ttl_ms: behaviour.ttl_ms,
                    grace_ms: 2_000,
                    gateways_epoch: 1,
                    gateways: if stale { behaviour.gateways.clone() } else { Vec::new() },
                    gateway_id: id.clone(),
                    ..Default::default()
                };
                let _ = received.send(Received { gateway_id: id.clone(), report, at: tokio::time::Instant::now() });
                tokio::time::sleep(behaviour.ack_delay).await;
                if acks.send(Ok(ack)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }
}

/// Serves a fake gateway named `name` with a certificate of `role` on a free loopback port;
/// returns its address. It runs until the test's runtime ends.
pub async fn start_gateway(
    pki: &Pki,
    name: &str,
    role: Role,
    behaviour: Behaviour,
    received: mpsc::UnboundedSender<Received>,
) -> String {
    let pem = pki.cluster_ca.issue(&CertSpec::node(name, role, VALIDITY)).unwrap();
    muster_tls::install_crypto_provider();
    let tls = ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(pem.cert_pem, pem.key_pem))
        .client_ca_root(Certificate::from_pem(pki.worker_ca.cert_pem()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = Fake { id: name.to_string(), behaviour, received };
    let server = Server::builder().tls_config(tls).unwrap().add_service(HeartbeatServiceServer::new(fake));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

/// An address where nothing listens.
pub async fn dead_address() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The next report any gateway received, within 10 s.
pub async fn next(received: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(Duration::from_secs(10), received.recv())
        .await
        .expect("no report reached a gateway within 10s")
        .expect("the gateways are gone")
}

pub fn shared(
    identity: Identity,
) -> (tokio::sync::watch::Sender<Arc<Identity>>, tokio::sync::watch::Receiver<Arc<Identity>>) {
    tokio::sync::watch::channel(Arc::new(identity))
}
