//! The Register and Renew flows against a fake control plane: what is checked before a token
//! is spent, what a refusal becomes, and what a worker is handed.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use muster_tls::CertificateAuthority;
use tonic::Code;

use super::*;

/// Answers like a control plane: registers with ids from 7, or refuses as told.
#[derive(Default)]
struct FakeControlPlane {
    refuse_register: Option<v1::Refusal>,
    refuse_record: Option<v1::Refusal>,
    gateways_down: bool,
    registrations: AtomicU32,
    listings: AtomicU32,
    recorded: Mutex<Vec<v1::RecordWorkerCertRequest>>,
}

impl ControlPlane for FakeControlPlane {
    async fn register_worker(
        &self,
        request: v1::RegisterWorkerRequest,
    ) -> Result<v1::RegisterWorkerResponse, ApiError> {
        if let Some(reason) = self.refuse_register {
            return Err(Refused::new(reason, format!("registration refused ({})", reason.label())).into());
        }
        let id = 7 + u64::from(self.registrations.fetch_add(1, Ordering::Relaxed));
        let name = request.profile.unwrap_or_default().hostname;
        let worker = v1::WorkerRecord { worker_id: id, name, ..Default::default() };
        Ok(v1::RegisterWorkerResponse { cluster_id: "c0ffee".into(), worker: Some(worker) })
    }

    async fn record_worker_cert(&self, request: v1::RecordWorkerCertRequest) -> Result<(), ApiError> {
        if let Some(reason) = self.refuse_record {
            return Err(Refused::new(reason, format!("worker {} is revoked", request.worker_id)).into());
        }
        self.recorded.lock().unwrap().push(request);
        Ok(())
    }

    async fn list_gateways(&self) -> Result<v1::ListGatewaysResponse, ApiError> {
        self.listings.fetch_add(1, Ordering::Relaxed);
        if self.gateways_down {
            return Err(ApiError::Unavailable("control plane unreachable".into()));
        }
        let gateway = v1::GatewayEndpoint { gateway_id: "gw-1".into(), addr: "10.0.0.1:3671".into() };
        let policy = v1::TtlPolicy { min_ttl_ms: 3_000, grace_ms: 4_000, ..Default::default() };
        Ok(v1::ListGatewaysResponse {
            gateways: vec![gateway],
            policy: Some(policy),
            gateways_epoch: 2,
            ..Default::default()
        })
    }
}

fn registrar(control_plane: FakeControlPlane) -> Registrar<FakeControlPlane> {
    let worker_ca = CertificateAuthority::generate("test worker CA", Duration::from_secs(3600)).unwrap();
    let signer = Signer::new(worker_ca, "c0ffee".into(), Duration::from_secs(600));
    Registrar {
        control_plane: Arc::new(control_plane),
        signer,
        ca_bundle: CaBundle::Fixed("cluster CA".into()),
        gateway_list: Default::default(),
    }
}

fn csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::new(vec!["w".to_string()]).unwrap().serialize_request(&key).unwrap().pem().unwrap()
}

fn register_request() -> v1::RegisterRequest {
    let profile = v1::WorkerProfile { hostname: "node-a".into(), ..Default::default() };
    v1::RegisterRequest { token: "t".into(), csr_pem: csr(), profile: Some(profile), ..Default::default() }
}

/// The DER of the first certificate of a chain.
fn first_der(chain_pem: &str) -> Vec<u8> {
    x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes()).next().unwrap().unwrap().contents
}

#[tokio::test]
async fn a_registered_worker_gets_its_certificate_the_gateways_and_the_policy() {
    let registrar = registrar(FakeControlPlane::default());
    let answer = registrar.register(Caller::default(), register_request()).await.unwrap();
    assert_eq!((answer.worker_id, answer.cluster_id.as_str()), (7, "c0ffee"));
    let named = muster_tls::worker_cert(&first_der(&answer.certificate_chain_pem), "c0ffee").unwrap();
    assert_eq!(named.worker_id, 7);
    assert_eq!((answer.initial_ttl_ms, answer.grace_ms, answer.gateways.len()), (3_000, 4_000, 1));
    assert_eq!(answer.ca_bundle_pem, "cluster CA");
    let recorded = registrar.control_plane.recorded.lock().unwrap().clone();
    assert_eq!((recorded.len(), recorded[0].serial.as_str()), (1, named.serial_hex.as_str()));
}

#[tokio::test]
async fn a_registration_storm_asks_for_the_gateway_list_once_a_second() {
    let registrar = Arc::new(registrar(FakeControlPlane::default()));
    let storm = (0..20).map(|_| {
        let registrar = registrar.clone();
        tokio::spawn(async move { registrar.register(Caller::default(), register_request()).await })
    });
    for answer in futures::future::join_all(storm).await {
        assert_eq!(answer.unwrap().unwrap().gateways.len(), 1, "every worker gets the list");
    }
    assert_eq!(registrar.control_plane.registrations.load(Ordering::Relaxed), 20);
    assert_eq!(registrar.control_plane.listings.load(Ordering::Relaxed), 1, "one ListGateways for 20 registrations");
}

#[tokio::test]
async fn a_failed_gateway_list_is_asked_for_again() {
    let registrar = registrar(FakeControlPlane { gateways_down: true, ..Default::default() });
    for _ in 0..2 {
        registrar.register(Caller::default(), register_request()).await.unwrap();
    }
    assert_eq!(registrar.control_plane.listings.load(Ordering::Relaxed), 2, "a failure is not cached");
}

