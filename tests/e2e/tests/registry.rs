//! What registrars ask of the control plane: a token registers as many workers as it has
//! uses (ids from the log), every kind of bad token is refused with its own error, only
//! registrar certificates may ask, the first worker CA certificate proposed is the cluster's,
//! and a worker CA key is never accepted.

use muster_e2e::cluster::channel;
use muster_e2e::v1::token_service_client::TokenServiceClient;
use muster_e2e::v1::worker_registry_service_client::WorkerRegistryServiceClient;
use muster_e2e::{Cluster, Options, v1};
use muster_tls::{CertificateAuthority, Role};
use tonic::Code;
use tonic::transport::Channel;

fn ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::generate(name, std::time::Duration::from_secs(3600)).unwrap()
}

fn profile(hostname: &str) -> Option<v1::WorkerProfile> {
    Some(v1::WorkerProfile {
        hostname: hostname.into(),
        labels: [("zone".to_string(), "a".to_string())].into(),
        ..Default::default()
    })
}

async fn register(
    registry: &mut WorkerRegistryServiceClient<Channel>,
    token: &str,
) -> Result<v1::WorkerRecord, tonic::Status> {
    let request =
        v1::RegisterWorkerRequest { token: token.to_string(), profile: profile("host"), ..Default::default() };
    Ok(registry.register_worker(request).await?.into_inner().worker.expect("a worker"))
}

