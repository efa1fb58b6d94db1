use std::path::PathBuf;

use serde::Deserialize;

use crate::test_support::{err, toml_file};
use crate::{ClusterMode, ConfigError, ConfigLoader, ControlPlaneConfig, LogFormat, RaftPeer};

fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
    vars.iter().map(|(name, value)| (name.to_string(), value.to_string())).collect()
}

fn load_env(vars: &[(&str, &str)]) -> Result<ControlPlaneConfig, ConfigError> {
    ConfigLoader::new().env_vars(env(vars)).load()
}

#[test]
fn no_layers_gives_defaults() {
    let config: ControlPlaneConfig = ConfigLoader::new().load().unwrap();
    assert_eq!(config, ControlPlaneConfig::default());
}

#[test]
fn missing_file_names_the_path() {
    let result = ConfigLoader::new().file("/nonexistent/muster.toml").load::<ControlPlaneConfig>();
    let Err(ConfigError::Io { path, .. }) = &result else {
        panic!("expected an Io error, got {result:?}");
    };
    assert_eq!(path, &PathBuf::from("/nonexistent/muster.toml"));
    let error = result.unwrap_err();
    assert_eq!(error.to_string(), "cannot read config file /nonexistent/muster.toml");
    let source = std::error::Error::source(&error).map(ToString::to_string);
    assert!(source.is_some_and(|reason| reason.contains("No such file")), "the OS reason is the source");
}

#[test]
fn syntax_error_has_file_line_and_column() {
    let file = toml_file("data_dir = \"/d\"\n[cluster]\nmode = = \"raft\"\n");
    let result = ConfigLoader::new().file(file.path()).load::<ControlPlaneConfig>();
    let Err(ConfigError::Parse { path, line, column, .. }) = &result else {
        panic!("expected a Parse error, got {result:?}");
    };
    assert_eq!(path, file.path());
    assert_eq!((*line, *column), (3, 8));
    let message = err(result);
    assert!(message.starts_with(&format!("{}:3:8: invalid TOML: ", file.path().display())), "{message}");
}

#[test]
fn toml_text_is_a_layer_like_a_file() {
    let file = toml_file("data_dir = \"/from-file\"\n");
    let config: ControlPlaneConfig =
        ConfigLoader::new().file(file.path()).toml_text("inline.toml", "data_dir = \"/inline\"\n").load().unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/inline"), "later layers win");
    let result = ConfigLoader::new().toml_text("inline.toml", "\n[cluster]\nmode = = 1\n").load::<ControlPlaneConfig>();
    let Err(ConfigError::Parse { path, line, column, .. }) = &result else {
        panic!("expected a Parse error, got {result:?}");
    };
    assert_eq!((path, *line, *column), (&PathBuf::from("inline.toml"), 3, 8));
}

