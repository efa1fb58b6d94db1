//! One node's `control-plane` child process: its temporary directory (config, data, log),
//! starting it, SIGKILLing it, and the tail of its log for failure reports.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};

use tempfile::TempDir;

use crate::config::NodeAddrs;

/// A node's files and, while it runs, its process.
pub struct NodeProcess {
    pub addrs: NodeAddrs,
    dir: TempDir,
    child: Mutex<Option<Child>>,
    starts: u32,
    /// Extra environment for the process (after the `MUSTER_*` variables are removed).
    env: Vec<(String, String)>,
    /// A command the process is started under (e.g. `ip netns exec <ns>`), which must exec
    /// it so the pid the harness holds is the node's.
    prefix: Vec<String>,
}

/// A `control-plane` command with no `MUSTER_*` variables inherited (the daemon would read
/// them as configuration, e.g. `MUSTER_BIN_DIR` as an unknown field).
pub fn control_plane_command(config: &Path) -> Command {
    prefixed_control_plane_command(&[], config)
}

/// [`control_plane_command`] run under `prefix` (a program that execs its arguments).
fn prefixed_control_plane_command(prefix: &[String], config: &Path) -> Command {
    let binary = crate::binaries::control_plane();
    let mut command = match prefix.split_first() {
        None => Command::new(binary),
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(binary);
            command
        }
    };
    command.arg("--config").arg(config).stdin(Stdio::null());
    without_muster_env(&mut command);
    command
}

/// Keeps the test's `MUSTER_*` variables away from a child, which would read them as config.
pub fn without_muster_env(command: &mut impl EnvRemove) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("MUSTER_") {
            command.remove_env(&name);
        }
    }
}

/// Both std's and tokio's `Command`.
pub trait EnvRemove {
    fn remove_env(&mut self, name: &std::ffi::OsStr);
}

impl EnvRemove for Command {
    fn remove_env(&mut self, name: &std::ffi::OsStr) {
        self.env_remove(name);
    }
}

impl EnvRemove for tokio::process::Command {
    fn remove_env(&mut self, name: &std::ffi::OsStr) {
        self.env_remove(name);
    }
}

impl NodeProcess {
    /// A node directory holding `config` (TOML text) as `node.toml`; not started yet.
    pub fn new(addrs: NodeAddrs, dir: TempDir, config: &str) -> Self {
        let node = Self { addrs, dir, child: Mutex::new(None), starts: 0, env: Vec::new(), prefix: Vec::new() };
        std::fs::write(node.config_path(), config).expect("writing the node config");
        node
    }

    /// Sets the extra environment of every later start.
    pub fn set_env(&mut self, env: Vec<(String, String)>) {
        self.env = env;
    }

    /// Sets the command every later start runs under (see the `prefix` field).
    pub fn set_prefix(&mut self, prefix: Vec<String>) {
        self.prefix = prefix;
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("node.toml")
    }

    /// The node's temporary directory (config, log, data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(dir: &Path) -> PathBuf {
        dir.join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("node.log")
    }

    /// Starts the process (again, after a kill) with its config and data dir; output is
    /// appended to `node.log`.
    pub fn start(&mut self) {
        assert!(!self.is_running(), "node {} is already running", self.addrs.id);
        self.starts += 1;
        let mut log = OpenOptions::new().create(true).append(true).open(self.log_path()).expect("opening the node log");
        let _ = writeln!(log, "===== e2e: start #{} of node {} =====", self.starts, self.addrs.id);
        let stderr: File = log.try_clone().expect("cloning the log handle");
        let child = prefixed_control_plane_command(&self.prefix, &self.config_path())
            .envs(self.env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|err| panic!("spawning control-plane for node {}: {err}", self.addrs.id));
        *self.child() = Some(child);
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// SIGKILL, then reap. A node that is not running is left alone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The process id while the harness holds a started process.
    pub fn pid(&self) -> Option<u32> {
        self.child().as_ref().map(Child::id)
    }

    /// Whether the process was started and has not exited.
    pub fn is_running(&self) -> bool {
        self.child().as_mut().is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// How the process ended, if the harness started it and it exited on its own (a crash,
    /// or a refused start) rather than by [`kill`](Self::kill).
    pub fn exited(&self) -> Option<ExitStatus> {
        self.child().as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    /// Whether the process was started by the harness and not killed by it (it may have
    /// crashed since; see [`exited`](Self::exited)).
    pub fn is_started(&self) -> bool {
        self.child().is_some()
    }

    /// Whether the last start failed because a port was taken (the ports were free when the
    /// harness picked them, but another process may grab one before the node binds it).
    pub fn port_clash(&self) -> bool {
        self.exited().is_some() && self.log_tail(5).contains("Address already in use")
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_else(|e| format!("<no log: {e}>"));
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `musterctl ARGS` (without the test's `MUSTER_*` variables) until it exits, at most
/// `timeout`; returns (success, stdout, stderr).
pub async fn run_musterctl<I, S>(args: I, timeout: std::time::Duration) -> (bool, String, String)
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = tokio::process::Command::new(crate::binaries::musterctl());
    command.args(args);
    without_muster_env(&mut command);
    let outcome = crate::compose::run(command, timeout).await.unwrap_or_else(|err| panic!("musterctl: {err:#}"));
    (outcome.ok, outcome.stdout, outcome.stderr)
}
