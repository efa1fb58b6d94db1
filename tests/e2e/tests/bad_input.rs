//! Bad input is refused with a clear error and never takes a node down: malformed config
//! files, a client certificate from another CA, an oversized message, removing an unknown
//! node, an empty key. After each, a normal write still succeeds.

use std::process::Stdio;
use std::time::Duration;

use muster_e2e::cluster::channel;
use muster_e2e::pki::{RoguePki, no_client_cert};
use muster_e2e::process::control_plane_command;
use muster_e2e::v1::cluster_conf_change_request::Change;
use muster_e2e::v1::raft_client_service_client::RaftClientServiceClient;
use muster_e2e::v1::raft_election_service_client::RaftElectionServiceClient;
use muster_e2e::{ClientError, Cluster, Options, v1};
use tonic::Code;
use tonic::transport::ClientTlsConfig;

const MAX_MESSAGE_BYTES: usize = 1024 * 1024;

/// Runs `control-plane --config` on `toml`; it must exit non-zero within 10 s. Returns stderr.
async fn refused_config(toml: &str) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, toml.replace("DATA_DIR", &dir.path().join("data").display().to_string()))
        .expect("write config");
    let mut command = tokio::process::Command::from(control_plane_command(&path));
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(10), command.output())
        .await
        .expect("control-plane kept running on a malformed config")
        .expect("running control-plane");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "control-plane accepted a malformed config; stderr: {stderr}");
    stderr
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_configs_are_refused_naming_the_field() {
    let unknown_field = "data_dir = \"DATA_DIR\"\n[listen]\nraft_adr = \"127.0.0.1:1\"\n";
    let stderr = refused_config(unknown_field).await;
    assert!(stderr.contains("listen.raft_adr"), "stderr does not name the unknown field: {stderr}");

    let unknown_mode = "data_dir = \"DATA_DIR\"\n[cluster]\nmode = \"rafty\"\nnode_id = 1\n";
    let stderr = refused_config(unknown_mode).await;
    assert!(stderr.contains("cluster.mode") && stderr.contains("rafty"), "stderr does not name the bad mode: {stderr}");

    // Static configs that cannot work stop start-up naming the field.
    let static_base = "data_dir = \"DATA_DIR\"\n[tls]\ninsecure = true\n[cluster]\nmode = \"static\"\nnode_id = 1\n";
    for (peers_and_timing, field) in [
        ("peers = [{ id = 1, addr = \"127.0.0.1:1\" }, { id = 1, addr = \"127.0.0.1:2\" }]\n", "cluster.peers[1].id"),
        ("peers = [{ id = 2, addr = \"127.0.0.1:1\" }]\n", "node_id 1 is not in the peer list"),
        (
            "peers = [{ id = 1, addr = \"127.0.0.1:1\" }]\nheartbeat_interval = \"5s\"\nfailure_threshold = \"2s\"\n",
            "cluster.failure_threshold",
        ),
    ] {
        let stderr = refused_config(&format!("{static_base}{peers_and_timing}")).await;
        assert!(stderr.contains(field), "static config {peers_and_timing:?}: stderr does not name {field}: {stderr}");
    }
}

/// One raw write to `api` over its own TLS connection.
async fn write_over(api: &str, tls: ClientTlsConfig, request: v1::ClientWriteRequest) -> Result<(), tonic::Status> {
    RaftClientServiceClient::new(channel(api, Some(tls))).handle_client_write(request).await.map(drop)
}

fn status_of(result: Result<v1::CommandResult, ClientError>, what: &str) -> tonic::Status {
    match result {
        Ok(ok) => panic!("{what} was accepted: {ok:?}"),
        Err(ClientError::Status(status)) => status,
        Err(other) => panic!("{what}: expected an error status, got {other}"),
    }
}

