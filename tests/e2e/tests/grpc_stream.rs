//! The fleet's lean gRPC stream client (`muster_e2e::grpc_stream`) against a real tonic server
//! over mTLS: messages both ways in order, a connection kept going while idle, an error
//! status in the trailers, a trailers-only refusal, and a server that is not there.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_e2e::grpc_stream::BidiStream;
use muster_e2e::pki::Pki;
use muster_proto::v1;
use muster_proto::v1::heartbeat_service_server::{HeartbeatService, HeartbeatServiceServer};
use muster_tls::Role;
use muster_worker_agent::identity::{Identity as WorkerIdentity, IdentityMeta};
use muster_worker_agent::tls::gateway_tls;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Code, Request, Response, Status, Streaming};

const REPORT_STATUS: &str = "/muster.v1.HeartbeatService/ReportStatus";
/// A report with this sequence makes the test server end the stream with an error status.
const REFUSE_AT: u64 = 99;

/// Acks every report with its sequence; ends the stream PERMISSION_DENIED at [`REFUSE_AT`].
struct Echo;

#[tonic::async_trait]
impl HeartbeatService for Echo {
    type ReportStatusStream = ReceiverStream<Result<v1::StatusAck, Status>>;

    async fn report_status(
        &self,
        request: Request<Streaming<v1::StatusReport>>,
    ) -> Result<Response<Self::ReportStatusStream>, Status> {
        let mut reports = request.into_inner();
        let (acks, stream) = mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok(Some(report)) = reports.message().await {
                let ack = if report.sequence == REFUSE_AT {
                    Err(Status::permission_denied("worker 7 is revoked"))
                } else {
                    Ok(v1::StatusAck { sequence: report.sequence, ttl_ms: 1000, ..Default::default() })
                };
                let last = ack.is_err();
                if acks.send(ack).await.is_err() || last {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(stream)))
    }
}

struct Served {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    _pki: Pki,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// The echo server on a free port, with a gateway certificate, and the worker agent's gateway
/// TLS (presenting the operator certificate, which this server does not check).
async fn serve() -> Served {
    let pki = Pki::new();
    let server = pki.component(Role::Gateway, "gw-test");
    let read = |path: &std::path::Path| std::fs::read_to_string(path).expect("reading a test certificate");
    let identity = Identity::from_pem(read(&server.cert), read(&server.key));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binding a port");
    let addr = listener.local_addr().expect("the bound address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let router = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))
        .expect("server TLS")
        .add_service(HeartbeatServiceServer::new(Echo));
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(router.serve_with_incoming_shutdown(incoming, async {
        let _ = stopped.await;
    }));
    let client = pki.operator();
    let identity = WorkerIdentity {
        meta: IdentityMeta { worker_id: 7, cluster_id: String::new(), cert_expires_at_unix: 0, cert_issued_at_unix: 0 },
        cert_chain_pem: read(&client.cert),
        key_pem: read(&client.key),
        ca_bundle_pem: pki.ca_pem(),
    };
    let tls = gateway_tls(&identity).expect("client TLS");
    Served { addr, tls, _pki: pki, _stop: stop }
}

fn report(sequence: u64) -> v1::StatusReport {
    v1::StatusReport { sequence, state: v1::WorkerState::Ready as i32, ..Default::default() }
}

type Stream = BidiStream<v1::StatusReport, v1::StatusAck>;

#[tokio::test]
async fn messages_flow_both_ways_and_an_error_status_ends_the_stream() {
    let served = serve().await;
    let addr = served.addr.to_string();
    let mut stream =
        Stream::open(&addr, served.tls.clone(), REPORT_STATUS, Duration::from_secs(5)).await.expect("open");
    for sequence in 1..=3 {
        stream.send(&report(sequence)).expect("send");
    }
    for sequence in 1..=3 {
        let ack = stream.message().await.expect("an ack").expect("the stream is open");
        assert_eq!(ack.sequence, sequence);
    }
    // Sent, then idle: the idle wait flushes it and reads the ack into the buffer.
    stream.send(&report(4)).expect("send");
    stream.idle_until(Instant::now() + Duration::from_millis(100)).await.expect("idle");
    assert_eq!(stream.message().await.expect("an ack").map(|ack| ack.sequence), Some(4));

    stream.send(&report(REFUSE_AT)).expect("send");
    let refused = stream.message().await.expect_err("the server's status");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    assert_eq!(refused.message(), "worker 7 is revoked");
    // Ended streams keep answering the same status.
    assert_eq!(stream.message().await.expect_err("ended").code(), Code::PermissionDenied);
}

#[tokio::test]
async fn a_trailers_only_refusal_and_a_missing_server_are_errors_with_their_reason() {
    let served = serve().await;
    let addr = served.addr.to_string();
    let mut stream =
        Stream::open(&addr, served.tls.clone(), "/muster.v1.HeartbeatService/NoSuchMethod", Duration::from_secs(5))
            .await
            .expect("open");
    stream.send(&report(1)).expect("send");
    let refused = stream.message().await.expect_err("no such method");
    assert_eq!(refused.code(), Code::Unimplemented, "{refused}");

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port").local_addr().expect("addr");
    let Err(unreachable) =
        Stream::open(&closed.to_string(), served.tls.clone(), REPORT_STATUS, Duration::from_secs(5)).await
    else {
        panic!("connected to a closed port");
    };
    assert_eq!(unreachable.code(), Code::Unavailable);
    assert!(unreachable.message().contains(&closed.to_string()), "{unreachable}");
}
