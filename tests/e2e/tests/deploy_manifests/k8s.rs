//! A small model of deploy/k8s for the manifest test: the objects, the workloads and their one
//! container, and how a name, a port, an address or a file path resolves inside a pod, the way
//! the API server, cluster DNS and the kubelet would resolve them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_norway::Value;

/// What the downward API would give a pod (documentation addresses only).
pub const SAMPLE_POD_IP: &str = "192.0.2.7";
pub const SAMPLE_NODE: &str = "node-a";
pub const SAMPLE_NAMESPACE: &str = "muster";

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

pub static NULL: Value = Value::Null;

/// `value.a.b.c`, or null when any step is missing.
pub fn at<'a>(value: &'a Value, path: &[&str]) -> &'a Value {
    path.iter().fold(value, |value, key| value.get(*key).unwrap_or(&NULL))
}

pub fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    at(value, path).as_str().unwrap_or_else(|| panic!("{} is not a string in {value:?}", path.join(".")))
}

pub fn seq<'a>(value: &'a Value, path: &[&str]) -> &'a [Value] {
    at(value, path).as_sequence().map_or(&[], Vec::as_slice)
}

pub fn string_map(value: &Value) -> BTreeMap<String, String> {
    let Some(map) = value.as_mapping() else { return BTreeMap::new() };
    map.iter()
        .map(|(k, v)| {
            let (Some(k), Some(v)) = (k.as_str(), v.as_str()) else { panic!("not a string map: {value:?}") };
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

pub fn port_number(value: &Value) -> u16 {
    value.as_u64().and_then(|n| u16::try_from(n).ok()).unwrap_or_else(|| panic!("{value:?} is not a port number"))
}

pub fn host_port(addr: &str) -> (&str, u16) {
    let (host, port) = addr.rsplit_once(':').unwrap_or_else(|| panic!("{addr:?} is not host:port"));
    (host, port.parse().unwrap_or_else(|_| panic!("{addr:?} has no numeric port")))
}

#[derive(Debug)]
pub struct Object {
    pub file: String,
    pub kind: String,
    pub name: String,
    pub doc: Value,
}

/// A pod-creating object and the one container it runs.
#[derive(Debug)]
pub struct Workload<'a> {
    pub object: &'a Object,
    pub pod: &'a Value,
    pub labels: BTreeMap<String, String>,
    pub container: &'a Value,
}

pub struct Manifests {
    pub objects: Vec<Object>,
}

impl Manifests {
    pub fn load() -> Self {
        let dir = repo().join("deploy/k8s");
        let mut objects = Vec::new();
        for file in yaml_files(&dir) {
            let source = read(&format!("deploy/k8s/{file}"));
            if file == "kustomization.yaml" {
                continue;
            }
            for document in serde_norway::Deserializer::from_str(&source) {
                let doc = <Value as serde::Deserialize>::deserialize(document)
                    .unwrap_or_else(|e| panic!("deploy/k8s/{file}: {e}"));
                if doc.is_null() {
                    continue;
                }
                let kind = text(&doc, &["kind"]).to_owned();
                let name = text(&doc, &["metadata", "name"]).to_owned();
                assert!(at(&doc, &["apiVersion"]).is_string(), "{file}: {kind} {name} has no apiVersion");
                objects.push(Object { file: file.clone(), kind, name, doc });
            }
        }
        Manifests { objects }
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Object> + 'a {
        self.objects.iter().filter(move |o| o.kind == kind)
    }

    pub fn get(&self, kind: &str, name: &str) -> &Object {
        self.objects
            .iter()
            .find(|o| o.kind == kind && o.name == name)
            .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/k8s"))
    }

    pub fn workloads(&self) -> Vec<Workload<'_>> {
        let kinds = ["StatefulSet", "Deployment", "DaemonSet"];
        self.objects
            .iter()
            .filter(|o| kinds.contains(&o.kind.as_str()))
            .map(|object| {
                let template = at(&object.doc, &["spec", "template"]);
                let pod = at(template, &["spec"]);
                let containers = seq(pod, &["containers"]);
                assert_eq!(containers.len(), 1, "{} {}: one container per pod", object.kind, object.name);
                let labels = string_map(at(template, &["metadata", "labels"]));
                Workload { object, pod, labels, container: &containers[0] }
            })
            .collect()
    }

    pub fn workload(&self, name: &str) -> Workload<'_> {
        self.workloads().into_iter().find(|w| w.object.name == name).unwrap_or_else(|| panic!("no workload {name}"))
    }

    /// The workloads whose pods a label selector picks.
    pub fn selected(&self, selector: &BTreeMap<String, String>) -> Vec<Workload<'_>> {
        assert!(!selector.is_empty(), "an empty selector selects everything");
        self.workloads().into_iter().filter(|w| selector.iter().all(|(k, v)| w.labels.get(k) == Some(v))).collect()
    }

    /// Where a TCP connection to `addr` from inside the namespace lands: the workload, the
    /// container port, and for a StatefulSet pod name the ordinal.
    pub fn route(&self, addr: &str) -> (String, u16, Option<usize>) {
        let (host, port) = host_port(addr);
        let labels: Vec<&str> = host.split('.').collect();
        let namespaced = |rest: &[&str]| {
            rest.is_empty() || rest == [SAMPLE_NAMESPACE] || rest.starts_with(&[SAMPLE_NAMESPACE, "svc"])
        };
        // <pod>.<headless service>[.<namespace>...]: DNS gives the pod's IP, no port mapping.
        let set = (labels.len() >= 2 && namespaced(&labels[2..]))
            .then(|| self.of_kind("StatefulSet").find(|s| text(&s.doc, &["spec", "serviceName"]) == labels[1]))
            .flatten();
        if let Some(set) = set {
            let ordinal = labels[0]
                .strip_prefix(&format!("{}-", set.name))
                .and_then(|n| n.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("{addr}: {} is not a pod of {}", labels[0], set.name));
            let replicas = at(&set.doc, &["spec", "replicas"]).as_u64().unwrap_or(1) as usize;
            assert!(ordinal < replicas, "{addr}: {} has {replicas} replicas", set.name);
            let service = self.get("Service", labels[1]);
            assert!(
                seq(&service.doc, &["spec", "ports"]).iter().any(|p| port_number(&p["port"]) == port),
                "{addr}: the headless Service {} does not list port {port}",
                service.name
            );
            let workload = self.workload(&set.name);
            assert!(container_ports(workload.container).values().any(|p| *p == port), "{addr}: no such container port");
            return (set.name.clone(), port, Some(ordinal));
        }
        assert!(namespaced(&labels[1..]), "{addr}: not a name in this namespace");
        let service = self.get("Service", labels[0]);
        let spec_port = seq(&service.doc, &["spec", "ports"])
            .iter()
            .find(|p| port_number(&p["port"]) == port)
            .unwrap_or_else(|| panic!("{addr}: Service {} has no port {port}", service.name));
        let selected = self.selected(&string_map(at(&service.doc, &["spec", "selector"])));
        assert_eq!(selected.len(), 1, "{addr}: Service {} must select one workload", service.name);
        let target = if spec_port["targetPort"].is_null() { &spec_port["port"] } else { &spec_port["targetPort"] };
        let container_port = resolve_port(selected[0].container, target)
            .unwrap_or_else(|| panic!("{addr}: targetPort {target:?} is no container port"));
        (selected[0].object.name.clone(), container_port, None)
    }
}

