//! The wall clock as the wire carries it: whole unix seconds (`*_unix` fields, token and
//! certificate times). A clock before 1970 reads as 0 rather than failing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time since the unix epoch.
pub fn since_epoch() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// Whole unix seconds, as `*_unix` fields carry them.
pub fn unix_now() -> i64 {
    i64::try_from(since_epoch().as_secs()).unwrap_or(i64::MAX)
}
