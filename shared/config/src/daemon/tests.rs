use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::test_support::{err, load_str};
use crate::{
    AdvertiseConfig, ClusterMode, ControlPlaneConfig, Limits, ListenConfig, LogFormat, RaftPeer, RaftTuning,
    TelemetryConfig, TlsConfig,
};

/// Enough to pass `validate()`: TLS files named, everything else default.
const TLS: &str = r#"
[tls]
ca_file = "ca.pem"
cert_file = "node.pem"
key_file = "node.key"
"#;

fn config(text: &str) -> ControlPlaneConfig {
    load_str(text).unwrap()
}

fn invalid(text: &str) -> String {
    err(config(text).validate())
}

#[test]
fn empty_file_gives_every_default() {
    let any = |port| SocketAddr::from(([0, 0, 0, 0], port));
    assert_eq!(
        config(""),
        ControlPlaneConfig {
            cluster: ClusterMode::SingleNode,
            data_dir: PathBuf::from("./data"),
            listen: ListenConfig {
                raft_addr: any(3668),
                api_addr: any(3669),
                admin_addr: SocketAddr::from(([127, 0, 0, 1], 3680)),
            },
            advertise: AdvertiseConfig { raft_addr: None, api_addr: None },
            tls: TlsConfig::default(),
            raft: RaftTuning {
                heartbeat_interval: Duration::from_millis(100),
                election_timeout_min: Duration::from_millis(250),
                election_timeout_max: Duration::from_millis(500),
                max_clock_drift_percent: 5,
                snapshot_after_logs: 100_000,
                max_logs_to_keep: 1_000,
                snapshot_chunk_bytes: 1 << 20,
                install_snapshot_timeout: Duration::from_secs(30),
                profile_write_path: false,
            },
            leases: crate::LeaseTuning {
                sweep_interval: Duration::from_millis(250),
                max_expiries_per_second: 100,
                mass_expiry_fraction: 0.3,
                mass_expiry_min_workers: 10,
                mass_expiry_pause: Duration::from_secs(120),
                gateway_lease: Duration::from_secs(3),
            },
            worker_gc: crate::WorkerGc {
                threshold: Duration::from_secs(24 * 3600),
                interval: Duration::from_secs(60),
                max_per_round: 500,
            },
            watch: crate::WatchTuning {
                history_max_revisions: 100_000,
                history_max_age: Duration::from_secs(3600),
                progress_interval: Duration::from_secs(5),
                slow_consumer_timeout: Duration::from_secs(10),
                max_watchers: 10_000,
                max_watchers_per_connection: 1_000,
            },
            limits: Limits {
                max_message_bytes: 4 << 20,
                request_timeout: Duration::from_secs(10),
                max_concurrent_requests: 1024,
                max_concurrent_streams: 256,
                listener: crate::ListenerLimits {
                    tls_handshake_timeout: Duration::from_secs(10),
                    preface_timeout: Duration::from_secs(10),
                    max_connections: 10_000,
                    max_connections_per_ip: 1_000,
                },
                admin: crate::AdminLimits { header_read_timeout: Duration::from_secs(10), max_connections: 1024 },
            },
            telemetry: TelemetryConfig {
                log_format: LogFormat::Pretty,
                log_level: crate::daemon::DEFAULT_LOG_LEVEL.into()
            },
            join: vec![],
        }
    );
    config(TLS).validate().unwrap();
}

#[test]
fn partial_sections_keep_their_other_defaults() {
    let config = config(
        r#"
        data_dir = "/var/lib/muster"
        join = ["10.0.0.1:3669"]
        [cluster]
        mode = "raft"
        node_id = 2
        peers = [{ id = 1, raft_addr = "10.0.0.1:3668" }, { id = 2, raft_addr = "10.0.0.2:3668" }]
        [raft]
        election_timeout_max = "2s"
        [limits]
        request_timeout = "1m"
        [telemetry]
        log_format = "json"
        "#,
    );
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/muster"));
    assert_eq!(config.raft.election_timeout_max, Duration::from_secs(2));
    assert_eq!(config.raft.election_timeout_min, Duration::from_millis(250));
    assert_eq!(config.limits.request_timeout, Duration::from_secs(60));
    assert_eq!(config.limits.max_message_bytes, 4 << 20);
    assert_eq!(config.telemetry.log_format, LogFormat::Json);
    assert_eq!(config.telemetry.log_level, "info,openraft=error");
    assert_eq!(config.join, ["10.0.0.1:3669"]);
    assert_eq!(
        err(config.validate()),
        "tls.ca_file: required unless tls.insecure = true: run `musterctl tls init` to create \
         the cluster CA and certificates, or pass --insecure for a plaintext development setup"
    );
}

