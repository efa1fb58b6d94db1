//! A real `registrar` process in front of a TLS cluster: a worker trades a token and a CSR
//! for a certificate naming it `spiffe://<cluster>/worker/<id>`, signed by the worker CA,
//! for its own key; a spent token, a bad CSR and a flood from one address are refused.

use std::time::Duration;

use anyhow::ensure;
use muster_e2e::cluster::channel;

use muster_e2e::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use muster_e2e::worker_cert::WorkerLeaf;
use muster_e2e::{Cluster, Options, eventually_msg, v1};
use rcgen::PublicKeyData;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// The DER of every certificate in `pem`.
fn pem_blocks(pem: &str) -> Vec<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).map(|block| block.expect("PEM block").contents).collect()
}

const WAIT: Duration = Duration::from_secs(30);

/// TLS a worker uses before it has an identity: trust the cluster CA, present nothing.
fn worker_tls(cluster: &Cluster) -> ClientTlsConfig {
    let ca = std::fs::read_to_string(cluster.pki().expect("pki").operator().ca).expect("CA");
    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca))
}

fn csr(names: Vec<String>) -> (rcgen::KeyPair, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::new(names).expect("params").serialize_request(&key).expect("csr");
    (key, csr.pem().expect("pem"))
}

async fn register(
    client: &mut WorkerRegistrationServiceClient<Channel>,
    token: &str,
    csr_pem: &str,
) -> Result<v1::RegisterResponse, tonic::Status> {
    let profile = v1::WorkerProfile { hostname: "worker-host".into(), ..Default::default() };
    let request = v1::RegisterRequest {
        token: token.into(),
        csr_pem: csr_pem.into(),
        profile: Some(profile),
        ..Default::default()
    };
    Ok(client.register(request).await?.into_inner())
}

async fn token(client: &muster_e2e::ControlPlaneClient) -> String {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    client.create_token(request).await.expect("token").token
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_registers_through_a_real_registrar() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = muster_e2e::registrar::Registrar::start(&cluster);
    let worker_channel = channel(&registrar.addr, Some(worker_tls(&cluster)));
    eventually_msg("the registrar serves", WAIT, || async {
        let status =
            HealthClient::new(worker_channel.clone()).check(HealthCheckRequest { service: String::new() }).await?;
        ensure!(status.into_inner().status == 1, "not serving yet");
        Ok(())
    })
    .await;
    let mut workers = WorkerRegistrationServiceClient::new(worker_channel);
    let client = cluster.client();
    let cluster_id = client.metadata().await.expect("metadata").cluster_id;
    let one_use = token(&client).await;
    let (key, csr_pem) = csr(vec!["evil.example".into()]);
    let response = register(&mut workers, &one_use, &csr_pem).await.expect("register");
    assert_eq!(response.cluster_id, cluster_id);
    assert!(response.worker_id > 0 && response.initial_ttl_ms == 10_000 && response.grace_ms == 10_000);
    let chain = pem_blocks(&response.certificate_chain_pem);
    assert_eq!(chain.len(), 2, "leaf then worker CA");
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).expect("leaf");
    let (_, worker_ca) = x509_parser::parse_x509_certificate(&chain[1]).expect("worker CA");
    leaf.verify_signature(Some(worker_ca.public_key())).expect("the leaf is signed by the worker CA");
    assert_eq!(leaf.public_key().raw, key.subject_public_key_info(), "the worker's own key is certified");
    let expected = format!("spiffe://{cluster_id}/worker/{}", response.worker_id);
    assert_eq!(WorkerLeaf::of(&response.certificate_chain_pem).uri, expected, "the one URI SAN names the worker");
    let ca_pem = std::fs::read_to_string(cluster.pki().expect("pki").operator().ca).expect("CA");
    assert_eq!(response.ca_bundle_pem, ca_pem, "the bundle is the cluster CA");

    let status = register(&mut workers, &one_use, &csr_pem).await.expect_err("a spent token registered again");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(muster_middleware::refusal(&status), Some(v1::Refusal::TokenUsedUp), "{status:?}");
    assert!(status.message().contains("used_up"), "{status:?}");

    let fresh = token(&client).await;
    let status = register(&mut workers, &fresh, "not a csr").await.expect_err("a garbage CSR was accepted");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let again = register(&mut workers, &fresh, &csr(vec![]).1).await.expect("the token survived the bad CSR");
    assert!(again.worker_id > response.worker_id, "ids grow: {} then {}", response.worker_id, again.worker_id);

    // One address hammering Register runs out of its bucket (burst 8, 1/s).
    let mut limited = None;
    for _ in 0..30 {
        match register(&mut workers, "not-a-token", &csr_pem).await {
            Err(status) if status.code() == Code::ResourceExhausted => {
                limited = Some(status);
                break;
            }
            _ => {}
        }
    }
    let status = limited.expect("30 rapid Register calls from one address were never limited");
    assert!(status.message().contains("too many Register calls"), "{status:?}");

    // The admin listener: ready, and the counters saw all of the above.
    let admin = registrar.admin.clone();
    let (ready, metrics) = tokio::task::spawn_blocking(move || {
        (muster_admin::health_probe(&admin) == std::process::ExitCode::SUCCESS, http_get(&admin, "/metrics"))
    })
    .await
    .expect("admin probe");
    assert!(ready, "the registrar's /readyz is not 200");
    assert!(metrics.contains("muster_registrar_registrations_total{} 2"), "{metrics}");
    assert!(metrics.contains("muster_registrar_rate_limited_total{} 1"), "{metrics}");
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}
