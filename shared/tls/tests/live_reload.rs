//! Hot reload of TLS files (`LiveTls`) over real handshakes: a renewed certificate is presented
//! by the next handshake (server side) and sent by the next connection (client side) while a
//! connection made before keeps working; a bad file, a key that does not match and a
//! certificate of another identity are refused, naming the problem, and the material in use
//! stays; SIGHUP reloads at once when polling is off.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use muster_tls::{
    CertSpec, ClientAuth, ClientTls, LiveTls, PkiInit, PkiRenew, Reload, Role, ServerCheck, TlsFiles, init_pki,
    renew_pki,
};
use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOUR: Duration = Duration::from_secs(3600);

fn pki(dir: &Path) {
    init_pki(&PkiInit {
        dir: dir.to_owned(),
        cluster_name: "reload".to_owned(),
        nodes: vec![
            CertSpec::node("node-1", Role::ControlPlane, HOUR),
            CertSpec::node("node-2", Role::ControlPlane, HOUR),
            CertSpec::node("gw-1", Role::Gateway, HOUR),
        ],
        operator: false,
        force: false,
        validity: 24 * HOUR,
        ca_validity: 24 * HOUR,
    })
    .unwrap();
}

fn renew(dir: &Path, name: &str, validity: Duration) {
    renew_pki(&PkiRenew { dir: dir.to_owned(), only: vec![name.to_owned()], validity }).unwrap();
}

