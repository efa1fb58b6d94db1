//! How the leader keeps worker leases: how often it sweeps for expired ones, how fast it may
//! mark workers down, and when it decides a mass silence is a fault (a dead gateway, a
//! partition) rather than a mass death and pauses expiry. The TTL policy itself is the seed's
//! worker-tier fields ([`crate::AdaptiveTtlConfig`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::mode::positive;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseTuning {
    /// How often the leader looks for expired leases. Default 250ms.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// Most workers marked Unreachable per second. Default 100.
    pub max_expiries_per_second: u32,
    /// Share of the fleet that, silent together (leases expired, or already Unreachable),
    /// counts as a mass silence. Default 0.3.
    pub mass_expiry_fraction: f64,
    /// ...but only when at least this many are silent (so one dead worker in a fleet of
    /// three is still marked). Default 10.
    pub mass_expiry_min_workers: u32,
    /// How long expiry pauses after a mass silence is detected. Default 2m.
    #[serde(with = "humantime_serde")]
    pub mass_expiry_pause: Duration,
    /// A gateway that has sent no batch for this long no longer counts as live. Default 3s.
    #[serde(with = "humantime_serde")]
    pub gateway_lease: Duration,
}

impl Default for LeaseTuning {
    fn default() -> Self {
        Self {
            sweep_interval: Duration::from_millis(250),
            max_expiries_per_second: 100,
            mass_expiry_fraction: 0.3,
            mass_expiry_min_workers: 10,
            mass_expiry_pause: Duration::from_secs(120),
            gateway_lease: Duration::from_secs(3),
        }
    }
}

impl LeaseTuning {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("leases.sweep_interval", self.sweep_interval)?;
        positive("leases.gateway_lease", self.gateway_lease)?;
        if self.max_expiries_per_second == 0 {
            return Err(ConfigError::invalid("leases.max_expiries_per_second", "must be greater than zero"));
        }
        if !(self.mass_expiry_fraction > 0.0 && self.mass_expiry_fraction <= 1.0) {
            return Err(ConfigError::invalid("leases.mass_expiry_fraction", "must be in (0, 1]"));
        }
        Ok(())
    }
}
