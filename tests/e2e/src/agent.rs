//! A real `worker-agent` process: its own data dir (identity, token file, log), stopped with
//! SIGKILL (a crash) or SIGTERM (a graceful leave), restartable on the same identity.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::ensure;

use crate::config::{free_ports, toml_str};
use crate::eventually_msg;

pub struct Agent {
    dir: tempfile::TempDir,
    pub admin: String,
    registrars: Vec<String>,
    /// Extra lines for the `[cluster]` table (e.g. `labels = { rack = "r7" }`).
    pub cluster_toml: String,
    /// Extra top-level lines of the config (e.g. `profile_refresh = "1s"`).
    pub top_toml: String,
    /// Extra environment of the process (e.g. `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub env: Vec<(String, String)>,
    child: Option<tokio::process::Child>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "--- worker-agent log (last 30 lines)\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Agent {
    /// An agent that will register with `token` at `registrars` (not started yet).
    pub fn new(registrars: &[String], token: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("token"), format!("{token}\n")).expect("token file");
        let [admin_port] = free_ports::<1>();
        Self {
            dir,
            admin: format!("127.0.0.1:{admin_port}"),
            registrars: registrars.to_vec(),
            cluster_toml: String::new(),
            top_toml: String::new(),
            env: Vec::new(),
            child: None,
        }
    }

    pub fn identity_dir(&self) -> PathBuf {
        self.dir.path().join("identity")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process (again, after a stop: same identity dir).
    pub fn start(&mut self) {
        let servers: Vec<String> = self.registrars.iter().map(|r| toml_str(r)).collect();
        let config = format!(
            "data_dir = {}\nadmin_addr = {}\n{}\n[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\nservers = [{}]\n\
             token_file = {}\nidentity_dir = {}\n{}\n",
            toml_str(&self.dir.path().display().to_string()),
            toml_str(&self.admin),
            self.top_toml,
            servers.join(", "),
            toml_str(&self.dir.path().join("token").display().to_string()),
            toml_str(&self.identity_dir().display().to_string()),
            self.cluster_toml,
        );
        let path = self.dir.path().join("agent.toml");
        std::fs::write(&path, config).expect("agent config");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).expect("agent log");
        let mut command = tokio::process::Command::new(crate::binaries::binary("worker-agent"));
        command.arg("--config").arg(&path).stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        crate::process::without_muster_env(&mut command);
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        self.child = Some(command.kill_on_drop(true).spawn().expect("spawn worker-agent"));
    }

    /// SIGKILL: the worker just stops beating.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits (bounded) for the exit status.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("the agent is running");
        let pid = child.id().expect("a running child has a pid");
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .expect("the agent exits within 15s of SIGTERM")
            .expect("wait")
    }

    /// Waits for the process to exit on its own (e.g. after a refusal).
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let child = self.child.as_mut().expect("the agent is running");
        let status = tokio::time::timeout(within, child.wait()).await.expect("the agent exits in time").expect("wait");
        self.child = None;
        status
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// The saved identity's metadata (`identity.json`), once registered.
    pub fn meta(&self) -> Option<serde_json::Value> {
        let meta = std::fs::read_to_string(self.identity_dir().join("identity.json")).ok()?;
        serde_json::from_str(&meta).ok()
    }

    /// The worker id from the saved identity (once registered).
    pub fn worker_id(&self) -> Option<u64> {
        self.meta()?["worker_id"].as_u64()
    }

    /// When the saved certificate expires (unix seconds).
    pub fn cert_expires_at(&self) -> Option<i64> {
        self.meta()?["cert_expires_at_unix"].as_i64()
    }

    /// Waits until the agent runs with an identity (its `/metrics` names its worker id); unlike
    /// [`wait_beating`](Self::wait_beating) this needs no gateway.
    pub async fn wait_identity(&self, within: Duration) -> u64 {
        eventually_msg("the agent runs with its identity", within, || async {
            let metrics = self.metrics().await?;
            ensure!(metrics.contains("muster_worker_id{"), "no identity yet");
            Ok(())
        })
        .await;
        self.worker_id().expect("an agent with an identity saved it")
    }

    /// Waits until the agent's log contains `text`.
    pub async fn wait_log(&self, text: &str, within: Duration) {
        eventually_msg(format!("the agent logs {text:?}"), within, || async {
            ensure!(self.log().contains(text), "not logged yet");
            Ok(())
        })
        .await;
    }

    /// The agent's `/metrics` body.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = crate::probe::admin_get(&self.admin, "/metrics").await?;
        Ok(response.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
    }

    /// The agent's `/status` (its id, lease and drain) as JSON.
    pub async fn status(&self) -> anyhow::Result<serde_json::Value> {
        let response = crate::probe::admin_get(&self.admin, "/status").await?;
        ensure!(response.starts_with("HTTP/1.1 200"), "{response}");
        let body = response.split_once("\r\n\r\n").map(|(_, body)| body).unwrap_or_default();
        Ok(serde_json::from_str(body)?)
    }

    /// Runs `worker-agent drained` with this agent's config, as the node's software would:
    /// (succeeded, stdout, stderr).
    pub async fn mark_drained(&self) -> (bool, String, String) {
        let mut command = tokio::process::Command::new(crate::binaries::binary("worker-agent"));
        command.arg("--config").arg(self.dir.path().join("agent.toml")).arg("drained");
        crate::process::without_muster_env(&mut command);
        let output = tokio::time::timeout(Duration::from_secs(30), command.kill_on_drop(true).output())
            .await
            .expect("worker-agent drained in time")
            .expect("run worker-agent drained");
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
        (output.status.success(), text(&output.stdout), text(&output.stderr))
    }

    /// Waits until the agent has an identity and reports ready (it holds a lease).
    pub async fn wait_beating(&self, within: Duration) -> u64 {
        let admin = self.admin.clone();
        eventually_msg("the agent beats (its /readyz is 200)", within, || {
            let admin = admin.clone();
            async move {
                let response = crate::probe::admin_get(&admin, "/readyz").await?;
                ensure!(response.starts_with("HTTP/1.1 200"), "{}", response.lines().last().unwrap_or(""));
                Ok(())
            }
        })
        .await;
        self.worker_id().expect("a beating agent has an identity")
    }
}