#[test]
fn unknown_fields_name_their_path() {
    let message = err(load_str::<ControlPlaneConfig>("data_dirr = \"x\""));
    assert!(
        message.starts_with("data_dirr: unknown field `data_dirr`, expected one of `cluster`, `data_dir`,"),
        "{message}"
    );
    let message = err(load_str::<ControlPlaneConfig>("[raft]\nheartbeat = \"1s\""));
    assert!(message.starts_with("raft.heartbeat: unknown field `heartbeat`"), "{message}");
    assert_eq!(
        err(load_str::<ControlPlaneConfig>("[telemetry]\nlog_format = \"xml\"")),
        "telemetry.log_format: unknown variant `xml`, expected `pretty` or `json`"
    );
    let message = err(load_str::<ControlPlaneConfig>("[listen]\napi_addr = \"localhost\""));
    assert!(message.starts_with("listen.api_addr: invalid socket address"), "{message}");
}

#[test]
fn tls_requires_all_files_unless_insecure() {
    for (missing, text) in [
        ("cert_file", "[tls]\nca_file = \"ca.pem\"\nkey_file = \"k.pem\""),
        ("key_file", "[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\""),
    ] {
        let message = invalid(text);
        assert!(
            message.starts_with(&format!("tls.{missing}: required unless tls.insecure = true"))
                && message.contains("musterctl tls init")
                && message.contains("--insecure"),
            "{message}"
        );
    }
    config("[tls]\ninsecure = true").validate().unwrap();
}

#[test]
fn the_tls_reload_interval_is_zero_or_at_least_a_second() {
    let files = "[tls]\nca_file = \"ca.pem\"\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n";
    let message = invalid(&format!("{files}reload_interval = \"1ms\""));
    assert!(message.starts_with("tls.reload_interval: 1ms would read the files over and over"), "{message}");
    for ok in ["0s", "1s", "10m"] {
        config(&format!("{files}reload_interval = \"{ok}\"")).validate().unwrap();
    }
    assert_eq!(config(files).tls.reload_interval, super::DEFAULT_TLS_RELOAD_INTERVAL);
}

#[test]
fn clock_drift_is_bounded_and_shrinks_the_lease() {
    assert_eq!(
        invalid(&format!("{TLS}[raft]\nmax_clock_drift_percent = 51")),
        "raft.max_clock_drift_percent: 51 is more than 50: clocks that far apart leave no lease worth \
         having (linearizable reads do not need one)"
    );
    let tuning = |p| RaftTuning { max_clock_drift_percent: p, ..RaftTuning::default() };
    // 500 ms × 95 / 105, so a leader 5% slow still stops before a follower 5% fast votes.
    assert_eq!(tuning(5).lease_read_max_age(), Duration::from_nanos(452_380_952));
    assert_eq!(tuning(0).lease_read_max_age(), Duration::from_millis(500));
    assert_eq!(tuning(50).lease_read_max_age(), Duration::from_nanos(166_666_666));
}

#[test]
fn raft_timing_must_be_ordered() {
    assert_eq!(
        invalid(&format!("{TLS}[raft]\nelection_timeout_min = \"1s\"")),
        "raft.election_timeout_min: 1s must be shorter than election_timeout_max (500ms)"
    );
    assert_eq!(
        invalid(&format!("{TLS}[raft]\nheartbeat_interval = \"600ms\"")),
        "raft.heartbeat_interval: 600ms must be shorter than election_timeout_min (250ms)"
    );
    assert_eq!(
        invalid(&format!("{TLS}[raft]\nsnapshot_chunk_bytes = 8388608")),
        "raft.snapshot_chunk_bytes: 8388608 must be smaller than limits.max_message_bytes \
         (4194304) so a chunk fits in one message"
    );
    assert_eq!(
        invalid(&format!("{TLS}[limits]\nmax_concurrent_streams = 0")),
        "limits.max_concurrent_streams: must be greater than zero"
    );
    assert_eq!(
        invalid(&format!("{TLS}[limits.listener]\nmax_connections_per_ip = 0")),
        "limits.listener.max_connections_per_ip: must be greater than zero"
    );
    assert_eq!(
        invalid(&format!("{TLS}[limits.admin]\nheader_read_timeout = \"0s\"")),
        "limits.admin.header_read_timeout: must be greater than zero"
    );
}

