//! Layered configuration loading, generic over the config type so every deployable gets the
//! same precedence rules and error messages: serde defaults, then TOML files, then `MUSTER_*`
//! environment variables, then flag overrides. Layers are merged as one TOML tree and
//! deserialized once, so a value is checked the same way wherever it came from.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::ConfigError;
use crate::mode::TAG;

/// Environment variables starting with this are configuration.
const ENV_PREFIX: &str = "MUSTER_";
/// `MUSTER_*` variables that are not configuration of a daemon: the daemons' log filter and
/// config file path, `musterctl`'s connection flags (an operator's shell often exports them),
/// and the settings of the deploy scripts and the test harness. A daemon started from such a
/// shell ignores them rather than refusing an unknown field.
const ENV_NOT_CONFIG: [&str; 16] = [
    "MUSTER_LOG",
    "MUSTER_CONFIG",
    "MUSTER_ENDPOINTS",
    "MUSTER_TLS_DIR",
    "MUSTER_CA",
    "MUSTER_CERT",
    "MUSTER_KEY",
    "MUSTER_INSECURE",
    "MUSTER_LOCAL_DIR",
    "MUSTER_LOCAL_BASE_PORT",
    "MUSTER_TAG",
    "MUSTER_API_PORT_1",
    "MUSTER_API_PORT_2",
    "MUSTER_API_PORT_3",
    "MUSTER_BIN_DIR",
    "MUSTER_PROMETHEUS",
];

/// Builds a configuration from layers, later layers winning:
///
/// 1. the type's serde defaults;
/// 2. TOML files, in the order given to [`file`](Self::file);
/// 3. `MUSTER_*` environment variables from [`env_vars`](Self::env_vars);
/// 4. overrides from [`set`](Self::set), typically command-line flags.
///
/// Tables merge key by key; any other value (arrays included) replaces the one below it.
///
/// ```no_run
/// # fn main() -> Result<(), muster_config::ConfigError> {
/// use muster_config::{ConfigLoader, ControlPlaneConfig};
///
/// let config: ControlPlaneConfig = ConfigLoader::new()
///     .file("/etc/muster/control-plane.toml")
///     .env_vars(std::env::vars())
///     .set("cluster.node_id", 3.into())
///     .load()?;
/// config.validate()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConfigLoader {
    files: Vec<TomlLayer>,
    env: Vec<(String, String)>,
    overrides: Vec<(String, Value)>,
}

impl ConfigLoader {
    /// A loader with no layers: `load()` returns the type's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a TOML file over the layers so far. A missing or unreadable file is an error naming
    /// the path when loading.
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.files.push(TomlLayer::File(path.into()));
        self
    }

    /// Add TOML text over the layers so far, checked exactly as a file's contents would be;
    /// `origin` stands for the path in error messages. For configuration that does not come
    /// from a file (and for the config fuzz target).
    pub fn toml_text(mut self, origin: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        self.files.push(TomlLayer::Text { origin: origin.into(), text: text.into() });
        self
    }

    /// Use these environment variables (callers pass `std::env::vars()`; by default none are
    /// read). Only `MUSTER_*` names count, except those in `ENV_NOT_CONFIG` (`MUSTER_LOG`,
    /// `MUSTER_CONFIG`, `musterctl`'s and the scripts' variables). The prefix is
    /// stripped, the rest lowercased, and `__` separates nesting levels:
    /// `MUSTER_CLUSTER__NODE_ID` sets `cluster.node_id`, `MUSTER_DATA_DIR` sets `data_dir`.
    ///
    /// A value is read as a TOML value when it parses as one (`3`, `true`, `"quoted"`,
    /// `["a:1", "b:2"]`, `[{ id = 1, raft_addr = "a:1" }]`) and as a plain string otherwise
    /// (`10s`, `10.0.0.1:3669`). Quote a string that looks like a number: `'"1"'`.
    ///
    /// Every other `MUSTER_*` name is a config key like any other, so a misspelt one is an
    /// unknown-field error rather than silently ignored.
    pub fn env_vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(
            vars.into_iter()
                .filter(|(name, _)| name.starts_with(ENV_PREFIX) && !ENV_NOT_CONFIG.contains(&name.as_str())),
        );
        self
    }

    /// Override one value, e.g. from a command-line flag: `set("cluster.node_id", 3.into())`.
    /// Beats files and environment variables. The key is dotted; a table value merges with the
    /// table already there.
    pub fn set(mut self, dotted_key: &str, value: Value) -> Self {
        self.overrides.push((dotted_key.to_owned(), value));
        self
    }

    /// The file a `--config` flag named, if it named one.
    pub fn file_if(self, path: Option<&Path>) -> Self {
        match path {
            Some(path) => self.file(path),
            None => self,
        }
    }

    /// [`set`](Self::set) from a flag that may be absent: `--admin-addr` to `admin_addr`.
    pub fn set_if(self, dotted_key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(value) => self.set(dotted_key, value.into()),
            None => self,
        }
    }

    /// [`set`](Self::set) from a repeatable flag, only when it was given at least once.
    pub fn set_list(self, dotted_key: &str, values: &[String]) -> Self {
        if values.is_empty() {
            return self;
        }
        self.set(dotted_key, Value::Array(values.iter().cloned().map(Value::String).collect()))
    }

    /// [`set`](Self::set) `true` from a switch (`--insecure`), only when it is on.
    pub fn set_switch(self, dotted_key: &str, on: bool) -> Self {
        if on { self.set(dotted_key, Value::Boolean(true)) } else { self }
    }

    /// Merge the layers and deserialize them into `T`. Errors name the file and line (TOML
    /// syntax) or the dotted path of the field (unknown field or mode, wrong type, bad
    /// duration). Semantic checks are the caller's next step (`T::validate()`).
    pub fn load<T: DeserializeOwned>(self) -> Result<T, ConfigError> {
        let mut root = Table::new();
        for layer in &self.files {
            let table = match layer {
                TomlLayer::File(path) => read_toml(path)?,
                TomlLayer::Text { origin, text } => parse_toml(origin, text)?,
            };
            merge(&mut root, table);
        }

        let mut env = self
            .env
            .into_iter()
            .map(|(name, raw)| {
                let keys = env_keys(&name)?;
                Ok((keys, name, parse_env_value(raw)))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let from_env: Vec<(String, String)> =
            env.iter().map(|(keys, name, _)| (keys.join("."), name.clone())).collect();
        // Parents before children, so `MUSTER_CLUSTER={...}` never clobbers
        // `MUSTER_CLUSTER__NODE_ID`, whatever order the environment lists them in.
        env.sort_by(|a, b| a.0.cmp(&b.0));
        for (keys, name, value) in env {
            insert(&mut root, &keys, value, &format!("environment variable {name}"))?;
        }

        for (key, value) in self.overrides {
            let keys = key.split('.').map(str::to_owned).collect::<Vec<_>>();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::invalid(key, "not a dotted config key"));
            }
            insert(&mut root, &keys, value, &format!("override of `{key}`"))?;
        }

        let mut root = Value::Table(root);
        tag_first(&mut root);
        serde_path_to_error::deserialize(root).map_err(|err| {
            let path = match err.path().to_string() {
                root if root == "." => "config".to_owned(),
                path => path,
            };
            let mut message = err.into_inner().message().to_owned();
            if let Some(name) = env_source(&from_env, &path, &message) {
                message.push_str(&format!(" (set by the environment variable {name})"));
            }
            ConfigError::Deserialize { path, message }
        })
    }
}

