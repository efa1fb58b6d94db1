//! `Renew` on a real registrar: a registered worker, calling over mTLS with its certificate,
//! gets a fresh certificate for its new key with the same id and a later expiry (and the
//! control plane records it); a revoked worker is refused; a caller without a worker
//! certificate is refused, and a component certificate from the cluster CA does not even get
//! through the handshake.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::ensure;
use muster_e2e::cluster::channel;
use muster_e2e::registrar::Registrar;
use muster_e2e::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use muster_e2e::worker_cert::{self, WorkerLeaf, key_and_csr};
use muster_e2e::{Cluster, Options, WorkerAction, eventually_msg, v1};
use rcgen::PublicKeyData;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const WAIT: Duration = Duration::from_secs(30);

fn cluster_ca(cluster: &Cluster) -> String {
    std::fs::read_to_string(cluster.pki().expect("pki").operator().ca).expect("CA")
}

/// A worker channel: trusts the cluster CA, presents `identity` (chain PEM, key PEM) if any.
fn worker_client(
    cluster: &Cluster,
    registrar: &Registrar,
    identity: Option<(&str, &str)>,
) -> WorkerRegistrationServiceClient<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(cluster_ca(cluster)));
    if let Some((chain, key)) = identity {
        tls = tls.identity(Identity::from_pem(chain, key));
    }
    WorkerRegistrationServiceClient::new(channel(&registrar.addr, Some(tls)))
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// A registered worker: its response and key.
async fn register(cluster: &Cluster, registrar: &Registrar) -> (v1::RegisterResponse, rcgen::KeyPair) {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    let token = cluster.client().create_token(request).await.expect("token").token;
    let client = worker_client(cluster, registrar, None);
    let (key, csr_pem) = key_and_csr();
    let profile = v1::WorkerProfile { hostname: "renewing-host".into(), ..Default::default() };
    let request = v1::RegisterRequest { token, csr_pem, profile: Some(profile), ..Default::default() };
    // The registrar may still be starting: retry while it is unreachable, fail on a refusal.
    let response = eventually_msg("Register through the registrar", WAIT, || {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            match client.register(request).await {
                Ok(response) => Ok(Ok(response.into_inner())),
                Err(status) if status.code() == Code::Unavailable => Err(status.into()),
                Err(status) => Ok(Err(status)),
            }
        }
    })
    .await
    .unwrap_or_else(|status| panic!("Register was refused: {status:?}"));
    (response, key)
}

async fn renew(
    cluster: &Cluster,
    registrar: &Registrar,
    chain: &str,
    key: &rcgen::KeyPair,
) -> Result<(v1::RenewResponse, rcgen::KeyPair), tonic::Status> {
    worker_cert::renew(&registrar.addr, &cluster_ca(cluster), chain, &key.serialize_pem()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registered_worker_renews_and_a_revoked_one_cannot() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start(&cluster);
    let (registered, key) = register(&cluster, &registrar).await;
    let WorkerLeaf { uri, not_after_unix: expires, .. } = WorkerLeaf::of(&registered.certificate_chain_pem);
    assert_eq!(uri, format!("spiffe://{}/worker/{}", registered.cluster_id, registered.worker_id));

    // Expiry has one-second resolution: let a second pass so "later" is observable.
    eventually_msg("a second passes", WAIT, || async {
        ensure!(unix_now() > registered.cert_expires_at_unix - 24 * 3600, "same second");
        Ok(())
    })
    .await;
    let (renewed, next_key) =
        renew(&cluster, &registrar, &registered.certificate_chain_pem, &key).await.expect("Renew");
    let WorkerLeaf { uri: renewed_uri, not_after_unix: renewed_expires, public_key, .. } =
        WorkerLeaf::of(&renewed.certificate_chain_pem);
    assert_eq!(renewed_uri, uri, "the same worker id");
    assert!(renewed_expires > expires, "expiry {renewed_expires} is not later than {expires}");
    assert_eq!(renewed.cert_expires_at_unix, renewed_expires);
    assert_eq!(public_key, next_key.subject_public_key_info(), "the new key is certified");
    assert_eq!(renewed.ca_bundle_pem, cluster_ca(&cluster));
    let record = cluster.client().worker_action(WorkerAction::Get, registered.worker_id).await.expect("get");
    assert_eq!(record.cert_expires_at_unix, renewed_expires, "the control plane records the renewed certificate");

    // The renewed certificate renews again; then the operator revokes the worker.
    let (again, again_key) = renew(&cluster, &registrar, &renewed.certificate_chain_pem, &next_key)
        .await
        .expect("Renew with the renewed cert");
    cluster.client().worker_action(WorkerAction::Revoke, registered.worker_id).await.expect("revoke");
    let status = renew(&cluster, &registrar, &again.certificate_chain_pem, &again_key)
        .await
        .expect_err("a revoked worker renewed its certificate");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(status.message(), format!("worker {} is revoked", registered.worker_id));
}

#[tokio::test(flavor = "multi_thread")]
async fn renew_needs_a_worker_certificate() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start(&cluster);
    // Registering first also waits for the registrar to serve.
    register(&cluster, &registrar).await;

    let (_, csr_pem) = key_and_csr();
    let mut anonymous = worker_client(&cluster, &registrar, None);
    let status =
        anonymous.renew(v1::RenewRequest { csr_pem: csr_pem.clone() }).await.expect_err("Renew without a cert");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().starts_with("a client certificate is required to call"), "{status:?}");
    assert!(status.message().contains("(allowed: worker)"), "{status:?}");

    // A cluster-CA component certificate is not a worker's: the TLS layer trusts only the
    // worker CA for clients.
    let operator = cluster.pki().expect("pki").operator();
    let (cert, key) = (std::fs::read_to_string(operator.cert).unwrap(), std::fs::read_to_string(operator.key).unwrap());
    let mut component = worker_client(&cluster, &registrar, Some((&cert, &key)));
    let status = component.renew(v1::RenewRequest { csr_pem }).await.expect_err("Renew with an operator cert");
    // TLS 1.3 rejects the client certificate after the client thinks the handshake is done, so
    // the client sees a transport error (the alert, or the connection dropping), never an
    // answer from the service.
    let transport = std::error::Error::source(&status).is_some();
    assert!(transport, "the handshake should fail: {status:?}");
}
