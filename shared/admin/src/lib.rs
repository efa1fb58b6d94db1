//! The plaintext admin listener of every Muster deployable: `/healthz` (the process is up),
//! `/readyz` (the component's own readiness), `/metrics` (Prometheus text rendered by the
//! component) and, where a component has one, `/status` (its state in JSON). One implementation, so probes and scrapes behave the same everywhere, and a
//! `health` subcommand for container healthchecks that needs no curl in the image.
//! [`metrics`] writes the Prometheus text format (counters, gauges, histograms) for them all.
//!
//! The listener is plaintext and unauthenticated, so it serves GET only (anything else is
//! 405), binds 127.0.0.1 unless a deployment says otherwise, closes connections that do not
//! send a request's headers within `header_read_timeout`, caps open connections, and backs
//! off on accept errors (see `muster-listener`): a flood of idle sockets must not take the
//! health checks, or the process, down with it. The handler runs behind tower-http: request
//! ids and sensitive headers (as on every listener), a DEBUG span per request, a body limit
//! (413), a response timeout (408), and a panic in a component's renderer answered with 500
//! instead of a dropped connection.

pub mod metrics;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use muster_config::AdminLimits;
use muster_listener::{AcceptBackoff, ConnectionCaps, ListenerStats};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

pub use metrics::{Histogram, Kind, counter, gauge};
pub use tls::with_tls;

/// The largest request body the admin endpoints accept (they read none: GET only).
pub const MAX_REQUEST_BODY_BYTES: usize = 4096;
/// How long one admin response may take before the caller gets 408.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the admin listener asks the component.
pub trait AdminSource: Send + Sync + 'static {
    fn is_ready(&self) -> bool;
    /// Why the component is not ready (shown by `/readyz` with 503).
    fn not_ready_reason(&self) -> String {
        "not ready".to_string()
    }
    /// The Prometheus text exposition.
    fn render_metrics(&self) -> String;
    /// `/status`: the component's own state in JSON, for the software beside it (the worker
    /// agent's drain); None (404) where a component has none.
    fn render_status(&self) -> Option<String> {
        None
    }
}

/// Serves the admin endpoints on `listener` under `limits` until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    source: Arc<dyn AdminSource>,
    limits: AdminLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    // One cap for the whole listener: its clients are a few probes and scrapers.
    let caps = ConnectionCaps::new(limits.max_connections, limits.max_connections);
    let stats = ListenerStats::register("admin", caps.clone());
    let mut backoff = AcceptBackoff::new("admin");
    // The tower-http stack is built once; each connection gets a clone.
    let service = TowerToHyperService::new(http_service(
        "admin",
        MAX_REQUEST_BODY_BYTES,
        RESPONSE_TIMEOUT,
        move |request: Request<_>| {
            let source = source.clone();
            async move { route(source.as_ref(), &request) }
        },
    ));
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = backoff.accept(|| listener.accept()) => accepted,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let Some(permit) = caps.try_acquire(peer.ip()) else {
            stats.refused_over_cap.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if last_refusal_log.is_none_or(|last| last.elapsed() >= muster_listener::backoff::LOG_INTERVAL) {
                last_refusal_log = Some(Instant::now());
                tracing::warn!(%peer, max = limits.max_connections, "admin connection cap reached; closing new connections");
            }
            continue;
        };
        let service = service.clone();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// `handler` behind the tower-http layers of every Muster HTTP/1 listener (the admin one, the
/// static-mode peer port): request ids and sensitive headers, a DEBUG span per request, a
/// panic answered 500 instead of a dropped connection, a body limit (413), a response
/// timeout (408). `what` names the listener in the panic log.
pub fn http_service<B, H, Fut>(
    what: &'static str,
    max_body_bytes: usize,
    timeout: Duration,
    handler: H,
) -> impl tower::Service<
    Request<B>,
    Response = Response<impl http_body::Body<Data = Bytes, Error = impl Into<tower::BoxError>> + Send + 'static>,
    Error = Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static
where
    B: http_body::Body + Send + 'static,
    H: Fn(Request<tower_http::body::Limited<B>>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    tower::ServiceBuilder::new()
        .layer(muster_middleware::request_layers())
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(move |_panic| {
            tracing::error!(listener = what, "an HTTP handler panicked; answered 500");
            text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into())
        }))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, timeout))
        .service(tower::service_fn(move |request| {
            let response = handler(request);
            async move { Ok::<_, Infallible>(response.await) }
        }))
}