/// A TOML layer: a file read when loading, or text given directly.
#[derive(Clone, Debug)]
enum TomlLayer {
    File(PathBuf),
    Text { origin: PathBuf, text: String },
}

fn read_toml(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
    parse_toml(path, &text)
}

/// `text` as a TOML table; a syntax error names `path`, line and column.
fn parse_toml(path: &Path, text: &str) -> Result<Table, ConfigError> {
    text.parse::<Table>().map_err(|err| {
        let offset = err.span().map_or(0, |span| span.start);
        let before = text.get(..offset).unwrap_or(text);
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
        ConfigError::Parse { path: path.to_owned(), line, column, message: err.message().trim().to_owned() }
    })
}

/// The environment variable behind a deserialize error at `path`, if one set that field, a
/// field inside it, or (for an unknown field, reported at its parent) the unknown field itself.
fn env_source<'a>(from_env: &'a [(String, String)], path: &str, message: &str) -> Option<&'a str> {
    from_env.iter().find_map(|(key, name)| {
        let inside = path == key || path.starts_with(&format!("{key}.")) || path.starts_with(&format!("{key}["));
        let (parent, field) = key.rsplit_once('.').unwrap_or(("config", key));
        let unknown_here = parent == path && message.contains(&format!("`{field}`"));
        (inside || unknown_here).then_some(name.as_str())
    })
}

/// `MUSTER_CLUSTER__NODE_ID` -> `["cluster", "node_id"]`.
fn env_keys(name: &str) -> Result<Vec<String>, ConfigError> {
    let keys =
        name.strip_prefix(ENV_PREFIX).unwrap_or(name).to_lowercase().split("__").map(str::to_owned).collect::<Vec<_>>();
    if keys.iter().any(String::is_empty) {
        return Err(ConfigError::invalid(name, "not a config key: after MUSTER_, use `__` only between key names"));
    }
    Ok(keys)
}

fn parse_env_value(raw: String) -> Value {
    raw.parse::<Value>().unwrap_or(Value::String(raw))
}

/// Put `value` at `keys` under `root`, creating tables on the way and merging into a table
/// that is already there.
fn insert(root: &mut Table, keys: &[String], value: Value, origin: &str) -> Result<(), ConfigError> {
    let Some((last, parents)) = keys.split_last() else {
        return Ok(());
    };
    let mut table = root;
    for (depth, key) in parents.iter().enumerate() {
        let entry = table.entry(key.clone()).or_insert_with(|| Value::Table(Table::new()));
        table = match entry {
            Value::Table(inner) => inner,
            other => {
                return Err(ConfigError::invalid(
                    keys[..=depth].join("."),
                    format!("{origin} sets `{}`, but this is a {}, not a table", keys.join("."), other.type_str()),
                ));
            }
        };
    }
    put(table, last.clone(), value);
    Ok(())
}

/// Lay `overlay` over `base`.
fn merge(base: &mut Table, overlay: Table) {
    for (key, value) in overlay {
        put(base, key, value);
    }
}

/// Tables merge with tables; anything else replaces what was there.
fn put(table: &mut Table, key: String, value: Value) {
    match (table.get_mut(&key), value) {
        (Some(Value::Table(existing)), Value::Table(new)) => merge(existing, new),
        (_, value) => {
            table.insert(key, value);
        }
    }
}

/// Move every table's `mode` key to the front: tagged enums such as `ClusterMode` then read
/// their variant first and stream the rest, keeping full error paths (see `mode/tagged.rs`).
fn tag_first(value: &mut Value) {
    match value {
        Value::Table(table) => {
            if let Some(tag) = table.remove(TAG) {
                let rest = std::mem::take(table);
                table.insert(TAG.to_owned(), tag);
                table.extend(rest);
            }
            for (_, child) in table.iter_mut() {
                tag_first(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(tag_first),
        _ => {}
    }
}
