//! Connection floods for the listener tests (half-open TCP, TLS that never starts HTTP/2,
//! idle HTTP/1), and what `/proc` says about the server under them: open descriptors and CPU
//! time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// How long one flood connection may take to connect before it is skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(Iterator::count).unwrap_or(0)
}

/// User plus system CPU time of process `pid`, in clock ticks (100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// A TCP connection to `addr` from the loopback address `source`.
pub async fn connect_from(source: [u8; 4], addr: &str) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = addr.parse().map_err(std::io::Error::other)?;
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((source, 0)))?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr)).await.map_err(std::io::Error::other)?
}

/// Up to `n` TCP connections to `addr` that send nothing (connections the kernel could not
/// complete in time are skipped).
pub async fn silent_tcp(addr: &str, n: usize) -> Vec<TcpStream> {
    let attempts = (0..n).map(|_| connect_from([127, 0, 0, 1], addr));
    futures::future::join_all(attempts).await.into_iter().filter_map(Result::ok).collect()
}

/// A TLS client that trusts `ca_pem`, offers ALPN `h2` and presents no certificate.
pub fn tls_connector(ca_pem: &str) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("CA certificate");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A finished TLS handshake over `tcp` (the server is checked as `127.0.0.1`).
pub async fn tls_handshake(connector: &TlsConnector, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from("127.0.0.1").expect("an IP server name");
    tokio::time::timeout(CONNECT_TIMEOUT * 5, connector.connect(name, tcp)).await.map_err(std::io::Error::other)?
}

/// Up to `n` connections to `addr` that finish TLS and then send nothing, not even the
/// HTTP/2 preface.
pub async fn silent_tls(addr: &str, n: usize, connector: &TlsConnector) -> Vec<TlsStream<TcpStream>> {
    let attempts = (0..n).map(|_| async {
        let tcp = connect_from([127, 0, 0, 1], addr).await?;
        tls_handshake(connector, tcp).await
    });
    futures::future::join_all(attempts).await.into_iter().filter_map(Result::ok).collect()
}

/// Lines of `text` that contain `needle`.
pub fn count_lines(text: &str, needle: &str) -> usize {
    text.lines().filter(|line| line.contains(needle)).count()
}
