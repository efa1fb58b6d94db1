//! Which events are logged: `MUSTER_LOG`, else `RUST_LOG`, else the caller's default level.
//!
//! A malformed directive never stops a process from starting; it falls back to the default
//! and the caller logs the returned warning once the subscriber is up.

use tracing_subscriber::EnvFilter;

/// The level used when even the caller's default is malformed.
const LAST_RESORT: &str = "info";

/// Builds the filter from the process environment.
pub(crate) fn from_env(default_level: &str) -> (EnvFilter, Option<String>) {
    resolve(
        std::env::var("MUSTER_LOG").ok().map(|v| ("MUSTER_LOG", v)),
        std::env::var("RUST_LOG").ok().map(|v| ("RUST_LOG", v)),
        default_level,
    )
}

/// Picks the first non-empty source and parses it; returns a warning when it had to fall back.
fn resolve(
    muster_log: Option<(&'static str, String)>,
    rust_log: Option<(&'static str, String)>,
    default_level: &str,
) -> (EnvFilter, Option<String>) {
    let chosen = [muster_log, rust_log].into_iter().flatten().find(|(_, value)| !value.trim().is_empty());
    if let Some((var, value)) = chosen {
        match EnvFilter::try_new(&value) {
            Ok(filter) => return (filter, None),
            Err(err) => {
                let (filter, _) = resolve(None, None, default_level);
                let warning = format!("ignoring {var}={value:?} ({err}); using {default_level:?}");
                return (filter, Some(warning));
            }
        }
    }
    match EnvFilter::try_new(default_level) {
        Ok(filter) => (filter, None),
        Err(err) => (
            EnvFilter::new(LAST_RESORT),
            Some(format!("ignoring default log level {default_level:?} ({err}); using {LAST_RESORT:?}")),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn var(name: &'static str, value: &str) -> Option<(&'static str, String)> {
        Some((name, value.to_owned()))
    }

    #[test]
    fn muster_log_wins_over_rust_log() {
        let (filter, warning) = resolve(var("MUSTER_LOG", "warn"), var("RUST_LOG", "trace"), "info");
        assert_eq!(filter.to_string(), "warn");
        assert_eq!(warning, None);
    }

    #[test]
    fn empty_variables_are_treated_as_unset() {
        let (filter, _) = resolve(var("MUSTER_LOG", " "), var("RUST_LOG", "debug"), "info");
        assert_eq!(filter.to_string(), "debug");
        let (filter, _) = resolve(None, var("RUST_LOG", ""), "muster=debug,info");
        assert_eq!(filter.to_string(), "muster=debug,info");
    }

    #[test]
    fn malformed_directive_falls_back_with_a_warning_naming_the_variable() {
        let (filter, warning) = resolve(var("MUSTER_LOG", "[[["), None, "info");
        assert_eq!(filter.to_string(), "info");
        assert!(warning.unwrap().starts_with("ignoring MUSTER_LOG=\"[[[\""));
    }

    #[test]
    fn malformed_default_falls_back_to_info() {
        let (filter, warning) = resolve(None, None, "=nonsense=");
        assert_eq!(filter.to_string(), "info");
        assert!(warning.is_some());
    }
}
