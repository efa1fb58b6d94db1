//! `[worker_gc]`: how long the control plane keeps the records of workers that are gone. Left,
//! revoked and unreachable workers are removed once they have been so for `threshold` (the
//! time of their last state change), by the leader, at most `max_per_round` every `interval`,
//! so a wave of autoscaled-away workers never becomes one huge write. Worker ids are never
//! reused, so a removed worker's certificate cannot come back as someone else.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::mode::positive;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerGc {
    /// How long a worker stays Left, Revoked or Unreachable before its record is removed.
    /// Default 24h; `0s` turns collection off.
    #[serde(with = "humantime_serde")]
    pub threshold: Duration,
    /// How often the leader looks. Default 1m.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Most records removed per look (one Raft entry). Default 500.
    pub max_per_round: u32,
}

impl Default for WorkerGc {
    fn default() -> Self {
        Self { threshold: Duration::from_secs(24 * 3600), interval: Duration::from_secs(60), max_per_round: 500 }
    }
}

/// The most records one round may remove: each becomes a watch event in one history record.
pub const MAX_GC_PER_ROUND: u32 = 5_000;

impl WorkerGc {
    /// Whether collection runs at all.
    pub fn enabled(&self) -> bool {
        !self.threshold.is_zero()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("worker_gc.interval", self.interval)?;
        if self.max_per_round == 0 || self.max_per_round > MAX_GC_PER_ROUND {
            return Err(ConfigError::invalid(
                "worker_gc.max_per_round",
                format!("{} is out of range; it must be 1 to {MAX_GC_PER_ROUND}", self.max_per_round),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_day_and_bad_values_are_named() {
        let gc = WorkerGc::default();
        assert!(gc.enabled() && gc.validate().is_ok());
        assert!(!WorkerGc { threshold: Duration::ZERO, ..gc.clone() }.enabled());
        let err = WorkerGc { max_per_round: 0, ..gc.clone() }.validate().unwrap_err().to_string();
        assert!(err.contains("worker_gc.max_per_round"), "{err}");
        let err = WorkerGc { interval: Duration::ZERO, ..gc }.validate().unwrap_err().to_string();
        assert!(err.contains("worker_gc.interval"), "{err}");
    }
}
