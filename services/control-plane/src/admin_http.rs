//! The plaintext admin listener: `/healthz` (process up), `/readyz` (the seed's
//! `server_is_ready`) and `/metrics` (Prometheus text).

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::node::NodeHandle;

pub async fn serve(listener: TcpListener, node: Arc<NodeHandle>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "admin listener accept failed");
                    continue;
                }
            },
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let node = node.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let node = node.clone();
                async move { Ok::<_, Infallible>(route(&node, &request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

fn route(node: &NodeHandle, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" if node.server_is_ready() => text(StatusCode::OK, "ready\n".into()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready: not yet joined or catching up\n".into()),
        "/metrics" => text(StatusCode::OK, render_metrics(node)),
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

/// Raft gauges in the Prometheus text format.
pub fn render_metrics(node: &NodeHandle) -> String {
    let metrics = node.metrics();
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: u64| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{node_id=\"{}\"}} {value}", node.id);
    };
    gauge("muster_raft_term", "Current Raft term.", metrics.current_term);
    gauge("muster_raft_leader_id", "Id of the known leader (0: none).", metrics.current_leader.unwrap_or(0));
    gauge("muster_raft_is_leader", "1 if this node is the leader.", u64::from(metrics.current_leader == Some(node.id)));
    gauge("muster_raft_last_log_index", "Index of the last log entry.", metrics.last_log_index.unwrap_or(0));
    gauge(
        "muster_raft_commit_index",
        "Index of the last committed entry.",
        metrics.cluster_committed.as_ref().map_or(0, |l| l.index),
    );
    gauge(
        "muster_raft_applied_index",
        "Index of the last applied entry.",
        metrics.last_applied.as_ref().map_or(0, |l| l.index),
    );
    gauge(
        "muster_raft_snapshot_index",
        "Last index covered by the snapshot.",
        metrics.snapshot.as_ref().map_or(0, |l| l.index),
    );
    gauge("muster_raft_purged_index", "Last purged log index.", metrics.purged.as_ref().map_or(0, |l| l.index));
    gauge("muster_ready", "1 when the node has joined and caught up.", u64::from(node.server_is_ready()));
    out
}

/// The `health` subcommand: GET /readyz on the admin listener; exit 0 only when ready.
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
