//! The admin listener under idle and over-cap connections, and its read-only surface.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_admin::{AdminSource, serve};
use muster_config::AdminLimits;
use tokio::net::TcpListener;
use tokio::sync::watch;

struct Up;

impl AdminSource for Up {
    fn is_ready(&self) -> bool {
        true
    }
    fn render_metrics(&self) -> String {
        String::new()
    }
}

struct Running {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(limits: AdminLimits) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(serve(listener, Arc::new(Up), limits, stopped));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.send_replace(true);
        self.task.await.unwrap();
    }
}

fn request(addr: SocketAddr, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// How long the server took to close `stream` (read EOF or an error), at most `limit`.
fn time_to_close(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    match stream.read(&mut [0; 64]) {
        Ok(0) => Some(started.elapsed()),
        Err(err) if err.kind() != std::io::ErrorKind::WouldBlock && err.kind() != std::io::ErrorKind::TimedOut => {
            Some(started.elapsed())
        }
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_after_the_header_deadline_while_healthz_answers() {
    let timeout = Duration::from_millis(500);
    let server = Running::start(AdminLimits { header_read_timeout: timeout, max_connections: 100 }).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let mut idle: Vec<_> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert!(request(addr, "GET", "/healthz").starts_with("HTTP/1.1 200"), "healthz during the idle flood");
        // A request started but never finished counts as idle too.
        let mut partial = TcpStream::connect(addr).unwrap();
        partial.write_all(b"GET /healthz HTTP/1.1\r\nHost:").unwrap();
        idle.push(partial);
        for stream in &mut idle {
            let closed = time_to_close(stream, Duration::from_secs(10)).expect("an idle connection was kept");
            assert!(closed < Duration::from_secs(5), "{closed:?}");
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_cap_are_closed_at_once() {
    let server = Running::start(AdminLimits { header_read_timeout: Duration::from_secs(30), max_connections: 3 }).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        let held: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        let mut over = TcpStream::connect(addr).unwrap();
        let closed = time_to_close(&mut over, Duration::from_secs(10)).expect("connection 4 was kept");
        assert!(closed < Duration::from_secs(10));
        let metrics = muster_listener::metrics::render();
        assert!(metrics.contains("muster_listener_refused_total{listener=\"admin\"} 1"), "{metrics}");
        drop(held);
        // Places come back once the held connections are gone.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut stream = TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut response = String::new();
            let sent = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if sent.is_ok() && stream.read_to_string(&mut response).is_ok() && response.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "healthz never came back after the cap");
            std::thread::yield_now();
        }
    })
    .await
    .unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn only_get_is_served() {
    let server = Running::start(AdminLimits::default()).await;
    let addr = server.addr;
    tokio::task::spawn_blocking(move || {
        for method in ["POST", "PUT", "DELETE", "PATCH"] {
            let response = request(addr, method, "/readyz");
            assert!(response.starts_with("HTTP/1.1 405"), "{method}: {response}");
            assert!(response.to_ascii_lowercase().contains("allow: get"), "{response}");
        }
        assert!(request(addr, "GET", "/readyz").starts_with("HTTP/1.1 200"));
    })
    .await
    .unwrap();
    server.stop().await;
}
