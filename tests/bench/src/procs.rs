//! Child processes the benchmark owns, free loopback ports, per-process CPU time and memory,
//! and the file-descriptor limit (the fleet benchmark holds one socket per simulated worker).
//!
//! [`Processes`] kills (SIGKILL) and reaps every child it holds when dropped, so a panic, an
//! early `?` or a Ctrl-C that drops the benchmark future never leaves servers behind. Only a
//! SIGKILL of the benchmark itself can orphan them.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// One spawned server, where its output goes, and how to start it again.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    program: std::ffi::OsString,
    args: Vec<std::ffi::OsString>,
    scrub_env_prefix: String,
}

/// The children of one cluster; killed and reaped on drop.
#[derive(Default)]
pub struct Processes {
    procs: Vec<Proc>,
}

impl Processes {
    /// Starts `command` with stdout and stderr appended to `log`, and the variables whose
    /// names start with `scrub_env_prefix` removed (they would override the configuration).
    pub fn spawn(&mut self, name: &str, command: Command, log: &Path, scrub_env_prefix: &str) -> anyhow::Result<()> {
        let out = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let program = command.get_program().to_os_string();
        let args = command.get_args().map(|arg| arg.to_os_string()).collect();
        let child = start(name, command, out, scrub_env_prefix)?;
        self.procs.push(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            program,
            args,
            scrub_env_prefix: scrub_env_prefix.to_string(),
        });
        Ok(())
    }

    /// SIGKILLs child `index` and reaps it.
    pub fn kill(&mut self, index: usize) {
        let proc = &mut self.procs[index];
        let _ = proc.child.kill();
        let _ = proc.child.wait();
    }

    /// Starts child `index` again with the same program and arguments, appending to its log.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        let proc = &mut self.procs[index];
        let out =
            File::options().append(true).open(&proc.log).with_context(|| format!("opening {}", proc.log.display()))?;
        let mut command = Command::new(&proc.program);
        command.args(&proc.args);
        proc.child = start(&proc.name, command, out, &proc.scrub_env_prefix)?;
        Ok(())
    }

    /// Fails, with the tail of its log, if any child has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for proc in &mut self.procs {
            if let Some(status) = proc.child.try_wait()? {
                anyhow::bail!("{} exited early ({status}); last log lines:\n{}", proc.name, log_tail(&proc.log, 20));
            }
        }
        Ok(())
    }

    /// Process ids, for CPU accounting.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.child.id()).collect()
    }

    /// The tails of every child's log, for error messages.
    pub fn log_tails(&self, lines: usize) -> String {
        self.procs
            .iter()
            .map(|p| format!("--- {} ({})\n{}", p.name, p.log.display(), log_tail(&p.log, lines)))
            .collect()
    }

    /// Kills and reaps every child now.
    pub fn kill_all(&mut self) {
        for proc in &mut self.procs {
            let _ = proc.child.kill();
        }
        for mut proc in self.procs.drain(..) {
            let _ = proc.child.wait();
        }
    }
}

/// Spawns `command` with stdout and stderr to `out`, scrubbing the overriding variables.
fn start(name: &str, mut command: Command, out: File, scrub_env_prefix: &str) -> anyhow::Result<Child> {
    let err = out.try_clone()?;
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(scrub_env_prefix) {
            command.env_remove(key);
        }
    }
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    command.spawn().with_context(|| format!("starting {name} ({:?})", command.get_program()))
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// The last `lines` lines of a log file (empty if unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].iter().map(|line| format!("{line}\n")).collect()
}

/// `n` distinct free TCP ports on 127.0.0.1 (held together while picking, so no duplicates).
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?.port())).collect()
}

/// User + system CPU time of `pid` so far, in seconds (Linux `/proc`; 0 elsewhere).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // USER_HZ is 100 on every mainstream Linux configuration.
    cpu_ticks(&stat).unwrap_or(0) as f64 / 100.0
}

/// utime + stime (fields 14 and 15) of a `/proc/<pid>/stat` line. The command name (field 2)
/// is parenthesised and may hold spaces, so fields are counted after its closing parenthesis.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(field(14)? + field(15)?)
}

/// Sum of [`cpu_seconds`] over `pids`.
pub fn total_cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(*pid)).sum()
}

/// Busy CPU seconds of the whole machine so far, all cores (`/proc/stat`: everything but
/// idle and iowait; 0 elsewhere).
pub fn machine_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    busy_ticks(&stat).unwrap_or(0) as f64 / 100.0
}

fn busy_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|t| t.parse().unwrap_or(0)).collect();
    let total: u64 = ticks.iter().take(8).sum();
    Some(total - ticks.get(3)? - ticks.get(4)?)
}

/// Resident memory of `pid` in bytes (`VmRSS` of `/proc/<pid>/status`; 0 if unreadable).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    vm_rss_kib(&status).unwrap_or(0) * 1024
}

fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Live children of this process whose executable is named `name` (from `/proc`: the parent
/// pid in `stat`, the file name of the first `cmdline` argument). For processes another
/// harness started, whose handles do not expose their pid.
pub fn children_named(name: &str) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            parent_pid(&stat) == Some(me) && {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let program = cmdline.split(|b| *b == 0).next().unwrap_or_default();
                Path::new(&*String::from_utf8_lossy(program)).file_name().is_some_and(|n| n == name)
            }
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The parent pid (field 4) of a `/proc/<pid>/stat` line.
fn parent_pid(stat: &str) -> Option<u32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Raises this process's soft limit on open files to at least `wanted` (and the hard limit
/// with it when allowed, as root); children started afterwards inherit it. Returns the soft
/// limit in force.
pub fn raise_open_files(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current >= wanted {
        return current;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    let raised = Rlimit { current: Some(wanted), maximum: Some(hard.max(wanted)) };
    if setrlimit(Resource::Nofile, raised).is_err() {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(6).unwrap();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }

    #[test]
    fn status_and_stat_fields() {
        assert_eq!(vm_rss_kib("Name:\tx\nVmPeak:\t 9 kB\nVmRSS:\t   2048 kB\n"), Some(2048));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(parent_pid("4242 (control plane) S 17 2 3"), Some(17));
        // user nice system idle iowait irq softirq steal guest guest_nice
        assert_eq!(busy_ticks("cpu  10 1 5 100 7 2 3 0 9 9\ncpu0 1 1 1 1 1 1 1 1 0 0\n"), Some(21));
        assert!(rss_bytes(std::process::id()) > 0);
        assert!(raise_open_files(64) >= 64);
    }

    #[test]
    fn cpu_ticks_skip_the_command_name() {
        let stat = "4242 (control plane) S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 8 0 100 0 0";
        assert_eq!(cpu_ticks(stat), Some(281));
        assert_eq!(cpu_ticks("garbage"), None);
    }
}
