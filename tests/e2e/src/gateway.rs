//! A real `heartbeat-gateway` process in front of a test cluster: free loopback ports, its own
//! temporary directory (config and log), the log tail printed when a test fails, SIGKILL on
//! drop. On a TLS cluster it uses a `gateway` certificate from the cluster's PKI and becomes
//! ready only once a registrar has created the worker CA (start a
//! [`Registrar`](crate::registrar::Registrar) too); on an insecure cluster it runs plaintext
//! and takes the worker id from `x-muster-worker-id` metadata.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use muster_tls::Role;

use crate::Cluster;
use crate::config::{free_ports, toml_str};
use crate::wait::POLL_INTERVAL;

/// How long [`Gateway::wait_ready`] waits (the worker CA, then the first accepted batch).
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines printed when a test fails.
const LOG_TAIL_LINES: usize = 40;

pub struct Gateway {
    dir: tempfile::TempDir,
    child: Mutex<Option<Child>>,
    starts: u32,
    /// Where workers connect (`127.0.0.1:port`; also the advertised address).
    pub addr: String,
    /// The admin HTTP listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: String,
    /// The gateway id it registers with (its `name`).
    pub id: String,
    /// Extra environment (the cluster's [`Options::env`](crate::Options)).
    env: Vec<(String, String)>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway {} log (last {LOG_TAIL_LINES} lines)\n{}", self.id, self.log_tail(LOG_TAIL_LINES));
        }
        self.kill();
    }
}

impl Gateway {
    /// Starts gateway `gw-1` for `cluster` with the default settings.
    pub fn start(cluster: &Cluster) -> Self {
        Self::start_with(cluster, "gw-1", "")
    }

    /// Starts gateway `name` (its id and certificate name) for `cluster`. `extra_toml` is
    /// added to the config as top-level keys (`batch_interval = "100ms"`, `min_report_interval
    /// = "0s"`, ...) and may end with tables of its own (`[telemetry]`); it must not set the
    /// addresses, `gateway_id`, `control_plane` or `[tls]`, which the harness owns.
    pub fn start_with(cluster: &Cluster, name: &str, extra_toml: &str) -> Self {
        let [port, admin_port] = free_ports::<2>();
        let addr = format!("127.0.0.1:{port}");
        let admin = format!("127.0.0.1:{admin_port}");
        let dir = tempfile::Builder::new().prefix("muster-e2e-gateway").tempdir().expect("gateway temp dir");
        let api: Vec<String> = cluster.ids().into_iter().map(|id| toml_str(&cluster.addrs(id).api)).collect();
        let tls = match cluster.pki() {
            Some(pki) => {
                let files = pki.component(Role::Gateway, name);
                format!(
                    "[tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n{}",
                    toml_str(&files.ca.display().to_string()),
                    toml_str(&files.cert.display().to_string()),
                    toml_str(&files.key.display().to_string()),
                    crate::config::TLS_RELOAD_INTERVAL,
                )
            }
            None => "[tls]\ninsecure = true\n".to_string(),
        };
        let config = format!(
            "listen_addr = {addr}\nadvertise_addr = {addr}\nadmin_addr = {admin}\ngateway_id = {id}\n\
             control_plane = [{api}]\n{extra_toml}\n{tls}",
            addr = toml_str(&addr),
            admin = toml_str(&admin),
            id = toml_str(name),
            api = api.join(", "),
        );
        std::fs::write(dir.path().join("gateway.toml"), config).expect("writing the gateway config");
        let env = cluster.options.env.clone();
        let mut gateway = Self { dir, child: Mutex::new(None), starts: 0, addr, admin, id: name.to_string(), env };
        gateway.spawn();
        gateway
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("gateway.toml")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("gateway.log")
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("gateway log");
        let _ = writeln!(log, "===== e2e: start #{} of gateway {} =====", self.starts, self.id);
        let stderr = log.try_clone().expect("cloning the log handle");
        let mut command = Command::new(crate::binaries::binary("heartbeat-gateway"));
        command.arg("--config").arg(self.config_path()).stdin(Stdio::null()).stdout(log).stderr(stderr);
        crate::process::without_muster_env(&mut command);
        command.envs(self.env.iter().map(|(name, value)| (name, value)));
        let child = command.spawn().unwrap_or_else(|err| panic!("spawning heartbeat-gateway {}: {err}", self.id));
        *self.child() = Some(child);
    }

    /// SIGKILL, then reap (no final batch, no goodbye to workers). Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the killed gateway again with the same config, ports and id.
    pub fn restart(&mut self) {
        assert!(!self.is_running(), "gateway {} is still running", self.id);
        self.kill();
        self.spawn();
    }

    /// Whether the process was started and has not exited.
    pub fn is_running(&self) -> bool {
        self.child().as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// The last `lines` lines of the gateway's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("<no log: {e}>"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `GET path` on the admin listener: the whole HTTP response.
    async fn admin_get(&self, path: &str) -> anyhow::Result<String> {
        match crate::probe::admin_get(&self.admin, path).await {
            Ok(response) => Ok(response),
            Err(err) if !self.is_running() => bail!("gateway {} is not running: {err:#}", self.id),
            Err(err) => Err(err.context(format!("gateway {}", self.id))),
        }
    }

    /// Whether `/readyz` answers 200; the error carries the gateway's reason when it does not.
    pub async fn readyz(&self) -> anyhow::Result<()> {
        let response = self.admin_get("/readyz").await?;
        ensure!(
            response.starts_with("HTTP/1.1 200"),
            "gateway {} not ready: {}",
            self.id,
            response.lines().last().unwrap_or("")
        );
        Ok(())
    }

    /// Polls `/readyz` until it answers 200, for at most [`READY_TIMEOUT`]; panics (the log
    /// tail is printed on drop) if the deadline passes or the process exits.
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child().as_mut().and_then(|child| child.try_wait().ok().flatten()) {
                panic!("gateway {} exited ({status}) before it was ready", self.id);
            }
            let last = match self.readyz().await {
                Ok(()) => return,
                Err(err) => format!("{err:#}"),
            };
            assert!(
                tokio::time::Instant::now() + POLL_INTERVAL < deadline,
                "gateway {} not ready after {READY_TIMEOUT:?}: {last}",
                self.id
            );
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let response = self.admin_get("/metrics").await?;
        ensure!(response.starts_with("HTTP/1.1 200"), "gateway {}: /metrics answered {response}", self.id);
        let (_, body) = response.split_once("\r\n\r\n").context("an HTTP response without a body")?;
        Ok(body.to_string())
    }

    /// One series of `/metrics` (e.g. `muster_gateway_connected_workers`).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics().await?;
        crate::probe::metric_value(&text, name)
            .with_context(|| format!("gateway {}: no series {name} in /metrics", self.id))
    }
}
