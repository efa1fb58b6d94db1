//! What a newcomer meets in the first minutes, run the way they would run it: an agent
//! started with flags only, a second agent on a host, a failing binary's message, and a raft
//! node whose peers are not up yet.

use std::process::Stdio;
use std::time::Duration;

use muster_e2e::binaries::binary;
use muster_e2e::probe::admin_get;
use muster_e2e::{Cluster, Options, eventually_msg};

/// Runs `program ARGS` in `dir` until it exits (30 s at most); returns (exit code, stderr).
async fn run_to_exit(program: &str, dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(binary(program));
    command.args(args).current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MUSTER_") || name == "RUST_LOG" {
            command.env_remove(name);
        }
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} did not exit in 30 s"))
        .expect("running the binary");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_flags_only_needs_no_config_file_and_says_its_error_once() {
    let dir = tempfile::tempdir().unwrap();
    // No --config: the mode is the agent's own. What stops it now is the token file, named.
    let (code, stderr) =
        run_to_exit("worker-agent", dir.path(), &["--server", "127.0.0.1:1", "--token-file", "no-such-token"]).await;
    assert_ne!(code, Some(0), "an agent without a token file started");
    assert!(!stderr.contains("missing field"), "flags alone are not a whole config: {stderr}");
    assert!(stderr.contains("no-such-token"), "the error does not name the token file: {stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "the error is printed more than once: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_agent_on_a_host_is_told_which_setting_holds_the_port() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "not a token").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().to_string();
    // The admin port is bound before the token is read, as a second agent on a host meets it.
    let config = dir.path().join("agent.toml");
    let toml = format!(
        "admin_addr = \"{taken}\"\n[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\n\
         servers = [\"127.0.0.1:1\"]\ntoken_file = \"token\"\n"
    );
    std::fs::write(&config, toml).unwrap();
    let (code, stderr) = run_to_exit("worker-agent", dir.path(), &["--config", config.to_str().unwrap()]).await;
    assert_ne!(code, Some(0), "a second agent on a taken admin port started");
    assert!(
        stderr.contains(&format!("cannot listen on admin_addr {taken}: address in use")),
        "the error does not name admin_addr: {stderr}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raft_node_alone_says_which_peers_it_waits_for() {
    let mut cluster = Cluster::spawn(3, Options::default());
    cluster.kill(2);
    cluster.kill(3);
    let (peer2, peer3) = (cluster.addrs(2).raft.clone(), cluster.addrs(3).raft.clone());
    let admin = cluster.addrs(1).admin.clone();
    // First it waits for the peers to answer, then (with none) it says a leader needs two of
    // the three voters and names the two it waits for; /readyz and GetClusterMetadata agree.
    let reason = eventually_msg("node 1 says it waits for a majority", Duration::from_secs(30), || async {
        let response = admin_get(&admin, "/readyz").await?;
        anyhow::ensure!(response.contains("no leader"), "not yet: {response}");
        Ok(response)
    })
    .await;
    for needle in ["needs 2 of the voters 1, 2, 3", &format!("2 ({peer2})"), &format!("3 ({peer3})")] {
        assert!(reason.contains(needle), "/readyz does not say {needle:?}: {reason}");
    }
    let meta = cluster.metadata_of(1).await.expect("metadata of node 1");
    assert!(!meta.ready, "a node without a leader says it is ready");
    assert!(meta.not_ready_reason.contains(&format!("2 ({peer2})")), "metadata: {meta:?}");
    assert!(cluster.log_text(1).contains("not ready: no leader"), "the node's log does not say why it waits");
    let api = cluster.addrs(1).api.clone();
    let status = tokio::process::Command::new(binary("musterctl"))
        .args(["--insecure", "--timeout", "5s", "--endpoints", &api, "cluster", "status"])
        .output()
        .await
        .expect("running musterctl");
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("not ready: no leader: a leader needs 2"), "cluster status does not say why: {stdout}");
}