#[tokio::test]
async fn without_the_gateway_list_a_worker_gets_the_seed_defaults() {
    let registrar = registrar(FakeControlPlane { gateways_down: true, ..Default::default() });
    let answer = registrar.register(Caller::default(), register_request()).await.unwrap();
    assert_eq!((answer.initial_ttl_ms, answer.grace_ms), (DEFAULT_TTL_MS, DEFAULT_GRACE_MS));
    assert!(answer.gateways.is_empty());
}

#[tokio::test]
async fn a_bad_csr_or_profile_is_refused_before_the_token_is_spent() {
    let registrar = registrar(FakeControlPlane::default());
    let bad_csr = v1::RegisterRequest { csr_pem: "garbage".into(), ..register_request() };
    let err = registrar.register(Caller::default(), bad_csr).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.to_string().contains("csr_pem"), "{err}");
    let profile = v1::WorkerProfile { hostname: "h".repeat(300), ..Default::default() };
    let oversize = v1::RegisterRequest { profile: Some(profile), ..register_request() };
    assert_eq!(registrar.register(Caller::default(), oversize).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(registrar.control_plane.registrations.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_replacement_without_proof_is_refused_before_the_token_is_spent() {
    let registrar = registrar(FakeControlPlane::default());
    let huge = v1::RegisterRequest { replaces_cert_pem: "x".repeat(20_000), ..register_request() };
    let err = registrar.register(Caller::default(), huge).await.unwrap_err();
    assert!(err.code() == Code::InvalidArgument && err.to_string().contains("replaces_cert_pem"), "{err}");
    // A certificate of this cluster, but the request is for another key: no proof.
    let issued = registrar.register(Caller::default(), register_request()).await.unwrap();
    let stolen = v1::RegisterRequest { replaces_cert_pem: issued.certificate_chain_pem, ..register_request() };
    let err = registrar.register(Caller::default(), stolen).await.unwrap_err();
    assert!(err.code() == Code::FailedPrecondition && err.to_string().contains("only the holder"), "{err}");
    let garbage = v1::RegisterRequest { replaces_cert_pem: "not a certificate".into(), ..register_request() };
    assert_eq!(registrar.register(Caller::default(), garbage).await.unwrap_err().code(), Code::FailedPrecondition);
    assert_eq!(registrar.control_plane.registrations.load(Ordering::Relaxed), 1, "only the first registered");
}

#[tokio::test]
async fn a_token_refusal_comes_back_typed() {
    let registrar =
        registrar(FakeControlPlane { refuse_register: Some(v1::Refusal::TokenUsedUp), ..Default::default() });
    match registrar.register(Caller::default(), register_request()).await.unwrap_err() {
        ApiError::Refused(refused) => assert_eq!(refused.reason, v1::Refusal::TokenUsedUp),
        other => panic!("expected a typed refusal, got {other}"),
    }
}

#[tokio::test]
async fn renew_needs_a_worker_certificate_of_this_cluster() {
    let registrar = registrar(FakeControlPlane::default());
    let request = v1::RenewRequest { csr_pem: csr() };
    let none = registrar.renew(Caller::default(), request.clone()).await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let other_cluster = registrar_for_cluster("deadbeef").signer.certify(7, &csr()).unwrap().signed;
    let der = first_der(&other_cluster.cert_pem);
    let caller = Caller { addr: None, certificate: Some(&der) };
    assert_eq!(registrar.renew(caller, request).await.unwrap_err().code(), Code::PermissionDenied);
}

fn registrar_for_cluster(cluster_id: &str) -> Registrar<FakeControlPlane> {
    let mut registrar = registrar(FakeControlPlane::default());
    registrar.signer.cluster_id = cluster_id.into();
    registrar
}

#[tokio::test]
async fn renew_swaps_the_certificate_for_one_with_the_same_id() {
    let registrar = registrar(FakeControlPlane::default());
    let current = registrar.signer.certify(9, &csr()).unwrap().signed;
    let der = first_der(&current.cert_pem);
    let caller = Caller { addr: None, certificate: Some(&der) };
    let renewed = registrar.renew(caller, v1::RenewRequest { csr_pem: csr() }).await.unwrap();
    let named = muster_tls::worker_cert(&first_der(&renewed.certificate_chain_pem), "c0ffee").unwrap();
    assert_eq!(named.worker_id, 9);
    assert_ne!(named.serial_hex, current.serial_hex);
    assert_eq!((renewed.gateways.len(), renewed.gateways_epoch), (1, 2));
    let recorded = registrar.control_plane.recorded.lock().unwrap().clone();
    assert_eq!(recorded[0].presented_serial, current.serial_hex, "the swap names the certificate it replaces");
}

#[tokio::test]
async fn a_revoked_worker_gets_no_certificate() {
    let registrar =
        registrar(FakeControlPlane { refuse_record: Some(v1::Refusal::WorkerRevoked), ..Default::default() });
    let current = registrar.signer.certify(9, &csr()).unwrap().signed;
    let der = first_der(&current.cert_pem);
    let caller = Caller { addr: None, certificate: Some(&der) };
    let err = registrar.renew(caller, v1::RenewRequest { csr_pem: csr() }).await.unwrap_err();
    let status = tonic::Status::from(err);
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "worker 9 is revoked"));
    assert_eq!(muster_middleware::refusal(&status), Some(v1::Refusal::WorkerRevoked));
}