#[test]
fn env_vars_nest_on_double_underscore() {
    let config = load_env(&[
        ("MUSTER_DATA_DIR", "/var/lib/muster"),
        ("MUSTER_CLUSTER__MODE", "raft"),
        ("MUSTER_CLUSTER__NODE_ID", "3"),
        ("MUSTER_CLUSTER__PEERS", r#"[{id=3,raft_addr="a:1"}, {id=4,raft_addr="b:1",api_addr="b:2"}]"#),
        ("MUSTER_TELEMETRY__LOG_FORMAT", "json"),
        ("MUSTER_RAFT__HEARTBEAT_INTERVAL", "50ms"),
        ("MUSTER_TLS__INSECURE", "true"),
        ("MUSTER_JOIN", r#"["x:3669", "y:3669"]"#),
        // Not configuration: other programs' variables and the binaries' own.
        ("MUSTER_LOG", "debug"),
        ("MUSTER_CONFIG", "/etc/muster.toml"),
        ("PATH", "/usr/bin"),
        ("HOME", "/root"),
    ])
    .unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/muster"));
    assert_eq!(
        config.cluster,
        ClusterMode::Raft {
            node_id: 3,
            peers: vec![RaftPeer::new(3, "a:1"), RaftPeer { id: 4, raft_addr: "b:1".into(), api_addr: "b:2".into() },],
        }
    );
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert_eq!(config.raft.heartbeat_interval.as_millis(), 50);
    assert!(config.tls.insecure);
    assert_eq!(config.join, ["x:3669", "y:3669"]);
}

#[test]
fn env_values_that_are_not_toml_are_strings() {
    let config = load_env(&[
        ("MUSTER_ADVERTISE__API_ADDR", "10.0.0.1:3669"),
        ("MUSTER_TELEMETRY__LOG_LEVEL", "muster=debug,info"),
        ("MUSTER_CLUSTER__MODE", "worker-tier"),
        ("MUSTER_CLUSTER__ROLE", "server"),
        ("MUSTER_CLUSTER__LABELS__ZONE", "eu-1"),
        ("MUSTER_CLUSTER__LABELS__RACK", r#""7""#),
    ])
    .unwrap();
    assert_eq!(config.advertise.api_addr.as_deref(), Some("10.0.0.1:3669"));
    assert_eq!(config.telemetry.log_level, "muster=debug,info");
    let ClusterMode::WorkerTier { labels, .. } = &config.cluster else {
        panic!("not worker-tier: {:?}", config.cluster);
    };
    assert_eq!(labels["zone"], "eu-1");
    assert_eq!(labels["rack"], "7");
}

#[test]
fn env_inline_table_merges_with_children_in_any_order() {
    let config = load_env(&[
        ("MUSTER_CLUSTER__NODE_ID", "2"),
        ("MUSTER_CLUSTER", r#"{ mode = "raft", node_id = 1, peers = [{ id = 2, raft_addr = "a:1" }] }"#),
    ])
    .unwrap();
    assert!(matches!(config.cluster, ClusterMode::Raft { node_id: 2, .. }));
}

#[test]
fn set_beats_env_beats_file_beats_default() {
    let file = toml_file(
        r#"
        data_dir = "/from-file"
        [cluster]
        mode = "raft"
        node_id = 1
        peers = [{ id = 1, raft_addr = "a:1" }, { id = 2, raft_addr = "b:1" }, { id = 3, raft_addr = "c:1" }]
        [telemetry]
        log_level = "warn"
        log_format = "json"
        "#,
    );
    let config: ControlPlaneConfig = ConfigLoader::new()
        .file(file.path())
        .env_vars(env(&[
            ("MUSTER_CLUSTER__NODE_ID", "2"),
            ("MUSTER_DATA_DIR", "/from-env"),
            ("MUSTER_TELEMETRY__LOG_LEVEL", "debug"),
        ]))
        .set("cluster.node_id", 3.into())
        .set("data_dir", "/from-flag".into())
        .load()
        .unwrap();
    assert!(matches!(config.cluster, ClusterMode::Raft { node_id: 3, .. }));
    assert_eq!(config.data_dir, PathBuf::from("/from-flag"));
    assert_eq!(config.telemetry.log_level, "debug"); // env over file
    assert_eq!(config.telemetry.log_format, LogFormat::Json); // file over default
    assert_eq!(config.raft.snapshot_after_logs, 100_000); // default
}

#[test]
fn later_files_override_earlier_ones() {
    let base = toml_file("data_dir = \"/base\"\n[telemetry]\nlog_level = \"warn\"");
    let local = toml_file("[telemetry]\nlog_format = \"json\"");
    let config: ControlPlaneConfig = ConfigLoader::new().file(base.path()).file(local.path()).load().unwrap();
    assert_eq!(config.data_dir, PathBuf::from("/base"));
    assert_eq!(config.telemetry.log_level, "warn");
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
}

#[test]
fn unknown_env_key_is_an_unknown_field() {
    let message = err(load_env(&[("MUSTER_DATADIR", "/x")]));
    assert!(message.starts_with("datadir: unknown field `datadir`"), "{message}");
    let message = err(load_env(&[
        ("MUSTER_CLUSTER__MODE", "raft"),
        ("MUSTER_CLUSTER__NODE_ID", "1"),
        ("MUSTER_CLUSTER__PEERS", r#"[{id=1,raft_adr="a:1"}]"#),
    ]));
    assert_eq!(
        message,
        "cluster.peers[0].raft_adr: unknown field `raft_adr`, expected one of `id`, `raft_addr`, \
         `api_addr` (set by the environment variable MUSTER_CLUSTER__PEERS)"
    );
    assert_eq!(
        err(load_env(&[("MUSTER_CLUSTER__MODE", "rafty")])),
        "cluster.mode: unknown variant `rafty`, expected one of `single-node`, `raft`, `static`, \
         `worker-tier` (set by the environment variable MUSTER_CLUSTER__MODE)"
    );
    let message = err(load_env(&[("MUSTER_DATADIR", "/x")]));
    assert!(message.ends_with("(set by the environment variable MUSTER_DATADIR)"), "{message}");
}

#[test]
fn the_variables_of_musterctl_and_the_scripts_are_not_configuration() {
    // An operator's shell exports musterctl's connection settings; the scripts have their own.
    let config = load_env(&[
        ("MUSTER_TLS_DIR", "/tls"),
        ("MUSTER_ENDPOINTS", "a:1,b:2"),
        ("MUSTER_INSECURE", "true"),
        ("MUSTER_CA", "/ca.pem"),
        ("MUSTER_LOCAL_DIR", "/local"),
        ("MUSTER_TAG", "dev"),
        ("MUSTER_DATA_DIR", "/from-env"),
    ])
    .expect("a daemon ignores musterctl's and the scripts' variables");
    assert_eq!(config.data_dir, PathBuf::from("/from-env"));
}

#[test]
fn overrides_that_cannot_apply_are_errors() {
    assert_eq!(
        err(load_env(&[("MUSTER_DATA_DIR", "/d"), ("MUSTER_DATA_DIR__X", "1")])),
        "data_dir: environment variable MUSTER_DATA_DIR__X sets `data_dir.x`, but this is a \
         string, not a table"
    );
    assert_eq!(
        err(load_env(&[("MUSTER_CLUSTER____MODE", "raft")])),
        "MUSTER_CLUSTER____MODE: not a config key: after MUSTER_, use `__` only between key names"
    );
    assert_eq!(
        err(ConfigLoader::new().set("cluster..mode", "raft".into()).load::<ControlPlaneConfig>()),
        "cluster..mode: not a dotted config key"
    );
}

#[test]
fn works_for_any_deserializable_type() {
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Gateway {
        listen: String,
        #[serde(default)]
        cluster: ClusterMode,
    }
    let gateway: Gateway = ConfigLoader::new().env_vars(env(&[("MUSTER_LISTEN", "0.0.0.0:3671")])).load().unwrap();
    assert_eq!(gateway.listen, "0.0.0.0:3671");
    assert_eq!(err(ConfigLoader::new().load::<Gateway>()), "config: missing field `listen`");
}