pub fn yaml_files(dir: &Path) -> BTreeSet<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    entries
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml") || name.ends_with(".yml"))
        .collect()
}

/// Container port name -> number; every port must be named (Services and probes use names).
pub fn container_ports(container: &Value) -> BTreeMap<String, u16> {
    seq(container, &["ports"])
        .iter()
        .map(|p| {
            let name = p["name"].as_str().unwrap_or_else(|| panic!("unnamed container port {p:?}"));
            (name.to_owned(), port_number(&p["containerPort"]))
        })
        .collect()
}

/// A Service targetPort or probe port (a name or a number) as a declared container port.
pub fn resolve_port(container: &Value, port: &Value) -> Option<u16> {
    let ports = container_ports(container);
    match port.as_str() {
        Some(name) => ports.get(name).copied(),
        None => Some(port_number(port)).filter(|n| ports.values().any(|p| p == n)),
    }
}

/// The container's environment as the kubelet would set it: downward-API fields filled with
/// sample values, `$(VAR)` references to earlier variables expanded.
pub fn container_env(container: &Value, pod_name: &str) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in seq(container, &["env"]) {
        let name = text(var, &["name"]).to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            expand(value, &env)
        } else {
            match text(var, &["valueFrom", "fieldRef", "fieldPath"]) {
                "metadata.name" => pod_name.to_owned(),
                "metadata.namespace" => SAMPLE_NAMESPACE.to_owned(),
                "status.podIP" => SAMPLE_POD_IP.to_owned(),
                "spec.nodeName" => SAMPLE_NODE.to_owned(),
                other => panic!("env {name}: add a sample value for fieldRef {other}"),
            }
        };
        env.push((name, value));
    }
    env
}

pub fn expand(value: &str, env: &[(String, String)]) -> String {
    let expanded = env.iter().fold(value.to_owned(), |acc, (name, v)| acc.replace(&format!("$({name})"), v));
    assert!(!expanded.contains("$("), "{value:?} refers to a variable not defined before it");
    expanded
}

/// Where a file or directory a container uses comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum Source {
    ConfigMap { name: String, key: String },
    Secret { name: String, key: String },
    HostPath(String),
    Claim(String),
}

