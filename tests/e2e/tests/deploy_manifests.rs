//! `deploy/k8s` and `deploy/systemd` cannot run here (no cluster, no systemd), so this test is
//! their check. It parses every manifest and cross-checks them the way a cluster would meet
//! them: Services must select a workload and land on its container ports, probes must hit the
//! admin listener, addresses in the embedded configs must route to the right pods, and the
//! ports must be the crates' own defaults. The embedded configs are loaded with the binaries'
//! real config types and loader (file plus the pod's `MUSTER_*` environment), so a renamed key,
//! a moved default or a stray variable fails here rather than in a crash loop.

#[path = "deploy_manifests/k8s.rs"]
mod k8s;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use muster_config::{ConfigLoader, ControlPlaneConfig};
use muster_heartbeat_gateway::GatewayConfig;
use muster_registrar::RegistrarConfig;
use muster_worker_agent::AgentConfig;
use serde::de::DeserializeOwned;
use serde_norway::Value;

use k8s::{
    Manifests, Object, SAMPLE_POD_IP, Source, Workload, at, container_env, container_ports, host_port, port_number,
    read, repo, resolve_port, seq, string_map, text, yaml_files,
};

const CONTROL_PLANE: &str = "muster-control-plane";
const REGISTRAR: &str = "muster-registrar";
const GATEWAY: &str = "muster-heartbeat-gateway";
const WORKER_AGENT: &str = "muster-worker-agent";

/// The crates' default ports, by workload and container port name.
fn default_ports() -> BTreeMap<&'static str, BTreeMap<&'static str, u16>> {
    let control_plane = ControlPlaneConfig::default();
    let registrar = RegistrarConfig::default();
    let gateway = GatewayConfig::default();
    let agent = AgentConfig::default();
    BTreeMap::from([
        (
            CONTROL_PLANE,
            BTreeMap::from([
                ("raft", control_plane.listen.raft_addr.port()),
                ("api", control_plane.listen.api_addr.port()),
                ("admin", control_plane.listen.admin_addr.port()),
            ]),
        ),
        (
            REGISTRAR,
            BTreeMap::from([("grpc", registrar.worker_grpc_addr.port()), ("admin", registrar.admin_addr.port())]),
        ),
        (GATEWAY, BTreeMap::from([("heartbeat", gateway.listen_addr.port()), ("admin", gateway.admin_addr.port())])),
        (WORKER_AGENT, BTreeMap::from([("admin", agent.admin_addr.port())])),
    ])
}

