//! The incoming stream against real loopback sockets: handshake and preface deadlines close
//! stalled connections, the caps refuse the connection over them and free places on close.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use muster_listener::{Incoming, ListenerLimits, ListenerStats};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_stream::StreamExt;

const SHORT: Duration = Duration::from_millis(300);
const WAIT: Duration = Duration::from_secs(10);

fn limits(max_connections: usize, max_connections_per_ip: usize) -> ListenerLimits {
    ListenerLimits { tls_handshake_timeout: SHORT, preface_timeout: SHORT, max_connections, max_connections_per_ip }
}

fn certificate() -> (CertificateDer<'static>, Arc<rustls::ServerConfig>) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let der = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)
        .unwrap();
    config.alpn_protocols.push(b"h2".to_vec());
    (der, Arc::new(config))
}

async fn bound() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Waits (bounded) for the server to close `stream`: a read returns EOF or an error.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0; 1024];
    tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn connect_from(source: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Keeps taking connections from `incoming`, holding them open (never reading) until the test ends.
fn hold_all<S: Send + 'static>(mut incoming: Incoming<S>) -> Arc<ListenerStats> {
    let stats = incoming.stats();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(conn) = incoming.next().await {
            held.push(conn);
        }
    });
    stats
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed_after_its_deadline() {
    let (listener, addr) = bound().await;
    let (_, config) = certificate();
    let stats = hold_all(muster_listener::tls(listener, config, &limits(100, 100), "test"));
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    eventually("the connection to be counted", || stats.open_connections() == 1).await;
    assert!(closed_by_server(&mut stalled).await, "the server kept a silent connection past the deadline");
    eventually("its place to be freed", || stats.open_connections() == 0).await;
    assert_eq!(stats.handshake_timeouts.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_connection_that_finishes_tls_but_sends_no_preface_times_out() {
    let (listener, addr) = bound().await;
    let (cert, config) = certificate();
    let mut incoming = muster_listener::tls(listener, config, &limits(100, 100), "test");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let (connected, accepted) = tokio::join!(connector.connect(name, tcp), incoming.next());
    let _client = connected.expect("the TLS handshake completes");
    let mut conn = accepted.expect("a connection").expect("no accept error");
    let started = tokio::time::Instant::now();
    let err = tokio::time::timeout(WAIT, conn.read(&mut [0; 64])).await.expect("the deadline fires").unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
    assert!(started.elapsed() < SHORT * 3, "{:?}", started.elapsed());
    assert_eq!(incoming.stats().preface_timeouts.load(Ordering::Relaxed), 1);
    let metrics = muster_listener::metrics::render();
    assert!(metrics.contains("muster_listener_preface_timeouts_total{listener=\"test\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_client_sending_the_preface_gets_its_bytes_through() {
    let (listener, addr) = bound().await;
    let mut incoming = muster_listener::plain(listener, &limits(100, 100), "test");
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await.unwrap();
    let mut conn = incoming.next().await.unwrap().unwrap();
    let mut preface = [0; 24];
    conn.read_exact(&mut preface).await.unwrap();
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    conn.write_all(b"settings").await.unwrap();
    let mut back = [0; 8];
    client.read_exact(&mut back).await.unwrap();
}

#[tokio::test]
async fn the_per_ip_cap_refuses_one_more_while_another_address_connects() {
    let (listener, addr) = bound().await;
    let stats = hold_all(muster_listener::plain(listener, &limits(100, 3), "test"));
    let mut _held = Vec::new();
    for _ in 0..3 {
        _held.push(connect_from([127, 0, 0, 1], addr).await);
    }
    eventually("three connections", || stats.open_connections() == 3).await;
    let mut over = connect_from([127, 0, 0, 1], addr).await;
    assert!(closed_by_server(&mut over).await, "connection 4 from one IP was kept");
    assert_eq!(stats.refused_over_cap.load(Ordering::Relaxed), 1);
    let _other = connect_from([127, 0, 0, 2], addr).await;
    eventually("127.0.0.2 to be accepted", || stats.open_connections() == 4).await;
    assert_eq!(stats.refused_over_cap.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_listener_cap_counts_all_addresses() {
    let (listener, addr) = bound().await;
    let stats = hold_all(muster_listener::plain(listener, &limits(2, 100), "test"));
    let _a = connect_from([127, 0, 0, 1], addr).await;
    let _b = connect_from([127, 0, 0, 2], addr).await;
    eventually("two connections", || stats.open_connections() == 2).await;
    let mut over = connect_from([127, 0, 0, 3], addr).await;
    assert!(closed_by_server(&mut over).await, "a third connection was kept");
    assert_eq!(stats.refused_over_cap.load(Ordering::Relaxed), 1);
}
