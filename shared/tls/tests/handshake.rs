//! Real mTLS handshakes against a tonic server configured by `TlsFiles::server_tls`, and
//! against one whose TLS `muster-listener` does with `LiveTls::server_config`: same-CA
//! clients get through and are identified, foreign-CA clients are rejected, certificate-less
//! clients still reach the (open) health service.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_tls::{CertSpec, PeerIdentity, PkiInit, Role, TlsFiles, init_pki, peer_identity};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

const DAY: Duration = Duration::from_secs(24 * 3600);
type Seen = Arc<Mutex<Vec<Option<PeerIdentity>>>>;

fn pki(dir: &Path, cluster: &str) {
    init_pki(&PkiInit {
        dir: dir.to_owned(),
        cluster_name: cluster.to_owned(),
        nodes: vec![CertSpec::node("cp-1", Role::ControlPlane, DAY), CertSpec::node("w-1", Role::Worker, DAY)],
        operator: false,
        force: false,
        validity: DAY,
        ca_validity: DAY,
    })
    .unwrap();
}

struct Running {
    addr: SocketAddr,
    seen: Seen,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[derive(Clone, Copy)]
enum Tls {
    /// tonic's own TLS (`ServerTlsConfig`).
    Tonic,
    /// `muster-listener`'s, with a rustls `ServerConfig`.
    Listener,
}

/// Health service behind `server_tls`, recording the peer identity of every call.
async fn serve(files: &TlsFiles, tls: Tls) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let seen = Seen::default();
    let record = seen.clone();
    let health = InterceptedService::new(health, move |req: tonic::Request<()>| {
        let id = req.peer_certs().and_then(|certs| certs.first().and_then(|c| peer_identity(c)));
        record.lock().unwrap().push(id);
        Ok(req)
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let stopped = async move {
        let _ = stopped.await;
    };
    let task = match tls {
        Tls::Tonic => {
            let router = Server::builder().tls_config(files.server_tls().unwrap()).unwrap().add_service(health);
            tokio::spawn(router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), stopped))
        }
        Tls::Listener => {
            let limits = muster_listener::ListenerLimits::default();
            let config = muster_tls::LiveTls::load(files.clone())
                .unwrap()
                .server_config(muster_tls::ClientAuth::Optional)
                .unwrap();
            let incoming = muster_listener::tls(listener, config, &limits, "test");
            tokio::spawn(Server::builder().add_service(health).serve_with_incoming_shutdown(incoming, stopped))
        }
    };
    Running { addr, seen, stop: Some(stop), task }
}

async fn check(addr: SocketAddr, tls: ClientTlsConfig) -> Result<(), String> {
    health_check(async {
        Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| format!("{e:?}"))?
            .tls_config(tls)
            .map_err(|e| format!("{e:?}"))?
            .connect()
            .await
            .map_err(|e| format!("connect: {e:?}"))
    })
    .await
}

/// Connects with `connect`, then one health check; every failure as text, within 10 s.
async fn health_check(connect: impl std::future::Future<Output = Result<Channel, String>>) -> Result<(), String> {
    let call = async {
        HealthClient::new(connect.await?)
            .check(HealthCheckRequest { service: String::new() })
            .await
            .map(drop)
            .map_err(|e| format!("check: {e:?}"))
    };
    tokio::time::timeout(Duration::from_secs(10), call).await.map_err(|_| "timed out".to_owned())?
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test]
async fn mtls_handshakes() {
    mtls_handshakes_with(Tls::Tonic).await;
}

#[tokio::test]
async fn mtls_handshakes_through_the_hardened_listener() {
    mtls_handshakes_with(Tls::Listener).await;
}

