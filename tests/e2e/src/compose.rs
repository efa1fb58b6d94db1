//! The `compose.yaml` stack as a test fixture: started the way the README says
//! (`deploy/scripts/compose-up.sh`), under its own project name and on free host ports so it
//! never collides with a stack the user runs, and torn down (`down -v`) when the handle drops,
//! which happens on a failed assertion too (the panic unwinds through it).
//!
//! The images must exist (`deploy/scripts/build-images.sh`; `tests/run.sh` builds them first).
//! Works with Compose v2 (`docker compose`) and v1.29 (`docker-compose`), like the script.
//!
//! Reaching the stack: the host `musterctl` over the published control-plane ports; any
//! container by its bridge-network address (the host routes to Docker's bridges); and a
//! container cut off from the network through a one-off `musterctl` container that shares its
//! network namespace (`--network container:ID`), so it talks to the node over loopback.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tempfile::TempDir;

use crate::config::free_ports;

/// The images the stack runs, as `muster/<name>:dev`.
pub const IMAGES: [&str; 5] = ["control-plane", "registrar", "heartbeat-gateway", "worker-agent", "musterctl"];

/// The repository root (where `compose.yaml` is).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

/// `docker compose` when the v2 plugin is there, else `docker-compose`.
pub fn compose_program() -> Vec<String> {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if v2 { vec!["docker".into(), "compose".into()] } else { vec!["docker-compose".into()] }
}

/// Output of a finished command: success and stdout + stderr.
#[derive(Debug)]
pub struct Outcome {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `command` to completion (at most `timeout`).
pub async fn run(mut command: tokio::process::Command, timeout: Duration) -> anyhow::Result<Outcome> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let shown = format!("{:?}", command.as_std());
    let output = tokio::time::timeout(timeout, command.output())
        .await
        .with_context(|| format!("{shown} did not finish in {timeout:?}"))?
        .with_context(|| format!("cannot run {shown}"))?;
    Ok(Outcome {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}

/// Runs `docker ARGS`; an error when it fails.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new("docker");
    command.args(args);
    let outcome = run(command, Duration::from_secs(120)).await?;
    if !outcome.ok {
        bail!("docker {}: {}", args.join(" "), outcome.text().trim());
    }
    Ok(outcome.stdout)
}

/// A running stack; `down -v` on drop.
pub struct ComposeStack {
    project: String,
    compose: Vec<String>,
    root: PathBuf,
    api_ports: [u16; 3],
    extra_env: Vec<(String, String)>,
    local_dir: TempDir,
}

impl ComposeStack {
    /// Starts the stack with `compose-up.sh UP_ARGS` (which waits until every container is
    /// healthy); `env` adds variables for compose (e.g. an OTLP endpoint).
    pub async fn up(up_args: &[&str], env: &[(&str, &str)]) -> Self {
        missing_images_are_fatal().await;
        let stack = Self {
            project: format!("mustere2e{}", std::process::id()),
            compose: compose_program(),
            root: repo_root(),
            api_ports: free_ports::<3>(),
            extra_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            local_dir: tempfile::Builder::new().prefix("muster-compose-").tempdir().expect("a temp dir"),
        };
        let mut command = tokio::process::Command::new("bash");
        command.arg(stack.root.join("deploy/scripts/compose-up.sh")).args(up_args);
        stack.apply_env(&mut command);
        let outcome =
            run(command, Duration::from_secs(300)).await.unwrap_or_else(|err| panic!("compose-up.sh: {err:#}"));
        if !outcome.ok {
            let logs = stack.compose_output(&["logs", "--no-color", "--tail", "40"]).await;
            panic!("compose-up.sh failed:\n{}\n--- logs ---\n{logs}", outcome.text());
        }
        stack
    }

    fn apply_env(&self, command: &mut tokio::process::Command) {
        command
            .current_dir(&self.root)
            .env("COMPOSE_PROJECT_NAME", &self.project)
            .env("MUSTER_LOCAL_DIR", self.local_dir.path());
        for (i, port) in self.api_ports.iter().enumerate() {
            command.env(format!("MUSTER_API_PORT_{}", i + 1), port.to_string());
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    /// The project's default network (`<project>_default`).
    pub fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// The published control-plane API ports, node 1 to 3.
    pub fn api_ports(&self) -> [u16; 3] {
        self.api_ports
    }

    /// What compose-up.sh copied out of the pki volume: ca.pem, operator.pem, operator-key.pem.
    pub fn tls_dir(&self) -> PathBuf {
        self.local_dir.path().join("tls")
    }

    /// The directory the README's `.muster-local/compose` stands for in this stack.
    pub fn local_dir(&self) -> &Path {
        self.local_dir.path()
    }

    /// `--endpoints` for the host's musterctl: every published API port.
    pub fn endpoints(&self) -> String {
        self.api_ports.iter().map(|port| format!("127.0.0.1:{port}")).collect::<Vec<_>>().join(",")
    }

    /// A compose command for this project (`compose ARGS`), environment applied.
    pub fn compose_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.compose[0]);
        command.args(&self.compose[1..]).args(args);
        self.apply_env(&mut command);
        command
    }