impl Workload<'_> {
    pub fn name(&self) -> &str {
        &self.object.name
    }

    /// The volume behind `path` (the deepest mount containing it) and the key within it.
    pub fn source(&self, path: &str) -> Source {
        let mount = seq(self.container, &["volumeMounts"])
            .iter()
            .filter(|m| {
                let dir = text(m, &["mountPath"]).trim_end_matches('/');
                path == dir || path.starts_with(&format!("{dir}/"))
            })
            .max_by_key(|m| text(m, &["mountPath"]).len())
            .unwrap_or_else(|| panic!("{}: {path} is on no volume (the root filesystem is read-only)", self.name()));
        let relative = path[text(mount, &["mountPath"]).trim_end_matches('/').len()..].trim_start_matches('/');
        let volume_name = text(mount, &["name"]);
        let key = |items: &[Value]| {
            if items.is_empty() {
                return relative.to_owned();
            }
            let item = items.iter().find(|i| text(i, &["path"]) == relative);
            text(item.unwrap_or_else(|| panic!("{}: {path} is in no item of {volume_name}", self.name())), &["key"])
                .to_owned()
        };
        if let Some(volume) = seq(self.pod, &["volumes"]).iter().find(|v| text(v, &["name"]) == volume_name) {
            if let Some(config_map) = volume.get("configMap") {
                let name = text(config_map, &["name"]).to_owned();
                return Source::ConfigMap { name, key: key(seq(config_map, &["items"])) };
            }
            if let Some(secret) = volume.get("secret") {
                let name = text(secret, &["secretName"]).to_owned();
                return Source::Secret { name, key: key(seq(secret, &["items"])) };
            }
            if let Some(host) = volume.get("hostPath") {
                return Source::HostPath(text(host, &["path"]).to_owned());
            }
            panic!("{}: volume {volume_name} is of a kind this test does not know", self.name());
        }
        let claims = seq(&self.object.doc, &["spec", "volumeClaimTemplates"]);
        assert!(
            claims.iter().any(|c| text(c, &["metadata", "name"]) == volume_name),
            "{}: volume {volume_name} is not declared",
            self.name()
        );
        Source::Claim(volume_name.to_owned())
    }

    /// The pod names to check: every ordinal of a StatefulSet, one sample pod otherwise.
    pub fn pod_names(&self) -> Vec<String> {
        match self.object.kind.as_str() {
            "StatefulSet" => (0..self.replicas()).map(|i| format!("{}-{i}", self.name())).collect(),
            _ => vec![format!("{}-7d9f8b6c5-x2x4z", self.name())],
        }
    }

    pub fn pod_template(&self) -> &Value {
        at(&self.object.doc, &["spec", "template"])
    }

    pub fn replicas(&self) -> usize {
        at(&self.object.doc, &["spec", "replicas"]).as_u64().unwrap_or(1) as usize
    }

    /// The config file the container is started with (`--config PATH` in its args), its
    /// ConfigMap and key, and its text.
    pub fn config(&self, manifests: &Manifests, pod_name: &str) -> (String, String, String) {
        assert!(at(self.container, &["command"]).is_null(), "{}: the image's entrypoint runs the binary", self.name());
        let env = container_env(self.container, pod_name);
        let args: Vec<String> = seq(self.container, &["args"])
            .iter()
            .map(|a| expand(a.as_str().unwrap_or_else(|| panic!("{}: arg {a:?}", self.name())), &env))
            .collect();
        let path = args
            .iter()
            .position(|a| a == "--config")
            .and_then(|i| args.get(i + 1))
            .unwrap_or_else(|| panic!("{}: no --config in {args:?}", self.name()));
        let Source::ConfigMap { name, key } = self.source(path) else {
            panic!("{}: {path} is not from a ConfigMap", self.name());
        };
        let config_map = manifests.get("ConfigMap", &name);
        let body = at(&config_map.doc, &["data", &key])
            .as_str()
            .unwrap_or_else(|| panic!("{}: ConfigMap {name} has no key {key} (pod {pod_name})", self.name()));
        (name, key, body.to_owned())
    }

    /// A listener's address must bind the declared container port `port_name`.
    pub fn assert_listens(&self, what: &str, addr: SocketAddr, port_name: &str) {
        let declared = container_ports(self.container).get(port_name).copied();
        assert_eq!(Some(addr.port()), declared, "{}: {what} {addr} vs container port {port_name}", self.name());
        assert!(addr.ip().is_unspecified(), "{}: {what} {addr} must listen on all addresses", self.name());
    }

    /// The three TLS files come from one Secret.
    pub fn assert_tls_from_secret(&self, tls: &muster_config::TlsConfig) {
        assert!(!tls.insecure, "{}: plaintext in a deployment", self.name());
        let files = [&tls.ca_file, &tls.cert_file, &tls.key_file];
        let secrets: BTreeSet<String> = files
            .iter()
            .map(|file| {
                let path = file.as_ref().unwrap_or_else(|| panic!("{}: a TLS file is missing", self.name()));
                match self.source(&path.display().to_string()) {
                    Source::Secret { name, .. } => name,
                    other => panic!("{}: {} comes from {other:?}, not a Secret", self.name(), path.display()),
                }
            })
            .collect();
        assert_eq!(secrets.len(), 1, "{}: TLS files from one Secret", self.name());
    }
}
