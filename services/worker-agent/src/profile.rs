//! What this host reports about itself when it registers.

use std::collections::HashMap;

use muster_proto::v1;

/// `hostname`, OS/arch, configured labels, CPU and memory capacity, agent version.
pub fn local(hostname: &str, labels: &HashMap<String, String>) -> v1::WorkerProfile {
    let mut capacity = HashMap::new();
    if let Ok(cpus) = std::thread::available_parallelism() {
        capacity.insert("cpu_millis".to_string(), cpus.get() as u64 * 1000);
    }
    if let Some(bytes) = memory_bytes() {
        capacity.insert("memory_bytes".to_string(), bytes);
    }
    v1::WorkerProfile {
        hostname: hostname.to_owned(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        labels: labels.clone(),
        capacity,
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

fn memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_profile_carries_the_name_labels_and_capacity() {
        let profile = super::local("rack7-a", &[("rack".to_string(), "r1".to_string())].into());
        assert_eq!(profile.hostname, "rack7-a");
        assert_eq!(profile.labels.get("rack").map(String::as_str), Some("r1"));
        assert!(profile.capacity.get("cpu_millis").is_some_and(|c| *c >= 1000));
    }
}
