//! The real `worker-agent`: it registers with a one-time token, pinning the registrar by the
//! CA key in the token, keeps its identity across restarts (a used-up token is no obstacle),
//! and refuses a registrar whose chain does not match the pin.

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

    async fn wait_ready(&self) {
        let admin = self.admin.clone();
        eventually_msg("the agent is ready", WAIT, || {
            let admin = admin.clone();
            async move {
                let ready = tokio::task::spawn_blocking(move || muster_admin::health_probe(&admin)).await?;
                ensure!(ready == std::process::ExitCode::SUCCESS, "not ready");
                Ok(())
            }
        })
        .await;
    }

    fn worker_id(&self) -> u64 {
        let meta = std::fs::read_to_string(self.identity_dir().join("identity.json")).expect("identity.json");
        let meta: serde_json::Value = serde_json::from_str(&meta).expect("JSON");
        meta["worker_id"].as_u64().expect("worker_id")
    }
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
