//! The real `worker-agent`: it registers with a one-time token, pinning the registrar by the
//! CA key in the token, keeps its identity across restarts (a used-up token is no obstacle),
//! refuses a registrar whose chain does not match the pin, renews its certificate before it
//! expires, and stops loudly when renewal keeps failing until expiry.

use std::process::Stdio;
use std::time::Duration;

use anyhow::ensure;
use muster_e2e::config::{free_ports, toml_str};
use muster_e2e::registrar::Registrar;
use muster_e2e::{Cluster, Options, eventually_msg, v1};

const WAIT: Duration = Duration::from_secs(30);

struct Agent {
    dir: tempfile::TempDir,
    admin: String,
    registrar: String,
}

impl Agent {
    fn new(registrar: &Registrar, token: &str) -> Self {
        Self::for_address(&registrar.addr, token)
    }

    fn for_address(registrar: &str, token: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token file");
        let [admin_port] = free_ports::<1>();
        Self { dir, admin: format!("127.0.0.1:{admin_port}"), registrar: registrar.to_string() }
    }

    fn identity_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("identity")
    }

    fn spawn(&self) -> tokio::process::Child {
        let config = format!(
            "data_dir = {}\nadmin_addr = {}\n[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\nservers = [{}]\n\
             token_file = {}\nidentity_dir = {}\nlabels = {{ rack = \"r7\" }}\n",
            toml_str(&self.dir.path().display().to_string()),
            toml_str(&self.admin),
            toml_str(&self.registrar),
            toml_str(&self.dir.path().join("token").display().to_string()),
            toml_str(&self.identity_dir().display().to_string()),
        );
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, config).expect("agent config");
        let mut command = tokio::process::Command::new(muster_e2e::binaries::binary("worker-agent"));
        command.arg("--config").arg(&path).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        muster_e2e::process::without_muster_env(&mut command);
        command.kill_on_drop(true).spawn().expect("spawn worker-agent")
    }

    /// Waits until the agent runs with an identity (its `/metrics` names its worker id).
    /// Not `/readyz`: that needs a heartbeat lease, and these tests run no gateway.
    async fn wait_ready(&self) {
        let admin = self.admin.clone();
        eventually_msg("the agent runs with its identity", WAIT, || {
            let admin = admin.clone();
            async move {
                let metrics = tokio::task::spawn_blocking(move || http_get(&admin, "/metrics")).await??;
                ensure!(metrics.contains("muster_worker_id{"), "no identity yet: {metrics}");
                Ok(())
            }
        })
        .await;
    }

    fn meta(&self) -> serde_json::Value {
        let meta = std::fs::read_to_string(self.identity_dir().join("identity.json")).expect("identity.json");
        serde_json::from_str(&meta).expect("JSON")
    }

    fn worker_id(&self) -> u64 {
        self.meta()["worker_id"].as_u64().expect("worker_id")
    }

    fn cert_expires_at(&self) -> i64 {
        self.meta()["cert_expires_at_unix"].as_i64().expect("cert_expires_at_unix")
    }
}