#[test]
fn validate_checks_the_cluster_and_how_it_fits_the_daemon() {
    assert_eq!(
        invalid(&format!("{TLS}[cluster]\nmode = \"raft\"\nnode_id = 9\npeers = [{{ id = 1, raft_addr = \"a:1\" }}]")),
        "cluster.peers: node_id 9 is not in the peer list"
    );
    assert_eq!(
        invalid(&format!("{TLS}[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\nservers = [\"cp:3670\"]")),
        "cluster.role: the control plane runs role = \"server\"; \"worker\" belongs in the worker \
         agent's config"
    );
    assert_eq!(
        invalid(&format!("join = [\"10.0.0.1:3669\"]\n{TLS}")),
        "join: joining an existing cluster needs cluster.mode = \"raft\" or \"worker-tier\" \
         (role = \"server\"), not \"single-node\""
    );
    assert_eq!(
        invalid(&format!("{TLS}[listen]\nadmin_addr = \"0.0.0.0:3669\"")),
        "listen.admin_addr: 0.0.0.0:3669 is also listen.api_addr"
    );
    assert_eq!(
        invalid(&format!("{TLS}[advertise]\napi_addr = \"no-port\"")),
        "advertise.api_addr: `no-port` is not a host:port address"
    );
    // Port 0 means "any free port", so several listeners may ask for it.
    config(&format!("{TLS}[listen]\nraft_addr = \"127.0.0.1:0\"\napi_addr = \"127.0.0.1:0\"")).validate().unwrap();
}

#[test]
fn advertised_addresses() {
    let mut config = ControlPlaneConfig::default();
    assert_eq!(config.advertised_raft_addr(), "127.0.0.1:3668");
    assert_eq!(config.advertised_api_addr(), "127.0.0.1:3669");

    config.listen.raft_addr = "[::]:7000".parse().unwrap();
    config.listen.api_addr = "10.1.2.3:7001".parse().unwrap();
    assert_eq!(config.advertised_raft_addr(), "[::1]:7000");
    assert_eq!(config.advertised_api_addr(), "10.1.2.3:7001");

    // In raft mode the node's own peer entry is what the others already dial.
    config.cluster =
        ClusterMode::Raft { node_id: 2, peers: vec![RaftPeer::new(1, "n1:3668"), RaftPeer::new(2, "n2:3668")] };
    assert_eq!(config.advertised_raft_addr(), "n2:3668");
    assert_eq!(config.advertised_api_addr(), "n2:3669");

    config.advertise.raft_addr = Some("public:1".into());
    config.advertise.api_addr = Some("public:2".into());
    assert_eq!(config.advertised_raft_addr(), "public:1");
    assert_eq!(config.advertised_api_addr(), "public:2");
}

#[test]
fn serializes_back_to_the_same_config() {
    let original = config(&format!(
        "data_dir = \"/d\"\n{TLS}[cluster]\nmode = \"static\"\nnode_id = 1\n\
         peers = [{{ id = 1, addr = \"a:1\" }}]\nheartbeat_interval = \"2s\""
    ));
    let text = toml::to_string(&original).unwrap();
    assert_eq!(config(&text), original, "{text}");
}

#[test]
fn watch_settings_are_checked_by_name() {
    let bad = [
        ("[watch]\nhistory_max_revisions = 0\n", "watch.history_max_revisions"),
        ("[watch]\nmax_watchers = 0\n", "watch.max_watchers"),
        ("[watch]\nslow_consumer_timeout = \"0s\"\n", "watch.slow_consumer_timeout"),
    ];
    for (text, field) in bad {
        let err = invalid(&format!("{TLS}{text}"));
        assert!(err.contains(field), "{text}: {err}");
    }
}