/// An echo server whose TLS is `config`; each connection answers with the serial of the
/// client certificate it saw (hex, or "none") and then echoes.
async fn echo_server(config: Arc<rustls::ServerConfig>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let client = tls.get_ref().1.peer_certificates().and_then(|certs| certs.first().map(serial_of));
                let hello = format!("{}\n", client.unwrap_or_else(|| "none".into()));
                if tls.write_all(hello.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn serial_of(der: &rustls::pki_types::CertificateDer<'_>) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

fn file_serial(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
    serial_of(&der)
}

/// A connection to `addr` as `client`: the server's certificate serial and what the server
/// saw of ours.
async fn connect(
    addr: std::net::SocketAddr,
    client: &ClientTls,
) -> (tokio_rustls::client::TlsStream<TcpStream>, String, String) {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(client.rustls_config());
    let mut tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let server = serial_of(&tls.get_ref().1.peer_certificates().unwrap()[0]);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tls.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    (tls, server, String::from_utf8(line).unwrap())
}

async fn echoes(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> bool {
    if tls.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).await.is_ok() && &buf == b"ping"
}

#[tokio::test]
async fn renewed_files_are_used_by_the_next_handshake_on_both_sides_and_open_connections_stay() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let server_files = TlsFiles::in_dir(dir.path(), "node-1");
    let client_files = TlsFiles::in_dir(dir.path(), "node-2");
    let server = LiveTls::load(server_files.clone()).unwrap();
    let client_live = LiveTls::load(client_files.clone()).unwrap();
    let addr = echo_server(server.server_config(ClientAuth::Required).unwrap()).await;
    let client = ClientTls::live(&client_live, ServerCheck::RoleAndHost(Role::ControlPlane)).unwrap();

    let (server_before, client_before) = (file_serial(&server_files.cert), file_serial(&client_files.cert));
    let (mut open, presented, seen) = connect(addr, &client).await;
    assert_eq!((presented.as_str(), seen.as_str()), (server_before.as_str(), client_before.as_str()));

    renew(dir.path(), "node-1", 2 * HOUR);
    renew(dir.path(), "node-2", 2 * HOUR);
    assert_eq!(server.reload().unwrap(), Reload::Swapped);
    assert_eq!(client_live.reload().unwrap(), Reload::Swapped);
    assert_eq!(server.reload().unwrap(), Reload::Unchanged, "the same files again change nothing");
    let (server_after, client_after) = (file_serial(&server_files.cert), file_serial(&client_files.cert));
    assert_ne!(server_after, server_before);

    let (_new, presented, seen) = connect(addr, &client).await;
    assert_eq!(presented, server_after, "the server presents the renewed certificate");
    assert_eq!(seen, client_after, "the client sends its renewed certificate");
    assert!(echoes(&mut open).await, "a connection made before the reload keeps working");
    assert_eq!(server.stats.reloads.load(std::sync::atomic::Ordering::Relaxed), 1);
    let expiry = server.expiries()[0].clone();
    assert_eq!((expiry.role.as_str(), expiry.name.as_str()), ("control-plane", "node-1"));
    assert_eq!(
        (server.expiries()[1].role.as_str(), server.expiries()[1].source),
        ("ca", muster_tls::CertSource::TrustedCa)
    );
}

#[tokio::test]
async fn bad_files_are_refused_by_name_and_the_material_in_use_stays() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let files = TlsFiles::in_dir(dir.path(), "node-1");
    let live = LiveTls::load(files.clone()).unwrap();
    let addr = echo_server(live.server_config(ClientAuth::Optional).unwrap()).await;
    let client = ClientTls::new(
        &std::fs::read(dir.path().join("ca.pem")).unwrap(),
        None,
        ServerCheck::RoleAndHost(Role::ControlPlane),
    )
    .unwrap();
    let good = file_serial(&files.cert);
    let original_cert = std::fs::read(&files.cert).unwrap();

    // Garbage in the certificate file.
    std::fs::write(&files.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").unwrap();
    let err = live.reload().unwrap_err().to_string();
    assert!(err.contains(&files.cert.display().to_string()), "names the file: {err}");
    assert_eq!(connect(addr, &client).await.1, good, "the old certificate is still presented");

    // Another component's certificate (and key) in this one's files.
    let gateway = TlsFiles::in_dir(dir.path(), "gw-1");
    std::fs::copy(&gateway.cert, &files.cert).unwrap();
    let err = live.reload().unwrap_err().to_string();
    assert!(err.contains(&files.key.display().to_string()) || err.contains("does not match"), "{err}");
    let node_key = std::fs::read(&files.key).unwrap();
    std::fs::copy(&gateway.key, &files.key).unwrap();
    let err = live.reload().unwrap_err().to_string();
    assert!(err.contains("spiffe://muster/gateway/gw-1") && err.contains("control-plane/node-1"), "{err}");

    // An empty file (a copy caught half-way).
    std::fs::write(&files.key, "").unwrap();
    assert!(live.reload().is_err());
    assert_eq!(connect(addr, &client).await.1, good, "still the old certificate");
    assert_eq!(live.stats.failures.load(std::sync::atomic::Ordering::Relaxed), 4);
    // The same bad files again: reported once, not on every poll.
    assert_eq!(live.reload().unwrap(), Reload::StillRefused);
    assert_eq!(live.stats.failures.load(std::sync::atomic::Ordering::Relaxed), 4);

    // Put right: loads again.
    std::fs::write(&files.key, node_key).unwrap();
    std::fs::write(&files.cert, original_cert).unwrap();
    assert_eq!(live.reload().unwrap(), Reload::Unchanged, "the original files are what is in use");
}

#[tokio::test]
async fn sighup_reloads_at_once_when_polling_is_off() {
    let dir = tempfile::tempdir().unwrap();
    pki(dir.path());
    let files = TlsFiles::in_dir(dir.path(), "node-1");
    let live = LiveTls::load(files.clone()).unwrap();
    let _reloader = live.spawn_reloader(Duration::ZERO, "test");
    let before = live.expiries()[0].not_after_unix;
    renew(dir.path(), "node-1", 3 * HOUR);
    // nextest runs each test in a process of its own, so the signal reaches only this test.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = std::process::Command::new("kill").args(["-HUP", &std::process::id().to_string()]).status();
        assert!(status.unwrap().success());
        if live.expiries()[0].not_after_unix > before {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "SIGHUP did not reload the renewed certificate");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(live.expiries()[0].not_after_unix >= before + 3600);
}
