use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::test_support::{cluster, err};
use crate::{AdaptiveTtlConfig, ClusterMode, RaftPeer, StaticPeer, WorkerTierRole};

const RAFT: &str = r#"
[cluster]
mode = "raft"
node_id = 2
peers = [
  { id = 1, raft_addr = "10.0.0.1:3668" },
  { id = 2, raft_addr = "10.0.0.2:4000", api_addr = "api.example:4001" },
  { id = 3, raft_addr = "[fd00::3]:3668" },
]
"#;

fn worker_tier_server() -> ClusterMode {
    cluster(
        r#"
        [cluster]
        mode = "worker-tier"
        role = "server"
        node_id = 1
        peers = [{ id = 1, raft_addr = "cp1:3668" }]
        "#,
    )
    .unwrap()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn missing_cluster_table_is_single_node() {
    assert_eq!(cluster("").unwrap(), ClusterMode::SingleNode);
    assert_eq!(cluster("[cluster]\nmode = \"single-node\"").unwrap(), ClusterMode::SingleNode);
}

#[test]
fn raft_parses_and_fills_api_addr_from_raft_host() {
    let expected = ClusterMode::Raft {
        node_id: 2,
        peers: vec![
            RaftPeer { id: 1, raft_addr: "10.0.0.1:3668".into(), api_addr: "10.0.0.1:3669".into() },
            RaftPeer { id: 2, raft_addr: "10.0.0.2:4000".into(), api_addr: "api.example:4001".into() },
            RaftPeer { id: 3, raft_addr: "[fd00::3]:3668".into(), api_addr: "[fd00::3]:3669".into() },
        ],
    };
    let mode = cluster(RAFT).unwrap();
    assert_eq!(mode, expected);
    assert_eq!(mode.name(), "raft");
    mode.validate().unwrap();
    assert_eq!(RaftPeer::new(1, "10.0.0.1:3668").api_addr, "10.0.0.1:3669");
}

#[test]
fn static_defaults_are_5s_and_15s() {
    let mode = cluster(
        r#"
        [cluster]
        mode = "static"
        node_id = 1
        peers = [{ id = 1, addr = "n1:3680" }, { id = 2, addr = "n2:3680" }]
        "#,
    )
    .unwrap();
    assert_eq!(
        mode,
        ClusterMode::Static {
            node_id: 1,
            peers: vec![StaticPeer::new(1, "n1:3680"), StaticPeer::new(2, "n2:3680")],
            heartbeat_interval: secs(5),
            failure_threshold: secs(15),
            require_majority: true,
        }
    );
    mode.validate().unwrap();
}

#[test]
fn static_peers_default_their_api_port_and_majority_can_be_waived() {
    let mode = cluster(
        r#"
        [cluster]
        mode = "static"
        node_id = 2
        require_majority = false
        peers = [{ id = 1, addr = "n1:3668" }, { id = 2, addr = "[::1]:3668", api_addr = "[::1]:9000" }]
        "#,
    )
    .unwrap();
    let ClusterMode::Static { peers, require_majority, .. } = mode else { panic!("not static: {mode:?}") };
    assert!(!require_majority);
    assert_eq!(peers[0].api_addr, "n1:3669");
    assert_eq!(peers[1].api_addr, "[::1]:9000");
}

#[test]
fn static_durations_are_humantime_strings() {
    let mode = cluster(
        r#"
        [cluster]
        heartbeat_interval = "500ms"
        failure_threshold = "1m 30s"
        mode = "static"
        node_id = 1
        peers = [{ id = 1, addr = "n1:3680" }]
        "#,
    )
    .unwrap();
    let ClusterMode::Static { heartbeat_interval, failure_threshold, .. } = mode else {
        panic!("not static: {mode:?}");
    };
    assert_eq!(heartbeat_interval, Duration::from_millis(500));
    assert_eq!(failure_threshold, secs(90));
}

#[test]
fn worker_tier_defaults_match_the_seed() {
    assert_eq!(
        worker_tier_server(),
        ClusterMode::WorkerTier {
            role: WorkerTierRole::Server,
            node_id: Some(1),
            peers: vec![RaftPeer::new(1, "cp1:3668")],
            worker_grpc_addr: SocketAddr::from(([0, 0, 0, 0], 3670)),
            servers: vec![],
            token_file: None,
            identity_dir: None,
            worker_ca_dir: None,
            heartbeat_min_ttl: secs(10),
            heartbeat_max_ttl: secs(600),
            heartbeat_grace: secs(10),
            max_heartbeats_per_second: 50,
            failover_heartbeat_ttl: secs(300),
            labels: HashMap::new(),
        }
    );
    assert_eq!(worker_tier_server().adaptive_ttl_config(), Some(AdaptiveTtlConfig::default()));
}

#[test]
fn worker_tier_worker_with_every_field() {
    let mode = cluster(
        r#"
        [cluster]
        mode = "worker-tier"
        role = "worker"
        servers = ["https://cp1:3670", "https://cp2:3670"]
        token_file = "/etc/muster/token"
        identity_dir = "/var/lib/muster/id"
        worker_ca_dir = "/var/lib/muster/ca"
        worker_grpc_addr = "127.0.0.1:9000"
        heartbeat_min_ttl = "5s"
        heartbeat_max_ttl = "2m"
        heartbeat_grace = "3s"
        max_heartbeats_per_second = 200
        failover_heartbeat_ttl = "1m"
        labels = { zone = "eu-1", rack = "r7" }
        "#,
    )
    .unwrap();
    mode.validate().unwrap();
    assert!(mode.is_worker_tier_worker());
    assert!(!mode.is_worker_tier_server());
    assert_eq!(mode.name(), "worker-tier");
    assert_eq!(
        mode.adaptive_ttl_config(),
        Some(AdaptiveTtlConfig {
            min_ttl: secs(5),
            max_ttl: secs(120),
            grace: secs(3),
            max_heartbeats_per_second: 200,
            failover_ttl: secs(60),
        })
    );
    let ClusterMode::WorkerTier { servers, token_file, labels, worker_grpc_addr, .. } = mode else {
        panic!("not worker-tier");
    };
    assert_eq!(servers, ["https://cp1:3670", "https://cp2:3670"]);
    assert_eq!(token_file.as_deref(), Some("/etc/muster/token"));
    assert_eq!(labels["zone"], "eu-1");
    assert_eq!(worker_grpc_addr, SocketAddr::from(([127, 0, 0, 1], 9000)));
}

#[test]
fn helpers_on_other_modes() {
    let server = worker_tier_server();
    assert!(server.is_worker_tier_server());
    assert!(!server.is_worker_tier_worker());
    for mode in [ClusterMode::SingleNode, cluster(RAFT).unwrap()] {
        assert_eq!(mode.adaptive_ttl_config(), None);
        assert!(!mode.is_worker_tier_server());
        assert!(!mode.is_worker_tier_worker());
    }
    assert_eq!(ClusterMode::SingleNode.name(), "single-node");
}

#[test]
fn mode_names_are_kebab_case() {
    for wrong in ["worker_tier", "WorkerTier", "single_node"] {
        let text = format!("[cluster]\nmode = \"{wrong}\"\nrole = \"server\"");
        assert_eq!(
            err(cluster(&text)),
            format!(
                "cluster.mode: unknown variant `{wrong}`, expected one of `single-node`, `raft`, \
                 `static`, `worker-tier`"
            )
        );
    }
    assert_eq!(
        err(cluster("[cluster]\nmode = \"worker-tier\"\nrole = \"Server\"")),
        "cluster.role: unknown variant `Server`, expected `server` or `worker`"
    );
}

#[test]
fn unknown_mode_is_an_error_not_a_default() {
    assert_eq!(
        err(cluster("[cluster]\nmode = \"rafty\"\nnode_id = 1")),
        "cluster.mode: unknown variant `rafty`, expected one of `single-node`, `raft`, `static`, \
         `worker-tier`"
    );
    assert_eq!(err(cluster("[cluster]\nnode_id = 1")), "cluster: missing field `mode`");
    assert_eq!(err(cluster("[cluster]")), "cluster: missing field `mode`");
}

#[test]
fn unknown_field_in_cluster_names_it() {
    assert_eq!(
        err(cluster("[cluster]\nmode = \"raft\"\nnode_id = 1\npeers = []\nheartbeat_interval = \"1s\"")),
        "cluster.heartbeat_interval: unknown field `heartbeat_interval`, expected `node_id` or \
         `peers`"
    );
    assert_eq!(
        err(cluster("[cluster]\nmode = \"single-node\"\nnode_id = 1")),
        "cluster.node_id: unknown field `node_id`, mode `single-node` has no other fields"
    );
}

#[test]
fn unknown_field_in_a_peer_names_its_path() {
    // `mode` written last: the loader still reads it first, so the path stays precise.
    let text = r#"
        [cluster]
        node_id = 1
        peers = [
          { id = 1, raft_addr = "a:1" },
          { id = 2, raft_adr = "b:1" },
        ]
        mode = "raft"
    "#;
    assert_eq!(
        err(cluster(text)),
        "cluster.peers[1].raft_adr: unknown field `raft_adr`, expected one of `id`, `raft_addr`, \
         `api_addr`"
    );
    let text = "[cluster]\nmode = \"static\"\nnode_id = 1\npeers = [{ id = 1, address = \"a:1\" }]";
    assert_eq!(
        err(cluster(text)),
        "cluster.peers[0].address: unknown field `address`, expected one of `id`, `addr`, `api_addr`"
    );
}

#[test]
fn type_errors_name_the_field() {
    assert_eq!(
        err(cluster("[cluster]\nmode = \"raft\"\nnode_id = -1\npeers = []")),
        "cluster.node_id: invalid value: integer `-1`, expected u64"
    );
    assert_eq!(err(cluster("[cluster]\nmode = \"raft\"\npeers = []")), "cluster: missing field `node_id`");
    assert_eq!(err(cluster("[cluster]\nmode = \"worker-tier\"")), "cluster: missing field `role`");
}

#[test]
fn bad_duration_names_the_field() {
    let text = "[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\nheartbeat_grace = \"10 parsecs\"";
    let message = err(cluster(text));
    assert!(message.starts_with("cluster.heartbeat_grace: ") && message.contains("parsecs"), "{message}");
    let text = "[cluster]\nmode = \"static\"\nnode_id = 1\npeers = []\nheartbeat_interval = 5";
    let message = err(cluster(text));
    assert!(message.starts_with("cluster.heartbeat_interval: invalid type: integer `5`"), "{message}");
}

fn invalid(text: &str) -> String {
    err(cluster(text).unwrap().validate())
}

#[test]
fn validate_raft_membership() {
    assert_eq!(
        invalid("[cluster]\nmode = \"raft\"\nnode_id = 4\npeers = [{ id = 1, raft_addr = \"a:1\" }]"),
        "cluster.peers: node_id 4 is not in the peer list"
    );
    assert_eq!(
        invalid("[cluster]\nmode = \"raft\"\nnode_id = 1\npeers = []"),
        "cluster.peers: at least one peer is required, including this node's own entry"
    );
    assert_eq!(
        invalid(
            "[cluster]\nmode = \"raft\"\nnode_id = 1\n\
             peers = [{ id = 1, raft_addr = \"a:1\" }, { id = 1, raft_addr = \"b:1\" }]"
        ),
        "cluster.peers[1].id: duplicate peer id 1 (peers[0] has it too)"
    );
    assert_eq!(
        invalid(
            "[cluster]\nmode = \"raft\"\nnode_id = 1\n\
             peers = [{ id = 1, raft_addr = \"a:1\" }, { id = 2, raft_addr = \"a:1\" }]"
        ),
        "cluster.peers[1].raft_addr: `a:1` is also peers[0].raft_addr"
    );
    assert_eq!(
        invalid("[cluster]\nmode = \"raft\"\nnode_id = 1\npeers = [{ id = 1, raft_addr = \"a\" }]"),
        "cluster.peers[0].raft_addr: `a` is not a host:port address"
    );
}

#[test]
fn validate_static() {
    let base = "[cluster]\nmode = \"static\"\nnode_id = 1\n";
    assert_eq!(
        invalid(&format!("{base}peers = [{{ id = 1, addr = \"a:1\" }}, {{ id = 1, addr = \"b:1\" }}]")),
        "cluster.peers[1].id: duplicate peer id 1 (peers[0] has it too)"
    );
    assert_eq!(
        invalid(&format!("{base}peers = [{{ id = 2, addr = \"a:1\" }}]")),
        "cluster.peers: node_id 1 is not in the peer list"
    );
    assert_eq!(
        invalid(&format!("{base}peers = [{{ id = 1, addr = \"a:1\" }}]\nfailure_threshold = \"5s\"")),
        "cluster.failure_threshold: 5s must be longer than heartbeat_interval (5s)"
    );
}

#[test]
fn validate_worker_tier() {
    let server = "[cluster]\nmode = \"worker-tier\"\nrole = \"server\"\n";
    assert_eq!(invalid(server), "cluster.node_id: required when role = \"server\"");
    assert_eq!(
        invalid(&format!("{server}node_id = 1")),
        "cluster.peers: at least one peer is required, including this node's own entry"
    );
    assert_eq!(
        invalid("[cluster]\nmode = \"worker-tier\"\nrole = \"worker\""),
        "cluster.servers: at least one control-plane endpoint is required when role = \"worker\""
    );
    let worker = "[cluster]\nmode = \"worker-tier\"\nrole = \"worker\"\nservers = [\"cp:3670\"]\n";
    assert_eq!(
        invalid(&format!("{worker}heartbeat_min_ttl = \"20m\"")),
        "cluster.heartbeat_min_ttl: 20m is greater than heartbeat_max_ttl (10m)"
    );
    assert_eq!(
        invalid(&format!("{worker}max_heartbeats_per_second = 0")),
        "cluster.max_heartbeats_per_second: must be greater than zero"
    );
    assert_eq!(
        invalid(&format!("{worker}heartbeat_min_ttl = \"0s\"")),
        "cluster.heartbeat_min_ttl: must be greater than zero"
    );
    // Equal bounds are a fixed TTL, which is allowed.
    cluster(&format!("{worker}heartbeat_min_ttl = \"1m\"\nheartbeat_max_ttl = \"1m\"")).unwrap().validate().unwrap();
}

#[test]
fn serializes_back_to_the_same_toml_and_json() {
    for mode in [ClusterMode::SingleNode, cluster(RAFT).unwrap(), worker_tier_server()] {
        let toml_text =
            toml::to_string(&crate::ControlPlaneConfig { cluster: mode.clone(), ..Default::default() }).unwrap();
        assert_eq!(cluster(&toml_text).unwrap(), mode, "{toml_text}");

        let json = serde_json::to_string(&mode).unwrap();
        assert!(json.starts_with(&format!("{{\"mode\":\"{}\"", mode.name())), "{json}");
        assert_eq!(serde_json::from_str::<ClusterMode>(&json).unwrap(), mode);
    }
}

#[test]
fn other_sources_may_put_mode_anywhere() {
    let json = r#"{"node_id": 1, "peers": [{"id": 1, "raft_addr": "a:1"}], "mode": "raft"}"#;
    assert_eq!(
        serde_json::from_str::<ClusterMode>(json).unwrap(),
        ClusterMode::Raft { node_id: 1, peers: vec![RaftPeer::new(1, "a:1")] }
    );
    let json = r#"{"heartbeat_grace": "1s", "mode": "worker-tier", "role": "worker"}"#;
    let mode = serde_json::from_str::<ClusterMode>(json).unwrap();
    assert_eq!(mode.adaptive_ttl_config().unwrap().grace, secs(1));
    let json = r#"{"node_id": 1, "mode": "rafty"}"#;
    let message = serde_json::from_str::<ClusterMode>(json).unwrap_err().to_string();
    assert!(message.contains("unknown variant `rafty`"), "{message}");
    let json = r#"{"node_id": 1}"#;
    let message = serde_json::from_str::<ClusterMode>(json).unwrap_err().to_string();
    assert!(message.contains("missing field `mode`"), "{message}");
}

#[test]
fn base_ttl_follows_the_seed_formula_and_divides_by_gateways() {
    let policy = AdaptiveTtlConfig { max_heartbeats_per_second: 50, ..AdaptiveTtlConfig::default() };
    // N = 10 000 at 50/s: 200 s with one gateway, 100 s with two.
    assert_eq!(policy.base_ttl(10_000, 1), Duration::from_secs(200));
    assert_eq!(policy.base_ttl(10_000, 2), Duration::from_secs(100));
    assert_eq!(policy.base_ttl(10_000, 0), Duration::from_secs(200));
    // Clamped at both ends.
    assert_eq!(policy.base_ttl(3, 1), policy.min_ttl);
    assert_eq!(policy.base_ttl(10_000_000, 1), policy.max_ttl);
    assert_eq!(policy.largest_issuable_ttl(10_000), Duration::from_secs(220));
}
