//! The log output format, chosen per process by flag or config.

use std::fmt;
use std::str::FromStr;

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LogFormat {
    /// Human-readable single-line records, coloured when stderr is a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The error returned when a string names no [`LogFormat`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown log format {0:?}: expected \"pretty\" or \"json\"")]
pub struct ParseLogFormatError(String);

impl FromStr for LogFormat {
    type Err = ParseLogFormatError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err(ParseLogFormatError(s.to_owned())),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pretty => "pretty",
            Self::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_formats_case_insensitively() {
        assert_eq!("pretty".parse(), Ok(LogFormat::Pretty));
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert_eq!(LogFormat::default(), LogFormat::Pretty);
    }

    #[test]
    fn rejects_unknown_format_naming_the_choices() {
        let err = "yaml".parse::<LogFormat>().unwrap_err();
        assert_eq!(err.to_string(), "unknown log format \"yaml\": expected \"pretty\" or \"json\"");
    }

    #[test]
    fn display_round_trips() {
        for format in [LogFormat::Pretty, LogFormat::Json] {
            assert_eq!(format.to_string().parse(), Ok(format));
        }
    }
}
