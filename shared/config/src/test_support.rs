//! Test helpers: TOML text goes through the real loader (a temp file), so tests see exactly
//! what an operator's file would produce.

use std::fmt::Debug;

use serde::de::DeserializeOwned;
use tempfile::NamedTempFile;

use crate::{ClusterMode, ConfigError, ConfigLoader, ControlPlaneConfig};

/// A temp file holding `text`; kept alive by the caller while the loader reads it.
pub(crate) fn toml_file(text: &str) -> NamedTempFile {
    let file = NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

pub(crate) fn load_str<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    let file = toml_file(text);
    ConfigLoader::new().file(file.path()).load()
}

/// The `[cluster]` of a control-plane config written as `text`.
pub(crate) fn cluster(text: &str) -> Result<ClusterMode, ConfigError> {
    load_str::<ControlPlaneConfig>(text).map(|config| config.cluster)
}

/// The `Display` of the error `result` must hold.
pub(crate) fn err<T: Debug>(result: Result<T, ConfigError>) -> String {
    result.unwrap_err().to_string()
}
