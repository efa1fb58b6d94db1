//! One error type for every way a configuration can be wrong. Each variant says where: the file
//! and line for TOML syntax, the dotted field path (`cluster.peers[1].raft_addr`) for everything
//! else, because an operator fixing a config needs the place first and the reason second.

use std::path::PathBuf;

/// Why a configuration could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file could not be read (missing, unreadable, not UTF-8). The reason is the
    /// error's `source()`.
    #[error("cannot read config file {}", path.display())]
    Io {
        /// The file as it was given to the loader.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// A config file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Parse {
        /// The file as it was given to the loader.
        path: PathBuf,
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column (in characters) of the syntax error.
        column: usize,
        /// The parser's description of the error.
        message: String,
    },

    /// The merged configuration does not have the expected shape: an unknown field or mode, a
    /// value of the wrong type, an unparsable duration, a missing required field.
    #[error("{path}: {message}")]
    Deserialize {
        /// Dotted path of the offending field, e.g. `cluster.peers[1].raft_adr`; `config` when
        /// the error is about the document as a whole.
        path: String,
        /// What is wrong with it, e.g. ``unknown field `raft_adr`, expected one of ...``.
        message: String,
    },

    /// The configuration is well-formed but does not make sense (a node missing from its own
    /// peer list, `heartbeat_min_ttl` above `heartbeat_max_ttl`, TLS files missing, ...), or an
    /// override could not be applied.
    #[error("{field}: {message}")]
    Invalid {
        /// Dotted path of the field to change, e.g. `cluster.peers`.
        field: String,
        /// What is wrong and, where there is one, how to fix it.
        message: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid { field: field.into(), message: message.into() }
    }
}