/// Refused with `code`, the typed `reason` beside it, and words that name the reason.
fn refused(result: Result<v1::WorkerRecord, tonic::Status>, code: Code, reason: v1::Refusal) {
    let label = reason.label();
    let status = result.expect_err(&format!("a {label} token registered a worker"));
    assert_eq!(status.code(), code, "{label}: {status:?}");
    assert_eq!(muster_middleware::refusal(&status), Some(reason), "{label}: {status:?}");
    assert!(status.message().contains(&format!("({label})")), "{label}: unclear message {:?}", status.message());
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_register_workers_and_bad_tokens_are_refused() {
    let cluster = Cluster::start(3, Options::tls()).await;
    let pki = cluster.pki().expect("pki");
    let leader = cluster.wait_for_leader(std::time::Duration::from_secs(30)).await;
    let api = cluster.addrs(leader).api.clone();
    let mut registry =
        WorkerRegistryServiceClient::new(channel(&api, Some(pki.component_tls(Role::Registrar, "reg-1"))));
    let client = cluster.client();
    let create = |uses| v1::CreateTokenRequest {
        ttl_seconds: 3600,
        uses,
        labels: [("rack".to_string(), "r1".to_string())].into(),
        ..Default::default()
    };

    let two_uses = client.create_token(create(2)).await.expect("token").token;
    let first = register(&mut registry, &two_uses).await.expect("first registration");
    let second = register(&mut registry, &two_uses).await.expect("second registration");
    assert!(second.worker_id > first.worker_id, "ids come from the log: {} then {}", first.worker_id, second.worker_id);
    assert_eq!(first.labels.get("rack").map(String::as_str), Some("r1"));
    assert_eq!(first.labels.get("zone").map(String::as_str), Some("a"));
    refused(register(&mut registry, &two_uses).await, Code::PermissionDenied, v1::Refusal::TokenUsedUp);

    let revoked = client.create_token(create(1)).await.expect("token");
    client.revoke_token(&revoked.record.expect("record").token_id).await.expect("revoke");
    refused(register(&mut registry, &revoked.token).await, Code::PermissionDenied, v1::Refusal::TokenRevoked);

    let genuine = muster_token::decode(&client.create_token(create(1)).await.expect("token").token).expect("decode");
    let mut forged = genuine.clone();
    forged.secret[0] ^= 0xff;
    refused(
        register(&mut registry, &muster_token::encode(&forged)).await,
        Code::Unauthenticated,
        v1::Refusal::TokenForged,
    );
    let mut elsewhere = genuine.clone();
    elsewhere.cluster_id = "another-cluster".into();
    refused(
        register(&mut registry, &muster_token::encode(&elsewhere)).await,
        Code::FailedPrecondition,
        v1::Refusal::TokenWrongCluster,
    );
    let mut unknown = genuine.clone();
    unknown.token_id = "0000000000000000".into();
    refused(
        register(&mut registry, &muster_token::encode(&unknown)).await,
        Code::Unauthenticated,
        v1::Refusal::TokenUnknown,
    );
    refused(register(&mut registry, "not-a-token").await, Code::InvalidArgument, v1::Refusal::TokenMalformed);
    // None of that consumed the genuine token.
    register(&mut registry, &muster_token::encode(&genuine)).await.expect("the genuine token still registers");

    // Only registrars register; only operators handle tokens.
    let mut as_operator = WorkerRegistryServiceClient::new(channel(&api, Some(pki.operator_tls())));
    let status = register(&mut as_operator, &two_uses).await.expect_err("an operator registered a worker");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let mut tokens_as_registrar =
        TokenServiceClient::new(channel(&api, Some(pki.component_tls(Role::Registrar, "reg-1"))));
    let status = tokens_as_registrar.create_token(create(1)).await.expect_err("a registrar created a token");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // The worker CA key is refused; the first certificate wins; later proposals get it back.
    let (ca_a, ca_b) = (ca("a"), ca("b"));
    let with_key = v1::EnsureWorkerCaRequest {
        proposed: Some(v1::InitWorkerCa {
            cert_pem: ca_a.cert_pem().into(),
            key_pem: ca_a.key_pem().into(),
            ..Default::default()
        }),
    };
    let status = registry.ensure_worker_ca(with_key).await.expect_err("a worker CA key was accepted");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("must not be sent"), "{status:?}");
    let propose = |ca: &CertificateAuthority| v1::EnsureWorkerCaRequest {
        proposed: Some(v1::InitWorkerCa { cert_pem: ca.cert_pem().into(), ..Default::default() }),
    };
    let a = registry.ensure_worker_ca(propose(&ca_a)).await.expect("ensure A").into_inner();
    let b = registry.ensure_worker_ca(propose(&ca_b)).await.expect("ensure B").into_inner();
    let recorded = a.worker_ca.as_ref().expect("a worker CA");
    assert_eq!((recorded.cert_pem.as_str(), recorded.sha256.clone()), (ca_a.cert_pem(), ca_a.cert_sha256()));
    assert!(recorded.key_pem.is_empty());
    assert_eq!(b.worker_ca, a.worker_ca, "a later proposal does not replace the CA");
    assert!(!a.cluster_id.is_empty());

    let recorded = registry
        .record_worker_cert(v1::RecordWorkerCertRequest {
            worker_id: first.worker_id,
            serial: "01ab".into(),
            expires_at_unix: 42,
            presented_serial: String::new(),
        })
        .await
        .expect("record cert")
        .into_inner();
    assert_eq!(recorded.worker.map(|w| (w.cert_serial, w.cert_expires_at_unix)), Some(("01ab".into(), 42)));
    let status = registry
        .record_worker_cert(v1::RecordWorkerCertRequest { worker_id: 999, serial: "02".into(), ..Default::default() })
        .await
        .expect_err("recorded a certificate for no worker");
    assert_eq!(status.code(), Code::NotFound);
    // Serials go into Raft entries: an oversize one is refused before it is proposed.
    for (serial, presented) in [("ab".repeat(21), "01ab".to_string()), ("03".into(), "cd".repeat(1_000_000))] {
        let oversize = v1::RecordWorkerCertRequest {
            worker_id: first.worker_id,
            serial,
            expires_at_unix: 43,
            presented_serial: presented,
        };
        let status = registry.record_worker_cert(oversize).await.expect_err("an oversize serial was recorded");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("max_cert_serial_hex"), "{status:?}");
    }
    let unchanged = registry.record_worker_cert(v1::RecordWorkerCertRequest {
        worker_id: first.worker_id,
        serial: "01ab".into(),
        expires_at_unix: 42,
        presented_serial: String::new(),
    });
    let unchanged = unchanged.await.expect("a retried record").into_inner().worker.expect("worker");
    assert_eq!((unchanged.cert_serial.as_str(), unchanged.previous_cert_serial.as_str()), ("01ab", ""));
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_list_drain_revoke_and_relabel_workers() {
    use muster_e2e::WorkerAction;

    let cluster = Cluster::start(1, Options::tls()).await;
    let pki = cluster.pki().expect("pki");
    let api = cluster.addrs(1).api.clone();
    let mut registry =
        WorkerRegistryServiceClient::new(channel(&api, Some(pki.component_tls(Role::Registrar, "reg-1"))));
    let client = cluster.client();
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 2, ..Default::default() };
    let token = client.create_token(request).await.expect("token").token;
    let a = register(&mut registry, &token).await.expect("worker a").worker_id;
    let b = register(&mut registry, &token).await.expect("worker b").worker_id;

    let all = client.list_workers(v1::ListWorkersRequest::default()).await.expect("list");
    assert_eq!(all.iter().map(|w| w.worker_id).collect::<Vec<_>>(), vec![a, b]);

    let drained = client.worker_action(WorkerAction::Drain, a).await.expect("drain");
    assert_eq!(drained.state, v1::WorkerState::Draining as i32);
    let revoked = client.worker_action(WorkerAction::Revoke, b).await.expect("revoke");
    assert_eq!(revoked.state, v1::WorkerState::Revoked as i32);
    let status = match client.worker_action(WorkerAction::Drain, b).await {
        Err(muster_e2e::ClientError::Status(status)) => status,
        other => panic!("draining a revoked worker: {other:?}"),
    };
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");

    let change = v1::LabelChange { set: [("tier".to_string(), "gpu".to_string())].into(), remove: vec!["zone".into()] };
    let relabeled = client.label_worker(a, change).await.expect("label");
    assert_eq!(relabeled.labels.get("tier").map(String::as_str), Some("gpu"));
    assert!(!relabeled.labels.contains_key("zone"));

    let filter = |state: v1::WorkerState, labels: &[(&str, &str)]| v1::ListWorkersRequest {
        state: state as i32,
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let draining = client.list_workers(filter(v1::WorkerState::Draining, &[])).await.expect("list draining");
    assert_eq!(draining.iter().map(|w| w.worker_id).collect::<Vec<_>>(), vec![a]);
    let gpu = client.list_workers(filter(v1::WorkerState::Unspecified, &[("tier", "gpu")])).await.expect("by label");
    assert_eq!(gpu.iter().map(|w| w.worker_id).collect::<Vec<_>>(), vec![a]);
    let none = client.worker_action(WorkerAction::Get, 999).await;
    assert!(matches!(none, Err(muster_e2e::ClientError::Status(s)) if s.code() == Code::NotFound));
}
