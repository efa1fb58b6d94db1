//! The gateway end to end in one process: real mTLS to workers and to a fake control plane.

mod support;

use muster_proto::v1;
use support::{CLUSTER, Harness, WorkerStream, beat, eventually, full};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_the_worker_ca_then_serves_acks_and_forwards_beats() {
    let mut gateway = Harness::start(false).await;
    let reason = eventually("the gateway to say what it waits for", || async {
        let (status, body) = gateway.admin_get("/readyz").await;
        (status.contains("503") && body.contains("waiting for a registrar to create the worker CA")).then_some(body)
    })
    .await;
    assert!(reason.contains("worker CA"), "{reason}");
    gateway.publish_worker_ca();
    gateway.wait_ready().await;

    let mut worker = WorkerStream::open(gateway.worker(1).await).await.unwrap();
    let ack = worker.report(full(1)).await.unwrap();
    assert_eq!(ack.sequence, 1);
    // N = 10, 100/s, G = 1: min TTL 1s, plus under 10% stagger.
    assert!((1_000..1_100).contains(&ack.ttl_ms), "ttl {}", ack.ttl_ms);
    assert_eq!((ack.grace_ms, ack.worker_count, ack.live_gateways, ack.gateways_epoch), (2_000, 10, 1, 7));
    assert_eq!(ack.gateways.len(), 1, "the worker's epoch was stale");
    assert_eq!(ack.gateway_id, ack.gateways[0].gateway_id);
    assert!(!ack.throttled);

    let first = gateway.fake.beats_of(1);
    assert_eq!(first[0].reported_state, v1::WorkerState::Ready as i32);
    assert_eq!(first[0].profile.as_ref().map(|p| p.hostname.as_str()), Some("worker-host"));
    assert_eq!(first[0].ttl_ms, ack.ttl_ms, "the leader gets the TTL the worker got");
    assert_eq!(first[0].cert_serial.len(), 32, "the certificate serial travels with full reports");

    // Admitted: the next ack comes at once, without the list (current epoch); it is inside
    // the minimum interval, so it is throttled but still recorded.
    let ack = worker.report(beat(2, v1::WorkerState::Ready)).await.unwrap();
    assert!(ack.gateways.is_empty());
    assert!(ack.throttled, "a report within min_report_interval is throttled");
    let left = worker.report(beat(3, v1::WorkerState::Left)).await.unwrap();
    assert_eq!(left.sequence, 3);
    eventually("the LEFT to reach the leader", || async {
        gateway.fake.beats_of(1).iter().any(|b| b.reported_state == v1::WorkerState::Left as i32).then_some(())
    })
    .await;

    let (_, metrics) = gateway.admin_get("/metrics").await;
    assert!(metrics.contains("muster_gateway_connected_workers{} 1"), "{metrics}");
    assert!(metrics.contains("muster_gateway_heartbeats_total{} 3"), "{metrics}");
    assert!(metrics.contains("muster_gateway_heartbeats_throttled_total{} 2"), "{metrics}");
    assert!(metrics.contains("muster_gateway_budget_per_second 100"), "{metrics}");

    // Batches flow with no workers too (the gateway's own lease).
    drop(worker);
    let before = gateway.fake.batches.lock().unwrap().len();
    eventually("more batches", || async { (gateway.fake.batches.lock().unwrap().len() > before + 2).then_some(()) })
        .await;
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_and_unknown_workers_are_refused_within_a_batch() {
    let mut gateway = Harness::start(true).await;
    gateway.wait_ready().await;
    gateway.fake.revoked.lock().unwrap().insert(2);

    let mut revoked = WorkerStream::open(gateway.worker(2).await).await.unwrap();
    let status = revoked.report(full(1)).await.unwrap_err();
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "worker 2 is revoked"));
    // Reconnecting is refused at once, without asking the leader.
    let status = match WorkerStream::open(gateway.worker(2).await).await {
        Err(status) => status,
        Ok(mut stream) => stream.report(full(1)).await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut unknown = WorkerStream::open(gateway.worker(1234).await).await.unwrap();
    let status = unknown.report(full(1)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(status.message().contains("no worker 1234"), "{status:?}");

    // A worker revoked while connected is ended at its next beat's batch.
    let mut later = WorkerStream::open(gateway.worker(3).await).await.unwrap();
    later.report(full(1)).await.unwrap();
    gateway.fake.revoked.lock().unwrap().insert(3);
    later.reports.send(beat(2, v1::WorkerState::Ready)).await.unwrap();
    let status = loop {
        match later.next().await {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "worker 3 is revoked"));
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_stream_replaces_the_older_one() {
    let mut gateway = Harness::start(true).await;
    gateway.wait_ready().await;
    let mut old = WorkerStream::open(gateway.worker(5).await).await.unwrap();
    old.report(full(1)).await.unwrap();
    let mut new = WorkerStream::open(gateway.worker(5).await).await.unwrap();
    let status = old.next().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    // Already admitted on this gateway: acked at once.
    new.report(full(1)).await.unwrap();
    let (_, metrics) = gateway.admin_get("/metrics").await;
    assert!(metrics.contains("muster_gateway_connected_workers{} 1"), "{metrics}");

    // Shutting down ends the streams so workers fail over.
    let stopping = tokio::spawn(async move { gateway.shutdown().await });
    let status = new.next().await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    stopping.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_worker_certificates_of_this_cluster_get_in() {
    let mut gateway = Harness::start(true).await;
    gateway.wait_ready().await;

    // Another cluster's worker id (same worker CA, other trust domain): refused by name.
    let channel = gateway.channel(Some(gateway.worker_identity("fedcba9876543210", 1))).await.unwrap();
    let status = match WorkerStream::open(channel).await {
        Err(status) => status,
        Ok(mut stream) => stream.report(full(1)).await.unwrap_err(),
    };
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("cluster fedcba9876543210"), "{status:?}");

    // No certificate, one from another CA, or a component certificate of the cluster CA (not
    // the worker CA): the handshake fails.
    let rogue = muster_tls::CertificateAuthority::generate("rogue", std::time::Duration::from_secs(3600)).unwrap();
    let component = gateway.component_identity("gw-1");
    for identity in [None, Some(support::issue(&rogue, CLUSTER, 1)), Some(component)] {
        let refused = match gateway.channel(identity).await {
            Err(_) => true,
            Ok(channel) => match WorkerStream::open(channel).await {
                Err(_) => true,
                Ok(mut stream) => stream.report(full(1)).await.is_err(),
            },
        };
        assert!(refused, "a connection without a worker certificate got through");
    }

    // Plaintext: not even HTTP/2 gets through.
    let plain = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await;
    if let Ok(channel) = plain {
        assert!(WorkerStream::open(channel).await.is_err());
    }
    gateway.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served_to_worker_certificates() {
    use tokio_stream::StreamExt;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let mut gateway = Harness::start(true).await;
    gateway.wait_ready().await;
    let channel = gateway.worker(1).await;
    for service in ["", "muster.v1.HeartbeatService"] {
        let request = tonic_health::pb::HealthCheckRequest { service: service.into() };
        let status = HealthClient::new(channel.clone()).check(request).await.unwrap().into_inner().status;
        assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32, "{service:?}");
    }
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response: ServerReflectionResponse = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
            "muster.v1.HeartbeatService"
        ]
    );
    gateway.shutdown().await.unwrap();
}