async fn mtls_handshakes_with(tls: Tls) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir, "hs");
    let server = serve(&TlsFiles::in_dir(dir, "cp-1"), tls).await;
    let worker = TlsFiles::in_dir(dir, "w-1");

    // (a) same CA: accepted, and the server sees who we are.
    check(server.addr, worker.client_tls().unwrap()).await.unwrap();
    check(server.addr, worker.client_tls_for("cp-1").unwrap()).await.unwrap();
    let worker_id = PeerIdentity { role: Role::Worker, name: "w-1".to_owned() };
    assert_eq!(*server.seen.lock().unwrap(), [Some(worker_id.clone()), Some(worker_id)]);

    // The server certificate is checked too: a name it does not carry fails.
    let err = check(server.addr, worker.client_tls_for("cp-2").unwrap()).await.unwrap_err();
    assert!(err.contains("NotValidForName"), "{err}");

    // (b) a client certificate from another CA fails the handshake, whether that CA has a
    // different name (unknown issuer) or the very same name (signature does not verify).
    for (cluster, alert) in [("elsewhere", "UnknownCA"), ("hs", "DecryptError")] {
        let other = tempfile::tempdir().unwrap();
        pki(other.path(), cluster);
        let rogue = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&dir.join("ca.pem"))))
            .identity(Identity::from_pem(read(&other.path().join("w-1.pem")), read(&other.path().join("w-1-key.pem"))));
        let err = check(server.addr, rogue).await.unwrap_err();
        assert!(err.contains(&format!("fatal alert: {alert}")), "{err}");
    }
    assert_eq!(server.seen.lock().unwrap().len(), 2, "a rogue call reached the service");

    // (c) no client certificate: the connection is allowed (auth is optional), anonymous.
    let anonymous = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&dir.join("ca.pem"))));
    check(server.addr, anonymous).await.unwrap();
    assert_eq!(server.seen.lock().unwrap().last(), Some(&None));

    server.shutdown().await;
}

/// A health check over Muster's own client TLS, which checks the server's role.
async fn check_with(addr: SocketAddr, tls: &muster_tls::ClientTls) -> Result<(), String> {
    health_check(async {
        let endpoint = Endpoint::from_shared(format!("http://{addr}")).map_err(|e| format!("{e:?}"))?;
        tls.connect(endpoint).await.map_err(|e| format!("connect: {e:?}"))
    })
    .await
}

#[tokio::test]
async fn clients_talk_only_to_the_role_they_expect() {
    use muster_tls::ServerCheck;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    pki(dir, "roles");
    let node = serve(&TlsFiles::in_dir(dir, "cp-1"), Tls::Listener).await;
    // A certificate of another role, signed by the same cluster CA, serving on its own port:
    // what a stolen component certificate answering a node's or an agent's dial looks like.
    let impostor = serve(&TlsFiles::in_dir(dir, "w-1"), Tls::Listener).await;
    let client = TlsFiles::in_dir(dir, "cp-1");

    let to_node = client.client_for(ServerCheck::RoleAndHost(Role::ControlPlane)).unwrap();
    check_with(node.addr, &to_node).await.unwrap();
    let err = check_with(impostor.addr, &to_node).await.unwrap_err();
    assert!(err.contains("names spiffe://muster/worker/w-1, not a control-plane node"), "{err}");

    // The same server, expected as another component: refused before any request is sent.
    let to_registrar = client.client_for(ServerCheck::RoleAndHost(Role::Registrar)).unwrap();
    let err = check_with(node.addr, &to_registrar).await.unwrap_err();
    assert!(err.contains("not a registrar"), "{err}");

    // The host is checked too, unless the check is by role only (gateways scale out).
    let wrong_name = to_node.clone().domain_name("cp-2");
    assert!(check_with(node.addr, &wrong_name).await.unwrap_err().contains("NotValidForName"));
    let any_host = client.client_for(ServerCheck::Role(Role::ControlPlane)).unwrap().domain_name("cp-2");
    check_with(node.addr, &any_host).await.unwrap();

    // No client certificate at all still gets a role-checked connection (Register's case).
    let anonymous = muster_tls::ClientTls::new(
        read(&dir.join("ca.pem")).as_bytes(),
        None,
        ServerCheck::RoleAndHost(Role::ControlPlane),
    )
    .unwrap();
    check_with(node.addr, &anonymous).await.unwrap();

    node.shutdown().await;
    impostor.shutdown().await;
}