/// Load `body` the way the binary does: the file, then the pod's `MUSTER_*` variables.
fn load_config<T: DeserializeOwned>(what: &str, body: &str, env: Vec<(String, String)>) -> T {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, body.as_bytes()).expect("write config");
    ConfigLoader::new().file(file.path()).env_vars(env).load().unwrap_or_else(|e| panic!("{what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

#[test]
fn the_kustomization_lists_every_manifest_and_image() {
    let kustomization: Value = serde_norway::from_str(&read("deploy/k8s/kustomization.yaml")).expect("kustomization");
    let resources: BTreeSet<String> =
        seq(&kustomization, &["resources"]).iter().map(|r| r.as_str().expect("resource").to_owned()).collect();
    let mut files = yaml_files(&repo().join("deploy/k8s"));
    files.remove("kustomization.yaml");
    assert_eq!(resources, files, "kustomization.yaml resources vs the YAML files in deploy/k8s");

    let images: BTreeSet<&str> = seq(&kustomization, &["images"]).iter().map(|i| text(i, &["name"])).collect();
    for workload in Manifests::load().workloads() {
        let image = text(workload.container, &["image"]);
        let name = image.rsplit_once(':').map_or(image, |(name, _tag)| name);
        assert!(images.contains(name), "{}: image {name} is not in kustomization.yaml images", workload.name());
    }
}

#[test]
fn objects_are_uniquely_named_and_labelled() {
    let manifests = Manifests::load();
    let mut seen = BTreeSet::new();
    for object in &manifests.objects {
        assert!(seen.insert((&object.kind, &object.name)), "{}: {} {} twice", object.file, object.kind, object.name);
        let labels = string_map(at(&object.doc, &["metadata", "labels"]));
        assert_eq!(labels.get("app.kubernetes.io/part-of").map(String::as_str), Some("muster"), "{object:?}");
    }
    let workloads: BTreeSet<String> = manifests.workloads().iter().map(|w| w.name().to_owned()).collect();
    let expected: BTreeSet<String> = default_ports().keys().map(|name| (*name).to_owned()).collect();
    assert_eq!(workloads, expected);
    for (kind, name) in [
        ("StatefulSet", CONTROL_PLANE),
        ("Deployment", REGISTRAR),
        ("Deployment", GATEWAY),
        ("DaemonSet", WORKER_AGENT),
    ] {
        manifests.get(kind, name);
    }
}

#[test]
fn container_ports_are_the_crates_defaults() {
    let manifests = Manifests::load();
    for (name, defaults) in default_ports() {
        let workload = manifests.workload(name);
        let declared = container_ports(workload.container);
        let declared: BTreeMap<&str, u16> = declared.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(declared, defaults, "{name}: container ports vs the crate's Default config");
        if workload.pod["hostNetwork"].as_bool() == Some(true) {
            for port in seq(workload.container, &["ports"]) {
                let host_port = &port["hostPort"];
                assert!(host_port.is_null() || host_port == &port["containerPort"], "{name}: hostPort {port:?}");
            }
        }
    }
}

#[test]
fn workloads_select_their_own_pods_and_request_resources() {
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        let selector = string_map(at(&workload.object.doc, &["spec", "selector", "matchLabels"]));
        let selected: Vec<String> = manifests.selected(&selector).iter().map(|w| w.name().to_owned()).collect();
        assert_eq!(selected, [workload.name()], "{}: its selector must pick its own pods only", workload.name());
        for resource in ["cpu", "memory"] {
            let request = at(workload.container, &["resources", "requests", resource]);
            assert!(request.is_string(), "{}: no {resource} request", workload.name());
        }
        assert!(at(workload.container, &["resources", "limits", "memory"]).is_string(), "{}", workload.name());
    }
}

#[test]
fn services_select_one_workload_and_target_its_container_ports() {
    let manifests = Manifests::load();
    assert!(manifests.of_kind("Service").count() >= 4);
    for service in manifests.of_kind("Service") {
        let selector = string_map(at(&service.doc, &["spec", "selector"]));
        let selected = manifests.selected(&selector);
        assert_eq!(selected.len(), 1, "Service {} selects {} workloads", service.name, selected.len());
        let ports = seq(&service.doc, &["spec", "ports"]);
        assert!(!ports.is_empty(), "Service {} has no ports", service.name);
        for port in ports {
            let target = if port["targetPort"].is_null() { &port["port"] } else { &port["targetPort"] };
            let resolved = resolve_port(selected[0].container, target);
            assert!(resolved.is_some(), "Service {}: targetPort {target:?} is no container port", service.name);
            assert!(port["name"].is_string(), "Service {}: name every port", service.name);
        }
    }
}

#[test]
fn probes_hit_the_admin_listener() {
    let manifests = Manifests::load();
    for workload in manifests.workloads() {
        let name = workload.name();
        let admin = container_ports(workload.container).get("admin").copied();
        let admin = admin.unwrap_or_else(|| panic!("{name}: no admin container port"));
        for (probe, path) in
            [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz"), ("startupProbe", "/healthz")]
        {
            let spec = &workload.container[probe];
            if spec.is_null() {
                assert_eq!(probe, "startupProbe", "{name}: no {probe}");
                continue;
            }
            if let Some(get) = spec.get("httpGet") {
                assert_eq!(text(get, &["path"]), path, "{name}: {probe} path");
                assert_eq!(resolve_port(workload.container, &get["port"]), Some(admin), "{name}: {probe} port");
            } else {
                // `<binary> health --admin-addr 127.0.0.1:<admin>`: the binaries' own probe.
                let command: Vec<&str> = seq(spec, &["exec", "command"]).iter().filter_map(Value::as_str).collect();
                assert_eq!(command.get(1), Some(&"health"), "{name}: {probe} is neither httpGet nor `health`");
                let addr = command.iter().skip_while(|a| **a != "--admin-addr").nth(1).expect("--admin-addr");
                assert_eq!(host_port(addr).1, admin, "{name}: {probe} port");
            }
        }
        let annotations = string_map(at(workload.pod_template(), &["metadata", "annotations"]));
        if let Some(port) = annotations.get("prometheus.io/port") {
            assert_eq!(port, &admin.to_string(), "{name}: metrics are served on the admin port");
        }
    }
}

#[test]
fn the_statefulset_is_served_by_its_headless_service() {
    let manifests = Manifests::load();
    let set = manifests.workload(CONTROL_PLANE);
    let service = manifests.get("Service", text(&set.object.doc, &["spec", "serviceName"]));
    assert_eq!(at(&service.doc, &["spec", "clusterIP"]).as_str(), Some("None"), "serviceName must be headless");
    assert_eq!(
        at(&service.doc, &["spec", "publishNotReadyAddresses"]).as_bool(),
        Some(true),
        "peers must resolve each other before the cluster has a leader (readiness needs one)"
    );
    let selected = manifests.selected(&string_map(at(&service.doc, &["spec", "selector"])));
    assert_eq!(selected.first().map(Workload::name), Some(CONTROL_PLANE));
    assert_eq!(
        at(&set.object.doc, &["spec", "podManagementPolicy"]).as_str(),
        Some("Parallel"),
        "ordered start-up would wait for node 0 to be ready, which needs a quorum"
    );
    assert_eq!(set.replicas(), 3);

    let budget = manifests.get("PodDisruptionBudget", CONTROL_PLANE);
    let selected = manifests.selected(&string_map(at(&budget.doc, &["spec", "selector", "matchLabels"])));
    assert_eq!(selected.first().map(Workload::name), Some(CONTROL_PLANE));
    assert_eq!(port_number(at(&budget.doc, &["spec", "maxUnavailable"])), 1);
}

#[test]
fn the_autoscaler_scales_the_gateway_deployment_on_cpu() {
    let manifests = Manifests::load();
    let autoscalers: Vec<&Object> = manifests.of_kind("HorizontalPodAutoscaler").collect();
    assert_eq!(autoscalers.len(), 1);
    let hpa = &autoscalers[0].doc;
    assert_eq!(text(hpa, &["apiVersion"]), "autoscaling/v2");
    let target = at(hpa, &["spec", "scaleTargetRef"]);
    assert_eq!((text(target, &["kind"]), text(target, &["name"])), ("Deployment", GATEWAY));
    assert_eq!(text(target, &["apiVersion"]), text(&manifests.get("Deployment", GATEWAY).doc, &["apiVersion"]));
    let metrics = seq(hpa, &["spec", "metrics"]);
    assert!(metrics.iter().any(|m| text(m, &["resource", "name"]) == "cpu"), "scale on CPU");
    let (min, max) = (at(hpa, &["spec", "minReplicas"]).as_u64(), at(hpa, &["spec", "maxReplicas"]).as_u64());
    assert!(matches!((min, max), (Some(min), Some(max)) if 1 <= min && min < max), "{min:?}..{max:?}");
    let gateway = manifests.workload(GATEWAY);
    assert!(at(gateway.container, &["resources", "requests", "cpu"]).is_string(), "utilization needs a CPU request");
}

/// Each dialed address routes to `workload`'s container port `port_name`.
fn assert_routes(manifests: &Manifests, what: &str, addrs: &[String], workload: &str, port_name: &str) {
    assert!(!addrs.is_empty(), "{what}: no addresses");
    let expected = container_ports(manifests.workload(workload).container)[port_name];
    for addr in addrs {
        let (target, port, _) = manifests.route(addr);
        assert_eq!((target.as_str(), port), (workload, expected), "{what}: {addr}");
    }
}

#[test]
fn embedded_configs_load_with_the_real_config_types_and_agree_with_the_manifests() {
    let manifests = Manifests::load();
    let mut used = BTreeSet::new();

    // Control plane: one file per pod, node id = ordinal + 1, peers are the pods.
    let set = manifests.workload(CONTROL_PLANE);
    let mut configs: Vec<ControlPlaneConfig> = Vec::new();
    for (ordinal, pod) in set.pod_names().iter().enumerate() {
        let (map, key, body) = set.config(&manifests, pod);
        let config: ControlPlaneConfig = load_config(&key, &body, container_env(set.container, pod));
        config.validate().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(config.cluster.is_worker_tier_server(), "{key}: worker-tier, role = \"server\"");
        let own = config.cluster.own_raft_peer().unwrap_or_else(|| panic!("{key}: no own peer"));
        assert_eq!(own.id, ordinal as u64 + 1, "{key}: node id = ordinal + 1");
        let muster_config::ClusterMode::WorkerTier { peers, worker_ca_dir, .. } = &config.cluster else {
            unreachable!("checked above")
        };
        if config.join.is_empty() {
            assert_eq!(peers.len(), set.replicas(), "{key}: every replica bootstraps as a voter");
        }
        for peer in peers {
            let what = format!("{key}: peer {}", peer.id);
            let (target, port, peer_ordinal) = manifests.route(&peer.raft_addr);
            assert_eq!(
                (target.as_str(), port, peer_ordinal),
                (CONTROL_PLANE, config.listen.raft_addr.port(), Some(peer.id as usize - 1)),
                "{what} raft_addr"
            );
            let (target, port, peer_ordinal) = manifests.route(&peer.api_addr);
            assert_eq!(
                (target.as_str(), port, peer_ordinal),
                (CONTROL_PLANE, config.listen.api_addr.port(), Some(peer.id as usize - 1)),
                "{what} api_addr"
            );
        }
        set.assert_listens("listen.raft_addr", config.listen.raft_addr, "raft");
        set.assert_listens("listen.api_addr", config.listen.api_addr, "api");
        set.assert_listens("listen.admin_addr", config.listen.admin_addr, "admin");
        set.assert_tls_from_secret(&config.tls);
        let data_dir = config.data_dir.display().to_string();
        assert!(matches!(set.source(&data_dir), Source::Claim(_)), "{key}: data_dir {data_dir} on the PVC");
        if let Some(dir) = worker_ca_dir {
            assert!(matches!(set.source(dir), Source::Claim(_)), "{key}: worker_ca_dir {dir} on the PVC");
        }
        used.insert((map, key));
        configs.push(config);
    }
    // The files differ in the node id only.
    let normalize = |config: &ControlPlaneConfig| {
        let mut config = config.clone();
        if let muster_config::ClusterMode::WorkerTier { node_id, .. } = &mut config.cluster {
            *node_id = None;
        }
        config
    };
    assert!(configs.windows(2).all(|pair| normalize(&pair[0]) == normalize(&pair[1])), "per-pod files drifted apart");

    // Registrar.
    let registrar = manifests.workload(REGISTRAR);
    for pod in registrar.pod_names() {
        let (map, key, body) = registrar.config(&manifests, &pod);
        let config: RegistrarConfig = load_config(&key, &body, container_env(registrar.container, &pod));
        config.validate().unwrap_or_else(|e| panic!("{key}: {e}"));
        registrar.assert_listens("worker_grpc_addr", config.worker_grpc_addr, "grpc");
        registrar.assert_listens("admin_addr", config.admin_addr, "admin");
        assert_routes(&manifests, &format!("{key}: control_plane"), &config.control_plane, CONTROL_PLANE, "api");
        registrar.assert_tls_from_secret(&config.tls);
        used.insert((map, key));
    }

    // Heartbeat gateway: advertises its pod IP on the heartbeat port, named after the pod.
    let gateway = manifests.workload(GATEWAY);
    for pod in gateway.pod_names() {
        let (map, key, body) = gateway.config(&manifests, &pod);
        let config: GatewayConfig = load_config(&key, &body, container_env(gateway.container, &pod));
        config.validate().unwrap_or_else(|e| panic!("{key}: {e}"));
        gateway.assert_listens("listen_addr", config.listen_addr, "heartbeat");
        gateway.assert_listens("admin_addr", config.admin_addr, "admin");
        let advertised = config.advertise_addr_for(config.listen_addr);
        assert_eq!(advertised, format!("{SAMPLE_POD_IP}:{}", config.listen_addr.port()), "{key}: advertise_addr");
        let gateway_id = config.gateway_id_for(&advertised, Some("heartbeat-gateway")).unwrap();
        assert_eq!(gateway_id, format!("heartbeat-gateway/{pod}"), "{key}: gateway_id");
        assert_routes(&manifests, &format!("{key}: control_plane"), &config.control_plane, CONTROL_PLANE, "api");
        gateway.assert_tls_from_secret(&config.tls);
        used.insert((map, key));
    }

    // Worker agent: registrar and gateway Services, token from a Secret, identity on the node.
    let agent = manifests.workload(WORKER_AGENT);
    for pod in agent.pod_names() {
        let (map, key, body) = agent.config(&manifests, &pod);
        let config: AgentConfig = load_config(&key, &body, container_env(agent.container, &pod));
        let settings = config.validate().unwrap_or_else(|e| panic!("{key}: {e}"));
        agent.assert_listens("admin_addr", config.admin_addr, "admin");
        assert_routes(&manifests, &format!("{key}: servers"), &settings.servers, REGISTRAR, "grpc");
        if !settings.gateways.is_empty() {
            assert_routes(&manifests, &format!("{key}: gateways"), &settings.gateways, GATEWAY, "heartbeat");
        }
        let token = settings.token_file.unwrap_or_else(|| panic!("{key}: no token_file"));
        assert!(matches!(agent.source(&token.display().to_string()), Source::Secret { .. }), "{key}: token");
        for dir in [&config.data_dir, &settings.identity_dir] {
            let source = agent.source(&dir.display().to_string());
            assert!(matches!(source, Source::HostPath(_)), "{key}: {} must survive the pod", dir.display());
        }
        let grace = at(agent.pod, &["terminationGracePeriodSeconds"]).as_u64().unwrap_or(30);
        assert!(
            Duration::from_secs(grace) > muster_worker_agent::heartbeat::LEAVE_TIMEOUT,
            "{key}: the pod must outlive the agent's leave"
        );
        used.insert((map, key));
    }

    // Every config in a ConfigMap is some pod's.
    let all: BTreeSet<(String, String)> = manifests
        .of_kind("ConfigMap")
        .flat_map(|map| string_map(at(&map.doc, &["data"])).into_keys().map(|key| (map.name.clone(), key)))
        .collect();
    assert_eq!(all, used, "ConfigMap entries no pod reads");
}

/// `deploy/k8s/secrets.sh`: the `create SECRET FILE...` lines and the host lists.
struct SecretsScript {
    creates: BTreeMap<String, BTreeSet<String>>,
    hosts: BTreeMap<String, BTreeSet<String>>,
    body: String,
}

impl SecretsScript {
    fn load() -> Self {
        let body = read("deploy/k8s/secrets.sh");
        let mut creates = BTreeMap::new();
        let mut hosts = BTreeMap::new();
        for line in body.lines().map(str::trim) {
            if let Some(rest) = line.strip_prefix("create ") {
                let mut words = rest.split_whitespace().map(str::to_owned);
                let name = words.next().expect("secret name");
                creates.insert(name, words.collect());
            } else if let Some((var, list)) = line.split_once("_hosts=") {
                hosts.insert(var.to_owned(), list.split(',').map(str::to_owned).collect());
            }
        }
        SecretsScript { creates, hosts, body }
    }
}

#[test]
fn the_secrets_script_creates_every_mounted_secret_and_names_every_checked_host() {
    let manifests = Manifests::load();
    let script = SecretsScript::load();
    for workload in manifests.workloads() {
        for volume in seq(workload.pod, &["volumes"]) {
            let Some(secret) = volume.get("secret") else { continue };
            let name = text(secret, &["secretName"]);
            let keys: BTreeSet<String> = seq(secret, &["items"]).iter().map(|i| text(i, &["key"]).to_owned()).collect();
            if name == "muster-worker-token" {
                let from = format!("muster-worker-token --from-file=\"{}=", keys.first().expect("token key"));
                assert!(script.body.contains(&from), "secrets.sh must create {name} with key {keys:?}");
                continue;
            }
            assert_eq!(script.creates.get(name), Some(&keys), "secrets.sh create {name} vs the volume's items");
        }
    }

    // TLS checks these names (the gateway is checked by role, by design).
    let control_plane_hosts = &script.hosts["control_plane"];
    let registrar_hosts = &script.hosts["registrar"];
    let host = |addr: &String| host_port(addr).0.to_owned();
    let set = manifests.workload(CONTROL_PLANE);
    for pod in set.pod_names() {
        let (_, key, body) = set.config(&manifests, &pod);
        let config: ControlPlaneConfig = load_config(&key, &body, container_env(set.container, &pod));
        let muster_config::ClusterMode::WorkerTier { peers, .. } = &config.cluster else { panic!("{key}: mode") };
        for peer in peers {
            for addr in [&peer.raft_addr, &peer.api_addr] {
                assert!(control_plane_hosts.contains(&host(addr)), "the control-plane certificate must name {addr}");
            }
        }
    }
    let registrar = manifests.workload(REGISTRAR);
    let (_, key, body) = registrar.config(&manifests, &registrar.pod_names()[0]);
    let from_registrar = load_config::<RegistrarConfig>(&key, &body, Vec::new()).control_plane;
    let gateway = manifests.workload(GATEWAY);
    let (_, key, body) = gateway.config(&manifests, &gateway.pod_names()[0]);
    let from_gateway = load_config::<GatewayConfig>(&key, &body, Vec::new()).control_plane;
    for addr in from_registrar.iter().chain(&from_gateway) {
        assert!(control_plane_hosts.contains(&host(addr)), "the control-plane certificate must name {addr}");
    }
    let agent = manifests.workload(WORKER_AGENT);
    let (_, key, body) = agent.config(&manifests, &agent.pod_names()[0]);
    let config: AgentConfig = load_config(&key, &body, Vec::new());
    for addr in config.validate().expect("agent config").servers {
        assert!(registrar_hosts.contains(&host(&addr)), "the registrar certificate must name {addr}");
    }
}

// ---------------------------------------------------------------------------------------------
// systemd

/// `[Section]` -> key -> values (a key may repeat).
fn parse_unit(body: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut sections: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut current = None;
    for line in body.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';')) {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.to_owned());
            continue;
        }
        let section = current.clone().unwrap_or_else(|| panic!("{line:?} before any [Section]"));
        let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?} is not Key=Value"));
        sections.entry(section).or_default().entry(key.trim().to_owned()).or_default().push(value.trim().to_owned());
    }
    sections
}