/// The node is still up and a normal write works.
async fn still_serving(cluster: &Cluster, after: &str) {
    assert!(cluster.is_running(1), "node 1 died after {after}");
    let result = cluster.client().put("still-serving", after).await;
    result.unwrap_or_else(|err| panic!("a normal put after {after} failed: {err}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_and_the_node_keeps_serving() {
    let options = Options { max_message_bytes: Some(MAX_MESSAGE_BYTES), ..Options::tls() };
    let cluster = Cluster::start(1, options).await;
    still_serving(&cluster, "start-up").await;
    let api = cluster.addrs(1).api.clone();
    let write = v1::ClientWriteRequest {
        client_id: 0,
        sequence: 0,
        op: Some(v1::client_write_request::Op::Put(v1::KvPut { key: "k".into(), value: b"v".to_vec() })),
    };

    // A certificate from another CA fails the TLS handshake (the client sees the connection
    // fail, not a gRPC answer); no certificate at all gets through the handshake (health stays
    // open) but not past the API's certificate check. The real operator, dialing the same way,
    // is served.
    let rogue = RoguePki::new();
    let ca = cluster.pki().expect("a TLS cluster").operator().ca;
    let call = |tls| write_over(&api, tls, write.clone());
    let status = call(rogue.client_tls(&ca)).await.expect_err("a client certificate from another CA was accepted");
    let transport_failure = matches!(status.code(), Code::Unknown | Code::Unavailable | Code::Cancelled);
    assert!(transport_failure && std::error::Error::source(&status).is_some(), "rogue certificate: {status:?}");
    call(cluster.operator_tls().expect("operator TLS")).await.expect("the operator is served");
    still_serving(&cluster, "a rogue certificate").await;
    // The same on the peer port, where even a valid certificate needs the control-plane role.
    let raft = cluster.addrs(1).raft.clone();
    let vote = |tls| {
        let raft = raft.clone();
        async move {
            let mut client = RaftElectionServiceClient::new(channel(&raft, Some(tls)));
            client.request_vote(v1::VoteRequest::default()).await.map(drop)
        }
    };
    let status = vote(rogue.client_tls(&ca)).await.expect_err("a peer certificate from another CA was accepted");
    assert!(matches!(status.code(), Code::Unknown | Code::Unavailable | Code::Cancelled), "rogue peer: {status:?}");
    let status = vote(cluster.operator_tls().expect("operator TLS")).await.expect_err("an operator reached Raft");
    assert_eq!(status.code(), Code::PermissionDenied, "operator on the peer port: {status:?}");
    still_serving(&cluster, "a rogue peer").await;
    let status = call(no_client_cert(&ca)).await.expect_err("a client without a certificate was accepted");
    assert_eq!(status.code(), Code::Unauthenticated, "no certificate: {status:?}");
    still_serving(&cluster, "a client without a certificate").await;

    // An oversized message is refused by the server's decoding limit.
    let big = vec![b'x'; 2 * MAX_MESSAGE_BYTES];
    let status = status_of(cluster.client().put("big", big).await, "a 2 MiB value");
    assert!(matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted), "oversized: {status:?}");
    assert!(status.message().contains("too large"), "unclear message: {}", status.message());
    still_serving(&cluster, "an oversized message").await;
    // A value that fits one message but not twice in one (a watch event with `prev_kv` carries
    // it and the value it replaced), nor one with its log entry's framing, is refused by name,
    // before it reaches the log.
    for (bytes, what) in [(MAX_MESSAGE_BYTES - 512, "a full message"), (MAX_MESSAGE_BYTES / 2 + 1024, "half a message")]
    {
        let status = status_of(cluster.client().put("big", vec![b'x'; bytes]).await, what);
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(
            status.message().contains("too large") && status.message().contains("limits.max_message_bytes"),
            "unclear message: {}",
            status.message()
        );
    }
    let fits = MAX_MESSAGE_BYTES / 2 - MAX_MESSAGE_BYTES / 32 - 1024;
    cluster.client().put("big", vec![b'x'; fits]).await.expect("a value inside the write limit");
    still_serving(&cluster, "a value filling a message").await;

    // Removing a node that is not a member names it.
    let result = cluster.client().update_conf(Change::Remove(v1::NodeIds { node_ids: vec![99] })).await;
    let status = match result {
        Err(ClientError::Status(status)) => status,
        other => panic!("removing node 99: {other:?}"),
    };
    assert_eq!(status.code(), Code::NotFound, "remove 99: {status:?}");
    assert!(status.message().contains("99"), "the error does not name node 99: {}", status.message());
    still_serving(&cluster, "removing an unknown node").await;

    // An empty key is an invalid argument.
    let status = status_of(cluster.client().put("", "v").await, "an empty key");
    assert_eq!(status.code(), Code::InvalidArgument, "empty key: {status:?}");
    assert!(status.message().contains("key must not be empty"), "message: {}", status.message());
    still_serving(&cluster, "an empty key").await;
}
