//! The bootstrap token goes to a registrar only: a server whose certificate chains to the
//! cluster CA the token pins, but names another role (a stolen gateway certificate, set up as a
//! fake registrar), never receives it. The same fake with a registrar certificate does, which
//! shows the refusal is the role check and nothing else.

#[allow(dead_code)]
mod support;

use std::time::Duration;

use muster_proto::v1;
use muster_proto::v1::worker_registration_service_server::{
    WorkerRegistrationService, WorkerRegistrationServiceServer,
};
use muster_tls::{CertSpec, Role};
use support::Pki;
use tokio::sync::mpsc;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Server, ServerTlsConfig};
use tonic::{Request, Response, Status};

/// Records every token it is given and registers worker 7.
struct FakeRegistrar {
    tokens: mpsc::UnboundedSender<String>,
}

#[tonic::async_trait]
impl WorkerRegistrationService for FakeRegistrar {
    async fn register(&self, request: Request<v1::RegisterRequest>) -> Result<Response<v1::RegisterResponse>, Status> {
        let _ = self.tokens.send(request.into_inner().token);
        Ok(Response::new(v1::RegisterResponse { worker_id: support::WORKER_ID, ..Default::default() }))
    }

    async fn renew(&self, _request: Request<v1::RenewRequest>) -> Result<Response<v1::RenewResponse>, Status> {
        Err(Status::unimplemented("not used"))
    }
}

/// Serves the fake with a cluster-CA certificate of `role` for 127.0.0.1 (chain: leaf, CA).
async fn start_fake(pki: &Pki, role: Role, tokens: mpsc::UnboundedSender<String>) -> String {
    let spec =
        CertSpec { hosts: vec!["127.0.0.1".into(), "localhost".into()], ..CertSpec::node("fake", role, VALIDITY) };
    let pem = pki.cluster_ca.issue(&spec).unwrap();
    muster_tls::install_crypto_provider();
    let chain = format!("{}{}", pem.cert_pem, pki.cluster_ca.cert_pem());
    let tls = ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(chain, pem.key_pem));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = Server::builder()
        .tls_config(tls)
        .unwrap()
        .add_service(WorkerRegistrationServiceServer::new(FakeRegistrar { tokens }));
    tokio::spawn(server.serve_with_incoming(TcpListenerStream::new(listener)));
    addr
}

const VALIDITY: Duration = Duration::from_secs(3600);

/// A token file pinning the test cluster CA.
fn token_file(pki: &Pki, dir: &tempfile::TempDir) -> std::path::PathBuf {
    let pin = muster_tls::public_key_pin(pki.cluster_ca.cert_pem(), "the test CA").unwrap();
    let issued = muster_token::generate(&muster_token::TokenSpec::default(), "test-cluster", &pin, 1_800_000_000);
    let path = dir.path().join("token");
    std::fs::write(&path, issued.token).unwrap();
    path
}

async fn attempt(addr: &str, token: &std::path::Path) -> Option<anyhow::Result<u64>> {
    let profile = v1::WorkerProfile { hostname: "node".into(), ..Default::default() };
    let servers = [addr.to_string()];
    let registered = muster_worker_agent::register::register(&servers, token, profile, None);
    // A server of the wrong role is retried as unreachable: bound the attempt.
    tokio::time::timeout(Duration::from_secs(3), registered)
        .await
        .ok()
        .map(|result| result.map(|registered| registered.identity.meta.worker_id))
}

#[tokio::test]
async fn the_token_goes_only_to_a_registrar_certificate() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(&pki, &dir);

    let (tx, mut stolen) = mpsc::unbounded_channel();
    let impostor = start_fake(&pki, Role::Gateway, tx).await;
    assert!(attempt(&impostor, &token).await.is_none(), "the agent registered with a gateway certificate");
    assert!(stolen.try_recv().is_err(), "a server with a gateway certificate received the token");

    let (tx, mut received) = mpsc::unbounded_channel();
    let registrar = start_fake(&pki, Role::Registrar, tx).await;
    let registered = attempt(&registrar, &token).await.expect("the registrar answered in time");
    assert_eq!(registered.expect("registered"), support::WORKER_ID);
    let sent = received.try_recv().expect("the registrar received the token");
    assert_eq!(sent.trim(), std::fs::read_to_string(&token).unwrap().trim());
}