#[test]
fn the_systemd_unit_runs_the_agent_hardened_with_a_config_that_loads() {
    let unit = parse_unit(&read("deploy/systemd/worker-agent.service"));
    let service = &unit["Service"];
    let one = |key: &str| -> &str {
        let values = service.get(key).unwrap_or_else(|| panic!("[Service] has no {key}="));
        values.last().expect("a value")
    };

    let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
    assert_eq!(exec.first(), Some(&"/usr/local/bin/worker-agent"), "ExecStart binary");
    let config_path = exec.iter().skip_while(|a| **a != "--config").nth(1).expect("ExecStart --config PATH");
    assert_eq!(*config_path, "/etc/muster/worker-agent.toml");

    for (key, value) in [
        ("User", "muster"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("KillSignal", "SIGTERM"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(key), value, "[Service] {key}=");
    }
    let stop = one("TimeoutStopSec");
    let stop = humantime::parse_duration(stop).or_else(|_| stop.parse().map(Duration::from_secs)).expect("duration");
    assert!(stop > muster_worker_agent::heartbeat::LEAVE_TIMEOUT, "TimeoutStopSec must let the agent report Left");
    assert!(unit["Install"]["WantedBy"].iter().any(|t| t == "multi-user.target"));

    // The example config: the real loader, then the agent's own validation.
    let example = repo().join("deploy/systemd/worker-agent.toml");
    assert_eq!(example.file_name(), Path::new(config_path).file_name(), "the example is the file ExecStart reads");
    let config: AgentConfig = ConfigLoader::new().file(&example).load().unwrap_or_else(|e| panic!("{e}"));
    let settings = config.validate().unwrap_or_else(|e| panic!("worker-agent.toml: {e}"));
    assert_eq!(config.admin_addr.port(), AgentConfig::default().admin_addr.port());

    // ProtectSystem=strict: the agent writes only in its StateDirectory.
    let state = Path::new("/var/lib").join(one("StateDirectory"));
    assert_eq!(config.data_dir, state, "data_dir is the unit's StateDirectory");
    assert!(settings.identity_dir.starts_with(&state), "the identity must be writable and kept");
    let token = settings.token_file.expect("token_file");
    let config_dir = Path::new("/etc").join(one("ConfigurationDirectory"));
    assert!(token.starts_with(&config_dir), "token_file {} beside the config", token.display());
    assert!(Path::new(config_path).starts_with(&config_dir));
}
