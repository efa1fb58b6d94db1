//! A real `registrar` process in front of a test cluster (TLS clusters only: it registers with
//! a `registrar` certificate from the cluster's PKI).

use std::process::Stdio;

use muster_tls::Role;

use crate::Cluster;
use crate::config::{free_ports, toml_str};

pub struct Registrar {
    dir: tempfile::TempDir,
    child: tokio::process::Child,
    pub addr: String,
    pub admin: String,
}

impl Drop for Registrar {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("registrar.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- registrar log (last 40 lines)\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
    }
}

/// Registrar TOML lines that lift the per-IP Register limit (see [`Registrar::start_unthrottled`]).
pub const UNTHROTTLED: &str = "register_per_second = 1000000.0\nregister_burst = 1000000\n";

impl Registrar {
    /// Starts a registrar for `cluster` on free loopback ports (burst 8, 1 Register/s per IP).
    pub fn start(cluster: &Cluster) -> Self {
        let [port] = free_ports::<1>();
        Self::start_at(cluster, &format!("127.0.0.1:{port}"))
    }

    /// Starts a registrar serving Register on `addr`.
    pub fn start_at(cluster: &Cluster, addr: &str) -> Self {
        Self::start_configured(cluster, addr, "")
    }

    /// [`start`](Self::start) with extra top-level TOML lines (e.g. `worker_cert_validity`).
    pub fn start_with(cluster: &Cluster, extra_toml: &str) -> Self {
        let [port] = free_ports::<1>();
        Self::start_configured(cluster, &format!("127.0.0.1:{port}"), extra_toml)
    }

    /// A registrar whose per-IP Register limit is far above any test's or benchmark's rate:
    /// fleets register from one loopback address.
    pub fn start_unthrottled(cluster: &Cluster) -> Self {
        Self::start_with(cluster, UNTHROTTLED)
    }

    /// Waits until `/readyz` answers 200: the registrar reaches the control plane and serves
    /// Register.
    pub async fn wait_ready(&self) {
        crate::eventually_msg("the registrar is ready", std::time::Duration::from_secs(30), || async {
            let response = crate::probe::admin_get(&self.admin, "/readyz").await?;
            anyhow::ensure!(response.starts_with("HTTP/1.1 200"), "{}", response.lines().last().unwrap_or(""));
            Ok(())
        })
        .await;
    }

    /// The process id (`None` once it has been reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// A registrar on `addr` with extra top-level TOML lines (e.g. other worker CA files).
    pub fn start_at_with(cluster: &Cluster, addr: &str, extra_toml: &str) -> Self {
        Self::start_configured(cluster, addr, extra_toml)
    }

    /// SIGKILLs the registrar and waits for it to exit (its ports are free afterwards).
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// The registrar's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registrar.log")).unwrap_or_default()
    }

    fn start_configured(cluster: &Cluster, addr: &str, extra_toml: &str) -> Self {
        let pki = cluster.pki().expect("the registrar needs a TLS cluster");
        let files = pki.component(Role::Registrar, "reg-1");
        let [admin_port] = free_ports::<1>();
        let addr = addr.to_string();
        let admin = format!("127.0.0.1:{admin_port}");
        let dir = tempfile::tempdir().expect("temp dir");
        let api: Vec<String> = cluster.ids().into_iter().map(|id| toml_str(&cluster.addrs(id).api)).collect();
        // The tight default rate limit, unless the caller sets its own.
        let rate = if extra_toml.contains("register_per_second") {
            ""
        } else {
            "register_per_second = 1.0\nregister_burst = 8\n"
        };
        let config = format!(
            "worker_grpc_addr = {}\nadmin_addr = {}\ncontrol_plane = [{}]\n{rate}{extra_toml}\n[tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n{}",
            toml_str(&addr),
            toml_str(&admin),
            api.join(", "),
            toml_str(&files.ca.display().to_string()),
            toml_str(&files.cert.display().to_string()),
            toml_str(&files.key.display().to_string()),
            crate::config::TLS_RELOAD_INTERVAL,
        );
        let path = dir.path().join("registrar.toml");
        std::fs::write(&path, config).expect("write config");
        let log = std::fs::File::create(dir.path().join("registrar.log")).expect("log file");
        let mut command = tokio::process::Command::new(crate::binaries::binary("registrar"));
        command.arg("--config").arg(&path).stdin(Stdio::null()).stdout(log.try_clone().expect("log")).stderr(log);
        crate::process::without_muster_env(&mut command);
        command.envs(cluster.options.env.iter().map(|(name, value)| (name, value)));
        let child = command.kill_on_drop(true).spawn().expect("spawn registrar");
        Self { dir, child, addr, admin }
    }
}
