//! What this host reports about itself: its name, OS/arch, configured labels, agent version,
//! and its capacity: the CPU and memory the agent measures, plus what an optional capacity
//! file adds (`gpus = 2`, written by whatever knows: a provisioning script, a device plugin).
//!
//! The profile is measured at registration and again every `profile_refresh` while the agent
//! runs; the heartbeat sends it on the first report of each stream and then only when it
//! changed, so a steady worker sends it once per stream and a changed one reaches the cluster
//! on its next beat.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use muster_proto::v1;

/// Where the profile comes from.
#[derive(Clone, Debug)]
pub struct ProfileSource {
    pub hostname: String,
    pub labels: HashMap<String, String>,
    /// TOML of `name = amount` (non-negative integers), merged over the measured capacity.
    pub capacity_file: Option<PathBuf>,
}

impl ProfileSource {
    /// Measures the profile now. A capacity file that cannot be read or parsed, or a profile
    /// over the limits the cluster enforces, is an error naming the cause.
    pub fn measure(&self) -> anyhow::Result<v1::WorkerProfile> {
        let mut profile = local(&self.hostname, &self.labels);
        if let Some(path) = &self.capacity_file {
            profile.capacity.extend(read_capacity_file(path)?);
        }
        muster_proto::limits::validate_profile(&profile)
            .with_context(|| "the profile this worker would report breaks a cluster limit")?;
        Ok(profile)
    }
}

/// The profile as the heartbeat sends it: measured again every `refresh`, sent whole on each
/// stream's first report, then only when it changed.
#[derive(Debug)]
pub struct Profile {
    current: v1::WorkerProfile,
    /// None: never measured again (tests).
    source: Option<ProfileSource>,
    refresh: Duration,
    measured_at: Instant,
    /// What this stream has sent (None: nothing yet).
    sent: Option<v1::WorkerProfile>,
}

impl Profile {
    pub fn new(current: v1::WorkerProfile, source: ProfileSource, refresh: Duration) -> Self {
        Self { current, source: Some(source), refresh, measured_at: Instant::now(), sent: None }
    }

    /// A profile that never changes.
    pub fn fixed(current: v1::WorkerProfile) -> Self {
        Self { current, source: None, refresh: Duration::MAX, measured_at: Instant::now(), sent: None }
    }

    pub fn current(&self) -> &v1::WorkerProfile {
        &self.current
    }

    /// The profile for the next report: the whole profile on a stream's first (`full`), else
    /// the profile only if it changed since this stream last sent it.
    pub fn for_report(&mut self, full: bool) -> Option<v1::WorkerProfile> {
        self.measure_if_due();
        if full || self.sent.as_ref() != Some(&self.current) {
            if !full {
                tracing::info!(capacity = ?self.current.capacity, "this worker's profile changed; sending it");
            }
            self.sent = Some(self.current.clone());
            return self.sent.clone();
        }
        None
    }

    fn measure_if_due(&mut self) {
        let Some(source) = &self.source else { return };
        if self.measured_at.elapsed() < self.refresh {
            return;
        }
        self.measured_at = Instant::now();
        match source.measure() {
            Ok(profile) => self.current = profile,
            Err(err) => tracing::warn!(
                error = %format!("{err:#}"),
                "cannot measure this worker's profile; the cluster keeps the last one sent"
            ),
        }
    }
}

/// `name = amount` entries of a capacity file.
pub fn read_capacity_file(path: &Path) -> anyhow::Result<HashMap<String, u64>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading capacity_file {}", path.display()))?;
    toml::from_str(&text).with_context(|| {
        format!("capacity_file {}: expected lines of `name = amount` (a whole number ≥ 0)", path.display())
    })
}

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
    use super::*;

    #[test]
    fn the_profile_carries_the_name_labels_and_capacity() {
        let profile = local("rack7-a", &[("rack".to_string(), "r1".to_string())].into());
        assert_eq!(profile.hostname, "rack7-a");
        assert_eq!(profile.labels.get("rack").map(String::as_str), Some("r1"));
        assert!(profile.capacity.get("cpu_millis").is_some_and(|c| *c >= 1000));
    }

    #[test]
    fn a_capacity_file_adds_to_the_measured_capacity_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capacity.toml");
        let source = ProfileSource { hostname: "h".into(), labels: HashMap::new(), capacity_file: Some(path.clone()) };
        std::fs::write(&path, "gpus = 2\ncpu_millis = 500\n").unwrap();
        let profile = source.measure().unwrap();
        assert_eq!((profile.capacity["gpus"], profile.capacity["cpu_millis"]), (2, 500), "the file wins");

        std::fs::write(&path, "gpus = -1\n").unwrap();
        let err = format!("{:#}", source.measure().unwrap_err());
        assert!(err.contains("capacity.toml") && err.contains("whole number"), "{err}");
        let many: String = (0..40).map(|i| format!("r{i} = 1\n")).collect();
        std::fs::write(&path, many).unwrap();
        let err = format!("{:#}", source.measure().unwrap_err());
        assert!(err.contains("limit"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert!(format!("{:#}", source.measure().unwrap_err()).contains("reading capacity_file"));
    }

    #[test]
    fn a_steady_profile_is_sent_once_per_stream_and_a_change_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("capacity.toml");
        std::fs::write(&path, "gpus = 1\n").unwrap();
        let source = ProfileSource { hostname: "h".into(), labels: HashMap::new(), capacity_file: Some(path.clone()) };
        let mut profile = Profile::new(source.measure().unwrap(), source, Duration::ZERO);
        assert!(profile.for_report(true).is_some(), "a stream's first report carries it");
        assert!(profile.for_report(false).is_none() && profile.for_report(false).is_none(), "steady: not again");
        std::fs::write(&path, "gpus = 2\n").unwrap();
        let changed = profile.for_report(false).expect("the change is sent");
        assert_eq!(changed.capacity["gpus"], 2);
        assert!(profile.for_report(false).is_none(), "once");
        std::fs::write(&path, "gpus = oops\n").unwrap();
        assert!(profile.for_report(false).is_none(), "a bad file keeps the last profile");
        assert_eq!(profile.current().capacity["gpus"], 2);
        assert!(profile.for_report(true).is_some(), "a new stream sends it whole again");
    }
}
