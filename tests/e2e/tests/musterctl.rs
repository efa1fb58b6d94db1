//! The operator CLI against a real cluster: `kv put/get` and `cluster status -o json`; and
//! what it says when there is no cluster, or an argument makes no sense.

use std::time::Duration;

use muster_e2e::process::run_musterctl;
use muster_e2e::{Cluster, Options};

/// Runs `musterctl --insecure --endpoints <every node> ARGS`; returns (success, stdout, stderr).
async fn musterctl(cluster: &Cluster, args: &[&str]) -> (bool, String, String) {
    let endpoints: Vec<String> = cluster.ids().into_iter().map(|id| cluster.addrs(id).api.clone()).collect();
    musterctl_at(&endpoints.join(","), "20s", args).await
}

/// Runs `musterctl --insecure --timeout TIMEOUT --endpoints ENDPOINTS ARGS`.
async fn musterctl_at(endpoints: &str, timeout: &str, args: &[&str]) -> (bool, String, String) {
    let flags = ["--insecure", "--timeout", timeout, "--endpoints", endpoints];
    run_musterctl(flags.iter().chain(args), Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn musterctl_puts_gets_and_reports_status() {
    let cluster = Cluster::start(3, Options::default()).await;

    let (ok, stdout, stderr) = musterctl(&cluster, &["kv", "put", "greeting", "hello"]).await;
    assert!(ok, "kv put failed: {stdout}{stderr}");
    let (ok, stdout, stderr) = musterctl(&cluster, &["kv", "get", "greeting"]).await;
    assert!(ok, "kv get failed: {stderr}");
    assert_eq!(stdout.trim(), "hello");
    let (ok, _, stderr) = musterctl(&cluster, &["kv", "get", "no-such-key"]).await;
    assert!(!ok && stderr.contains("not found"), "get of a missing key: {stderr}");

    let (ok, stdout, stderr) = musterctl(&cluster, &["cluster", "status", "-o", "json"]).await;
    assert!(ok, "cluster status failed: {stderr}");
    let status: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    let leader_id = status["leader_id"].as_u64().unwrap_or_else(|| panic!("no leader_id in {status}"));
    assert!(cluster.ids().contains(&leader_id), "leader_id {leader_id} is not a node: {status}");
    assert_eq!(status["members"].as_array().map(Vec::len), Some(3), "members: {status}");

    let (ok, stdout, stderr) = musterctl(&cluster, &["workers", "list", "-o", "json"]).await;
    assert!(ok, "workers list failed: {stderr}");
    let workers: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(workers.as_array().map(Vec::len), Some(0), "a new cluster has no workers: {workers}");
    let (ok, _, stderr) = musterctl(&cluster, &["workers", "drain", "42"]).await;
    assert!(!ok && stderr.contains("no worker 42"), "draining an unknown worker: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_cluster_the_error_names_the_address_it_tried() {
    let [port] = muster_e2e::config::free_ports::<1>();
    let endpoint = format!("127.0.0.1:{port}");
    let (ok, _, stderr) = musterctl_at(&endpoint, "1s", &["cluster", "status"]).await;
    assert!(!ok, "cluster status with nothing listening succeeded");
    assert!(stderr.contains(&endpoint), "the error does not name {endpoint}: {stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_no_worker_is_refused_before_anything_is_sent() {
    let (ok, _, stderr) = musterctl_at("127.0.0.1:1", "1s", &["token", "create", "--uses", "0"]).await;
    assert!(!ok, "token create --uses 0 succeeded");
    assert!(stderr.contains("--uses") && stderr.contains("0"), "the error does not name --uses: {stderr}");
    assert!(!stderr.contains("127.0.0.1:1"), "it tried to connect before checking its arguments: {stderr}");
}

/// `musterctl` with TLS material from a PKI, no `--insecure`.
async fn musterctl_tls(pki_dir: (&str, &str, &str), endpoint: &str, args: &[&str]) -> (bool, String, String) {
    let (ca, cert, key) = pki_dir;
    let flags = ["--timeout", "1s", "--ca", ca, "--cert", cert, "--key", key, "--endpoints", endpoint];
    run_musterctl(flags.iter().chain(args), Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn plaintext_against_tls_and_tls_against_plaintext_say_which_flag_to_change() {
    let tls_cluster = Cluster::start(1, Options::tls()).await;
    let plain_cluster = Cluster::start(1, Options::default()).await;

    let (ok, _, stderr) = musterctl_at(&tls_cluster.addrs(1).api, "1s", &["cluster", "status"]).await;
    assert!(!ok, "--insecure against a TLS node succeeded");
    assert!(
        stderr.contains("expects TLS") && stderr.contains("--insecure"),
        "the error does not say the node wants TLS: {stderr}"
    );

    let operator = tls_cluster.pki().expect("a TLS cluster has a PKI").operator();
    let files = (operator.ca.to_str().unwrap(), operator.cert.to_str().unwrap(), operator.key.to_str().unwrap());
    let (ok, _, stderr) = musterctl_tls(files, &plain_cluster.addrs(1).api, &["cluster", "status"]).await;
    assert!(!ok, "TLS against a plaintext node succeeded");
    assert!(
        stderr.contains("speaks plaintext") && stderr.contains("--insecure"),
        "the error does not say the node is plaintext: {stderr}"
    );
}