fn http_get(addr: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

async fn one_use_token(cluster: &Cluster) -> String {
    let request = v1::CreateTokenRequest { ttl_seconds: 600, uses: 1, ..Default::default() };
    cluster.client().create_token(request).await.expect("token").token
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_registers_once_and_reuses_its_identity() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start(&cluster);
    let agent = Agent::new(&registrar, &one_use_token(&cluster).await);

    let mut first = agent.spawn();
    agent.wait_ready().await;
    let id = agent.worker_id();
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(agent.identity_dir().join("key.pem")).expect("key").permissions().mode();
    assert_eq!(key_mode & 0o777, 0o600, "the private key is the owner's alone");
    first.kill().await.expect("kill the agent");

    // The token is spent; a restarted agent must come back on its saved identity.
    let mut second = agent.spawn();
    agent.wait_ready().await;
    assert_eq!(agent.worker_id(), id, "same worker id after a restart");
    let workers = cluster.client().list_workers(v1::ListWorkersRequest::default()).await.expect("list");
    assert_eq!(workers.len(), 1, "a restart registered again: {workers:?}");
    assert_eq!(workers[0].labels.get("rack").map(String::as_str), Some("r7"), "configured labels reach the cluster");
    second.kill().await.expect("kill the agent");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registrar_that_does_not_match_the_pin_is_refused() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start(&cluster);
    let genuine = one_use_token(&cluster).await;
    let mut token = muster_token::decode(&genuine).expect("decode");
    token.ca_pin_sha256 = vec![0xAB; 32];
    let agent = Agent::new(&registrar, &muster_token::encode(&token));

    // Give the registrar time to come up first, so the refusal is the pin, not a refused connection.
    let probe = Agent::new(&registrar, &one_use_token(&cluster).await);
    let mut ok = probe.spawn();
    probe.wait_ready().await;
    ok.kill().await.expect("kill");

    let child = agent.spawn();
    let output =
        tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("the agent gave up in time").expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the agent registered through an unpinned registrar");
    assert!(stderr.contains("pinned by the bootstrap token"), "unclear refusal: {stderr}");
    let tokens = cluster.client().list_tokens(true).await.expect("tokens");
    assert!(
        tokens.iter().any(|t| t.token_id == token.token_id && t.remaining_uses == 1),
        "the refusal spent the token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_waits_for_a_registrar_that_is_not_up_yet() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let [port] = free_ports::<1>();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::for_address(&addr, &one_use_token(&cluster).await);
    let mut child = agent.spawn();

    // The agent logs a failed attempt and keeps going while nothing listens there.
    let stderr = child.stderr.take().expect("piped stderr");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            let _ = lines_tx.send(line);
        }
    });
    let retried = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.recv().await {
            if line.contains("registrar not reachable") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(retried, Ok(true), "the agent never logged a retry");
    assert!(child.try_wait().expect("poll the agent").is_none(), "the agent gave up instead of retrying");
    let _registrar = Registrar::start_at(&cluster, &addr);
    agent.wait_ready().await;
    assert!(agent.worker_id() > 0);
    child.kill().await.expect("kill the agent");
}

/// Certificates this short are renewed 5–8 s after they are issued.
const SHORT_CERTS: &str = "worker_cert_validity = \"10s\"";

#[tokio::test(flavor = "multi_thread")]
async fn the_agent_renews_its_certificate_before_it_expires() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start_with(&cluster, SHORT_CERTS);
    let agent = Agent::new(&registrar, &one_use_token(&cluster).await);
    let mut child = agent.spawn();
    agent.wait_ready().await;
    let (id, first_expiry) = (agent.worker_id(), agent.cert_expires_at());

    let admin = agent.admin.clone();
    let renewed = eventually_msg("the agent renews its certificate", WAIT, || {
        let admin = admin.clone();
        let expiry = agent.cert_expires_at();
        async move {
            ensure!(expiry > first_expiry, "identity.json still expires at {expiry}");
            let metrics = tokio::task::spawn_blocking(move || http_get(&admin, "/metrics")).await??;
            let shown = metrics.lines().find(|line| line.starts_with("muster_worker_cert_expires_at{"));
            ensure!(shown.is_some_and(|line| line.ends_with(&format!(" {expiry}"))), "stale expiry: {metrics}");
            ensure!(!metrics.contains("muster_worker_renewals_total{} 0"), "not counted yet: {metrics}");
            Ok(expiry)
        }
    })
    .await;
    assert_eq!(agent.worker_id(), id, "renewal keeps the worker id");
    let record = cluster.client().worker_action(muster_e2e::WorkerAction::Get, id).await.expect("get");
    assert!(record.cert_expires_at_unix >= renewed, "the control plane saw the renewal: {record:?}");
    assert!(child.try_wait().expect("poll the agent").is_none(), "the agent exited");
    child.kill().await.expect("kill the agent");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_cannot_renew_stops_at_expiry_with_the_way_out() {
    let cluster = Cluster::start(1, Options::tls()).await;
    let registrar = Registrar::start_with(&cluster, SHORT_CERTS);
    let agent = Agent::new(&registrar, &one_use_token(&cluster).await);
    let child = agent.spawn();
    agent.wait_ready().await;
    drop(registrar);

    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the agent outlived its certificate")
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "an expired agent exited cleanly: {stderr}");
    assert!(stderr.contains("certificate renewal failed"), "renewal failures were not logged: {stderr}");
    assert!(stderr.contains("expired") && stderr.contains("fresh bootstrap token"), "no way out given: {stderr}");
}