fn route<B>(source: &dyn AdminSource, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != http::Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n".into());
        response.headers_mut().insert(http::header::ALLOW, http::HeaderValue::from_static("GET"));
        return response;
    }
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if source.is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, format!("{}\n", source.not_ready_reason())),
        "/metrics" => text(StatusCode::OK, source.render_metrics() + &muster_listener::metrics::render()),
        "/status" => match source.render_status() {
            Some(status) => json(status),
            None => text(StatusCode::NOT_FOUND, "no /status here; try /healthz, /readyz or /metrics\n".into()),
        },
        _ => text(StatusCode::NOT_FOUND, "not found; try /healthz, /readyz or /metrics\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

fn json(body: String) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::OK, body);
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    response
}

/// The `health` subcommand: GET /readyz on an admin listener; exit 0 only when ready.
pub fn health_probe(admin_addr: &str) -> std::process::ExitCode {
    use std::io::{Read, Write};
    let attempt = || -> std::io::Result<String> {
        let addr = std::net::ToSocketAddrs::to_socket_addrs(admin_addr)?
            .next()
            .ok_or_else(|| std::io::Error::other("address did not resolve"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
        stream
            .write_all(format!("GET /readyz HTTP/1.1\r\nHost: {admin_addr}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match attempt() {
        Ok(response) if response.starts_with("HTTP/1.1 200") => std::process::ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("not ready: {}", response.lines().last().unwrap_or_default());
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("health check of {admin_addr} failed: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    struct Fixed(bool);

    /// A component whose metrics renderer has a bug.
    struct Panicking;

    impl AdminSource for Panicking {
        fn is_ready(&self) -> bool {
            true
        }
        fn render_metrics(&self) -> String {
            panic!("a renderer bug")
        }
    }

    fn send(addr: std::net::SocketAddr, request: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    impl AdminSource for Fixed {
        fn is_ready(&self) -> bool {
            self.0
        }
        fn not_ready_reason(&self) -> String {
            "still catching up".into()
        }
        fn render_metrics(&self) -> String {
            let mut out = String::new();
            gauge(&mut out, "muster_test", "A test gauge.", "node_id=\"1\"", 7);
            out
        }
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> String {
        send(addr, &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn endpoints_answer_and_the_probe_follows_readiness() {
        for ready in [true, false] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = watch::channel(false);
            let server = tokio::spawn(serve(listener, Arc::new(Fixed(ready)), AdminLimits::default(), stopped));
            let (healthz, readyz, metrics) = tokio::task::spawn_blocking(move || {
                (get(addr, "/healthz"), get(addr, "/readyz"), get(addr, "/metrics"))
            })
            .await
            .unwrap();
            assert!(healthz.starts_with("HTTP/1.1 200"));
            assert_eq!(readyz.starts_with("HTTP/1.1 200"), ready, "{readyz}");
            assert!(ready || readyz.contains("still catching up"));
            assert!(metrics.contains("muster_test{node_id=\"1\"} 7"), "{metrics}");
            let probe = tokio::task::spawn_blocking(move || health_probe(&addr.to_string())).await.unwrap();
            assert_eq!(probe == std::process::ExitCode::SUCCESS, ready);
            stop.send_replace(true);
            server.await.unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panic_is_a_500_a_big_body_a_413_and_every_answer_has_a_request_id() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let server = tokio::spawn(serve(listener, Arc::new(Panicking), AdminLimits::default(), stopped));
        let (metrics, healthz, big, echoed) = tokio::task::spawn_blocking(move || {
            let big = format!(
                "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                MAX_REQUEST_BODY_BYTES + 1
            );
            let echoed = "GET /healthz HTTP/1.1\r\nHost: x\r\nx-request-id: ticket-4711\r\nConnection: close\r\n\r\n";
            (get(addr, "/metrics"), get(addr, "/healthz"), send(addr, &big), send(addr, echoed))
        })
        .await
        .unwrap();
        assert!(metrics.starts_with("HTTP/1.1 500"), "{metrics}");
        assert!(healthz.starts_with("HTTP/1.1 200"), "the listener survives the panic: {healthz}");
        assert!(big.starts_with("HTTP/1.1 413"), "{big}");
        for response in [&metrics, &healthz, &big] {
            assert!(response.to_ascii_lowercase().contains("x-request-id: "), "{response}");
        }
        assert!(echoed.contains("x-request-id: ticket-4711"), "{echoed}");
        stop.send_replace(true);
        server.await.unwrap();
    }
}
