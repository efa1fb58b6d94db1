//! What the results depend on, printed above them: cores, CPU model, memory, kernel, and the
//! filesystem the data directories (and so every fsync) live on.

use std::path::Path;

/// Prints what every benchmark's output starts with: its name, the command that reproduces
/// it, and [`describe`]'s lines for the machine and `data_dir`.
pub fn print_header(bench: &str, data_dir: &Path) {
    let command: Vec<String> = std::env::args().skip(1).collect();
    println!("muster-bench {bench}");
    println!("command: cargo run --release -p muster-bench -- {}", command.join(" "));
    for line in describe(data_dir) {
        println!("{line}");
    }
}

/// Logical cores available to this process (`nproc`).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn first_value(path: &str, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.starts_with(key))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The filesystem type of the mount holding `path` (`ext4`, `tmpfs`, ...), from `/proc/mounts`.
pub fn filesystem_of(path: &Path) -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    let path = path.canonicalize().ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let mount_point = fields.next()?;
            let fs_type = fields.next()?;
            path.starts_with(mount_point).then(|| (mount_point.len(), fs_type.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs_type)| fs_type)
}

/// One line per fact, for the report header.
pub fn describe(data_dir: &Path) -> Vec<String> {
    let cpu = first_value("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".into());
    let memory = first_value("/proc/meminfo", "MemTotal")
        .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or("unknown".to_string(), |kb| format!("{:.1} GiB", kb as f64 / (1024.0 * 1024.0)));
    let kernel: String =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").map_or("unknown".into(), |k| k.trim().into());
    let fs = filesystem_of(data_dir).unwrap_or_else(|| "unknown fs".into());
    let load: String = std::fs::read_to_string("/proc/loadavg")
        .map_or("unknown".into(), |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    let mut lines = vec![
        format!("nproc: {}  cpu: {cpu}  memory: {memory}  kernel: {kernel}", cores()),
        format!("load average before the run: {load} (other work on the machine skews the results)"),
        format!("data dirs: {} ({fs})", data_dir.display()),
    ];
    if fs == "tmpfs" || fs == "ramfs" {
        lines.push("warning: the data dirs are in memory; fsync costs nothing there".into());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_has_a_filesystem() {
        if Path::new("/proc/mounts").exists() {
            assert!(filesystem_of(Path::new("/")).is_some());
        }
        assert!(cores() >= 1);
    }
}