    /// `bash -c LINE` in the repository root with the project's environment, so a `compose`
    /// command in `line` addresses this stack.
    pub fn bash(&self, line: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("bash");
        command.arg("-c").arg(line);
        self.apply_env(&mut command);
        command
    }

    /// Runs `compose ARGS`; an error when it fails.
    pub async fn compose(&self, args: &[&str]) -> anyhow::Result<String> {
        let outcome = run(self.compose_command(args), Duration::from_secs(300)).await?;
        if !outcome.ok {
            bail!("compose {}: {}", args.join(" "), outcome.text().trim());
        }
        Ok(outcome.stdout)
    }

    async fn compose_output(&self, args: &[&str]) -> String {
        match run(self.compose_command(args), Duration::from_secs(60)).await {
            Ok(outcome) => outcome.text(),
            Err(err) => format!("{err:#}"),
        }
    }

    /// The tail of one service's logs, for failure messages.
    pub async fn logs(&self, service: &str) -> String {
        self.compose_output(&["logs", "--no-color", "--tail", "60", service]).await
    }

    /// The ids of a service's containers (running or not), in a stable order.
    pub async fn containers(&self, service: &str) -> Vec<String> {
        let out = self.compose(&["ps", "-a", "-q", service]).await.unwrap_or_else(|err| panic!("{err:#}"));
        let mut ids: Vec<String> = out.lines().map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect();
        ids.sort();
        ids
    }

    /// The one container of a single-replica service (`control-plane-2`, `registrar`).
    pub async fn container(&self, service: &str) -> String {
        let ids = self.containers(service).await;
        assert_eq!(ids.len(), 1, "{service} should have one container: {ids:?}");
        ids[0].clone()
    }

    /// A container's address on the project network.
    pub async fn ip(&self, container: &str) -> anyhow::Result<IpAddr> {
        let format = format!("{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}", self.network());
        let out = docker(&["inspect", "-f", &format, container]).await?;
        out.trim().parse().with_context(|| format!("no address of {container} on {}: {out:?}", self.network()))
    }

    /// `docker inspect -f FORMAT container`, trimmed.
    pub async fn inspect(&self, container: &str, format: &str) -> anyhow::Result<String> {
        Ok(docker(&["inspect", "-f", format, container]).await?.trim().to_owned())
    }

    /// Runs the host's musterctl with the operator certificate against every published port.
    pub async fn musterctl(&self, args: &[&str]) -> Outcome {
        let mut command = tokio::process::Command::new(crate::binaries::musterctl());
        command.arg("--tls-dir").arg(self.tls_dir()).arg("--endpoints").arg(self.endpoints()).args(args);
        crate::process::without_muster_env(&mut command);
        run(command, Duration::from_secs(60)).await.unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// Like [`Self::musterctl`] but must succeed; returns stdout.
    pub async fn musterctl_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let outcome = self.musterctl(args).await;
        if !outcome.ok {
            bail!("musterctl {}: {}", args.join(" "), outcome.text().trim());
        }
        Ok(outcome.stdout)
    }

    /// musterctl in a one-off container inside `container`'s network namespace, talking to
    /// `127.0.0.1:3669` only: how to reach a node that is cut off from the network.
    pub async fn musterctl_inside(&self, container: &str, args: &[&str]) -> Outcome {
        let network = format!("container:{container}");
        let pki = format!("{}_pki:/etc/muster/tls:ro", self.project);
        let mut command = tokio::process::Command::new("docker");
        command.args(["run", "--rm", "--network", &network, "-v", &pki, "muster/musterctl:dev"]);
        command.args(["--tls-dir", "/etc/muster/tls", "--endpoints", "127.0.0.1:3669"]).args(args);
        run(command, Duration::from_secs(90)).await.unwrap_or_else(|err| panic!("{err:#}"))
    }
}

impl Drop for ComposeStack {
    fn drop(&mut self) {
        let mut command = Command::new(&self.compose[0]);
        command.args(&self.compose[1..]).args([
            "--profile",
            "tools",
            "down",
            "-v",
            "--remove-orphans",
            "--timeout",
            "5",
        ]);
        command.current_dir(&self.root).env("COMPOSE_PROJECT_NAME", &self.project);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        match command.output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!("compose down of {}: {}", self.project, String::from_utf8_lossy(&output.stderr)),
            Err(err) => eprintln!("cannot run compose down for {}: {err}", self.project),
        }
    }
}

/// Fails the test at once, saying how to build them, when an image is missing.
async fn missing_images_are_fatal() {
    let mut missing = Vec::new();
    for image in IMAGES {
        let reference = format!("muster/{image}:dev");
        if docker(&["image", "inspect", &reference]).await.is_err() {
            missing.push(reference);
        }
    }
    assert!(
        missing.is_empty(),
        "images missing: {missing:?}; build them with deploy/scripts/build-images.sh (tests/run.sh does it first)"
    );
}
