//! The whole server stack over real mTLS: proves the layers compose on a tonic server and
//! client, and that the client certificate really is found where `auth` looks for it.

use std::net::SocketAddr;

use muster_middleware::authz::{Access, Port, Rule};
use muster_middleware::{
    AuthorizeLayer, GrpcClientTraceLayer, GrpcTraceLayer, ServerLimits, overload_layer, server_builder,
};
use muster_tls::{PeerIdentity, Role};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tower::Layer as _;

/// The health check, protected: only operators may call it on the test server.
const OPERATOR_ONLY_HEALTH: &[Rule] =
    &[Rule { path: "/grpc.health.v1.Health/Check", port: Port::Every, access: Access::Roles(&[Role::Operator]) }];

/// A throwaway CA with a server certificate and one client certificate per role.
struct Pki {
    ca_pem: String,
    server: Identity,
}

impl Pki {
    fn new() -> (Self, CertifiedIssuer<'static, KeyPair>) {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let mut server = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = server.signed_by(&key, &ca).unwrap();
        let pki = Self { ca_pem: ca.pem(), server: Identity::from_pem(cert.pem(), key.serialize_pem()) };
        (pki, ca)
    }
}

fn client_identity(ca: &CertifiedIssuer<'static, KeyPair>, role: &str) -> Identity {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    let uri = format!("spiffe://muster/{role}/test-client");
    params.subject_alt_names = vec![SanType::URI(uri.try_into().unwrap())];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    Identity::from_pem(cert.pem(), key.serialize_pem())
}

/// The servers' own identity function: the `spiffe://muster/<role>/<name>` URI SAN.
fn identity_of(der: &[u8]) -> Result<PeerIdentity, String> {
    muster_tls::peer_identity(der).ok_or_else(|| "no spiffe://muster identity".into())
}

async fn serve(pki: &Pki, auth: AuthorizeLayer) -> (SocketAddr, oneshot::Sender<()>) {
    let limits = ServerLimits::default();
    let tls = ServerTlsConfig::new()
        .identity(pki.server.clone())
        .client_ca_root(Certificate::from_pem(&pki.ca_pem))
        .client_auth_optional(true);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = server_builder(&limits)
        .tls_config(tls)
        .unwrap()
        .layer(GrpcTraceLayer::new())
        .layer(overload_layer(&limits))
        .layer(auth)
        .add_service(health.max_decoding_message_size(limits.max_message_bytes));
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        router.serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown).await.unwrap();
    });
    (addr, stop)
}

async fn check(pki: &Pki, addr: SocketAddr, identity: Option<Identity>) -> Result<(), tonic::Status> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    if let Some(identity) = identity {
        tls = tls.identity(identity);
    }
    let channel =
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(GrpcClientTraceLayer::new().layer(channel));
    client.check(HealthCheckRequest::default()).await.map(drop)
}

#[tokio::test]
async fn health_stays_open_without_a_client_certificate() {
    let (pki, _ca) = Pki::new();
    let (addr, _stop) = serve(&pki, AuthorizeLayer::new(identity_of)).await;
    check(&pki, addr, None).await.unwrap();
}

#[tokio::test]
async fn protected_methods_need_a_certificate_with_an_allowed_role() {
    let (pki, ca) = Pki::new();
    let auth = AuthorizeLayer::new(identity_of).with_rules(OPERATOR_ONLY_HEALTH);
    let (addr, _stop) = serve(&pki, auth).await;

    let err = check(&pki, addr, None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().starts_with("a client certificate is required to call"), "{}", err.message());

    let err = check(&pki, addr, Some(client_identity(&ca, "worker"))).await.unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(err.message().contains("\"worker\""), "{}", err.message());

    check(&pki, addr, Some(client_identity(&ca, "operator"))).await.unwrap();
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_callers_id_is_kept() {
    let (pki, _ca) = Pki::new();
    let (addr, _stop) = serve(&pki, AuthorizeLayer::new(identity_of)).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    let channel =
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(GrpcClientTraceLayer::new().layer(channel));

    let answer = client.check(HealthCheckRequest::default()).await.unwrap();
    let id = answer.metadata().get(muster_middleware::REQUEST_ID_HEADER).expect("a request id").to_str().unwrap();
    assert_eq!((id.len(), id.matches('-').count()), (36, 4), "a UUID: {id}");
    let again = client.check(HealthCheckRequest::default()).await.unwrap();
    assert_ne!(
        again.metadata().get(muster_middleware::REQUEST_ID_HEADER).unwrap().to_str().unwrap(),
        id,
        "one per call"
    );

    let mut request = tonic::Request::new(HealthCheckRequest::default());
    request.metadata_mut().insert(muster_middleware::REQUEST_ID_HEADER, "ticket-4711".parse().unwrap());
    let answer = client.check(request).await.unwrap();
    assert_eq!(answer.metadata().get(muster_middleware::REQUEST_ID_HEADER).unwrap(), "ticket-4711");

    // A refused call carries one too, so the refusal can be found in the server's log.
    let auth = AuthorizeLayer::new(identity_of).with_rules(OPERATOR_ONLY_HEALTH);
    let (addr, _stop) = serve(&pki, auth).await;
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pki.ca_pem)).domain_name("localhost");
    let channel =
        Channel::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap().connect().await.unwrap();
    let refused = HealthClient::new(channel).check(HealthCheckRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.metadata().get(muster_middleware::REQUEST_ID_HEADER).is_some(), "{refused:?}");
}
