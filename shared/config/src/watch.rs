//! How a control-plane node serves watches: how much change history it keeps for watches to
//! resume from, how often an idle watch hears the current revision, how long a consumer may
//! stall before its watch is ended, and how many watches one node and one connection may hold.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::mode::positive;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchTuning {
    /// Most revisions (entries that changed KV or workers) kept in this node's history. Default
    /// 100000.
    pub history_max_revisions: u64,
    /// Revisions older than this are dropped from the history. Default 1h.
    #[serde(with = "humantime_serde")]
    pub history_max_age: Duration,
    /// An idle watch gets a progress message with the current revision this often. Default 5s.
    #[serde(with = "humantime_serde")]
    pub progress_interval: Duration,
    /// A watch whose consumer takes nothing for this long while events wait is ended with
    /// RESOURCE_EXHAUSTED and the revision to resume from. Default 10s.
    #[serde(with = "humantime_serde")]
    pub slow_consumer_timeout: Duration,
    /// Most watches one node serves at once. Default 10000.
    pub max_watchers: u32,
    /// Most watches one client connection may hold. Default 1000.
    pub max_watchers_per_connection: u32,
}

impl Default for WatchTuning {
    fn default() -> Self {
        Self {
            history_max_revisions: 100_000,
            history_max_age: Duration::from_secs(3600),
            progress_interval: Duration::from_secs(5),
            slow_consumer_timeout: Duration::from_secs(10),
            max_watchers: 10_000,
            max_watchers_per_connection: 1_000,
        }
    }
}

impl WatchTuning {
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("watch.history_max_age", self.history_max_age)?;
        positive("watch.progress_interval", self.progress_interval)?;
        positive("watch.slow_consumer_timeout", self.slow_consumer_timeout)?;
        for (field, value) in [
            ("watch.history_max_revisions", self.history_max_revisions),
            ("watch.max_watchers", u64::from(self.max_watchers)),
            ("watch.max_watchers_per_connection", u64::from(self.max_watchers_per_connection)),
        ] {
            if value == 0 {
                return Err(ConfigError::invalid(field, "must be greater than zero"));
            }
        }
        Ok(())
    }
}