/// A drain the leader lists for a worker of the batch rides on that worker's acks until the
/// leader stops listing it; the worker's `drained` report reaches the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drains_ride_on_acks_and_drained_reaches_the_leader() {
    let mut gateway = Harness::start(true).await;
    gateway.wait_ready().await;
    let mut worker = WorkerStream::open(gateway.worker(1).await).await.unwrap();
    let mut sequence = 1;
    assert_eq!(worker.report(full(sequence)).await.unwrap().drain, None);

    // Reports until an ack's drain is `wanted` (each report's beat goes in a later batch).
    async fn beat_until(worker: &mut WorkerStream, sequence: &mut u64, wanted: Option<&v1::WorkerDrain>) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            *sequence += 1;
            let ack = worker.report(beat(*sequence, v1::WorkerState::Unspecified)).await.unwrap();
            if ack.drain.as_ref() == wanted {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no ack with drain {wanted:?}; the last had {:?}",
                ack.drain
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    let drain = v1::WorkerDrain { started_at_unix: 100, deadline_unix: 700, ..Default::default() };
    gateway.fake.draining.lock().unwrap().insert(1, drain);
    beat_until(&mut worker, &mut sequence, Some(&drain)).await;

    sequence += 1;
    let drained = v1::StatusReport { drained: true, ..beat(sequence, v1::WorkerState::Unspecified) };
    worker.report(drained).await.unwrap();
    eventually("drained to reach the leader", || async {
        gateway.fake.beats_of(1).iter().any(|b| b.drained).then_some(())
    })
    .await;

    gateway.fake.draining.lock().unwrap().clear();
    beat_until(&mut worker, &mut sequence, None).await;
    gateway.shutdown().await.unwrap();
}
