//! Who may call what: one table for every gRPC method of every Muster port, default deny.
//!
//! Why a table and not checks in handlers: a check that lives in each handler is a check that
//! a new handler forgets (component certificates were cluster admins because two services
//! never checked). Here every method names the roles that may call it and the port that
//! serves it; [`crate::auth::AuthorizeLayer`] refuses a method that has no entry, and a test
//! walks every method in the descriptor sets the servers reflect and fails if one is missing.
//!
//! Roles come from the caller's certificate (`spiffe://muster/<role>/<name>`, or a worker
//! certificate from the worker CA). Control-plane nodes relay operator calls to the leader;
//! the leader checks the relayed call against the original caller's role, so relaying grants
//! nothing (see `control-plane`'s `leader_forward`).

use muster_tls::Role;

/// Which listener serves a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// The control plane's peer port (`:3668`): Raft between nodes.
    ControlPlaneRaft,
    /// The control plane's API port (`:3669`): operators and Muster components.
    ControlPlaneApi,
    /// The registrar's worker port (`:3670`).
    Registrar,
    /// The heartbeat gateway's worker port (`:3671`).
    Gateway,
    /// Health checks and reflection, on every port.
    Every,
}

/// Who may call a method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, with or without a client certificate: health, reflection, and `Register`
    /// (a worker has no certificate yet; its bootstrap token is the credential).
    Open,
    /// A client certificate of one of these roles.
    Roles(&'static [Role]),
}

/// One method's entry.
#[derive(Clone, Copy, Debug)]
pub struct Rule {
    /// `/package.Service/Method`.
    pub path: &'static str,
    pub port: Port,
    pub access: Access,
}

const OPERATOR: Access = Access::Roles(&[Role::Operator]);
const NODE: Access = Access::Roles(&[Role::ControlPlane]);
const OPERATOR_OR_NODE: Access = Access::Roles(&[Role::Operator, Role::ControlPlane]);
const ANY_COMPONENT: Access = Access::Roles(&[Role::Operator, Role::ControlPlane, Role::Registrar, Role::Gateway]);
const REGISTRAR: Access = Access::Roles(&[Role::Registrar]);
const GATEWAY: Access = Access::Roles(&[Role::Gateway]);
const WORKER: Access = Access::Roles(&[Role::Worker]);
/// Reads and watches: operators, read-only consumers (schedulers, dashboards), and nodes (a
/// follower asks the leader how far to catch up before a linearizable watch starts).
const READER: Access = Access::Roles(&[Role::Operator, Role::Watcher, Role::ControlPlane]);
const OPERATOR_OR_WATCHER: Access = Access::Roles(&[Role::Operator, Role::Watcher]);

const fn rule(path: &'static str, port: Port, access: Access) -> Rule {
    Rule { path, port, access }
}

use Port::{ControlPlaneApi as Api, ControlPlaneRaft as Peer, Every, Gateway, Registrar};

/// Every method of every port. Keep it sorted by port, then service.
pub const RULES: &[Rule] = &[
    // Health and reflection stay open everywhere (load balancers, grpcurl `list`).
    rule("/grpc.health.v1.Health/Check", Every, Access::Open),
    rule("/grpc.health.v1.Health/Watch", Every, Access::Open),
    rule("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", Every, Access::Open),
    rule("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Every, Access::Open),
    // Raft between control-plane nodes only.
    rule("/muster.v1.RaftReplicationService/AppendEntries", Peer, NODE),
    rule("/muster.v1.RaftReplicationService/StreamAppend", Peer, NODE),
    rule("/muster.v1.RaftElectionService/RequestVote", Peer, NODE),
    rule("/muster.v1.RaftElectionService/PreVote", Peer, NODE),
    rule("/muster.v1.SnapshotService/InstallSnapshot", Peer, NODE),
    rule("/muster.v1.SnapshotService/StreamSnapshot", Peer, NODE),
    rule("/muster.v1.SnapshotService/PurgeLog", Peer, NODE),
    // Operators: KV, membership, tokens, workers. A joining node asks to join itself.
    // Watchers (read-only consumers): KV reads and watches, worker lists and watches.
    rule("/muster.v1.RaftClientService/HandleClientWrite", Api, OPERATOR),
    rule("/muster.v1.RaftClientService/HandleClientRead", Api, READER),
    rule("/muster.v1.RaftClientService/Watch", Api, OPERATOR_OR_WATCHER),
    rule("/muster.v1.ClusterManagementService/UpdateClusterConf", Api, OPERATOR),
    rule("/muster.v1.ClusterManagementService/GetClusterMetadata", Api, OPERATOR_OR_NODE),
    rule("/muster.v1.ClusterManagementService/JoinCluster", Api, OPERATOR_OR_NODE),
    rule("/muster.v1.ClusterManagementService/DiscoverLeader", Api, ANY_COMPONENT),
    rule("/muster.v1.TokenService/CreateToken", Api, OPERATOR),
    rule("/muster.v1.TokenService/ListTokens", Api, OPERATOR),
    rule("/muster.v1.TokenService/RevokeToken", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/ListWorkers", Api, OPERATOR_OR_WATCHER),
    rule("/muster.v1.WorkerAdminService/GetWorker", Api, OPERATOR_OR_WATCHER),
    rule("/muster.v1.WorkerAdminService/WatchWorkers", Api, OPERATOR_OR_WATCHER),
    rule("/muster.v1.WorkerAdminService/DrainWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/UndrainWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/PurgeWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/RevokeWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/LabelWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/CordonWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/UncordonWorker", Api, OPERATOR),
    rule("/muster.v1.WorkerAdminService/RotateWorkerCa", Api, OPERATOR),
    rule("/muster.v1.MaintenanceService/SaveSnapshot", Api, OPERATOR),
    // Registrars: their registry calls only.
    rule("/muster.v1.WorkerRegistryService/RegisterWorker", Api, REGISTRAR),
    rule("/muster.v1.WorkerRegistryService/EnsureWorkerCa", Api, REGISTRAR),
    rule("/muster.v1.WorkerRegistryService/RecordWorkerCert", Api, REGISTRAR),
    // Gateways: liveness. The gateway list and the worker CA certificate are public facts
    // within the cluster (registrars hand the list to workers; operators inspect both).
    rule("/muster.v1.LivenessService/ReportLiveness", Api, GATEWAY),
    rule(
        "/muster.v1.LivenessService/ListGateways",
        Api,
        Access::Roles(&[Role::Operator, Role::Registrar, Role::Gateway]),
    ),
    rule(
        "/muster.v1.LivenessService/GetWorkerCaCert",
        Api,
        Access::Roles(&[Role::Operator, Role::Registrar, Role::Gateway]),
    ),
    // Workers: Register with a token (no certificate yet), then their own certificate.
    rule("/muster.v1.WorkerRegistrationService/Register", Registrar, Access::Open),
    rule("/muster.v1.WorkerRegistrationService/Renew", Registrar, WORKER),
    rule("/muster.v1.HeartbeatService/ReportStatus", Gateway, WORKER),
];

/// The entry for `path`, if it has one.
pub fn rule_for(path: &str) -> Option<&'static Rule> {
    RULES.iter().find(|rule| rule.path == path)
}

/// The methods `port` serves (health and reflection included), for tests and docs.
pub fn rules_of(port: Port) -> impl Iterator<Item = &'static Rule> {
    RULES.iter().filter(move |rule| rule.port == port || rule.port == Port::Every)
}

/// Whether a caller of `role` (`None`: no certificate) may call `rule`.
pub fn allows(rule: &Rule, role: Option<Role>) -> bool {
    match rule.access {
        Access::Open => true,
        Access::Roles(roles) => role.is_some_and(|role| roles.contains(&role)),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use prost::Message as _;

    use super::*;

    /// Every `/package.Service/Method` in an encoded `FileDescriptorSet`.
    fn methods_in(encoded: &[u8]) -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(encoded).expect("a valid descriptor set");
        let mut methods = Vec::new();
        for file in set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
        methods
    }

    #[test]
    fn every_reflected_method_has_an_entry() {
        let sets = [
            muster_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
            tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
        ];
        let mut missing = Vec::new();
        let mut seen = HashSet::new();
        for set in sets {
            for method in methods_in(set) {
                if rule_for(&method).is_none() {
                    missing.push(method.clone());
                }
                seen.insert(method);
            }
        }
        assert!(missing.is_empty(), "methods without an authorization entry: {missing:#?}");
        let stale: Vec<_> = RULES.iter().filter(|rule| !seen.contains(rule.path)).map(|rule| rule.path).collect();
        assert!(stale.is_empty(), "entries for methods no descriptor set has: {stale:#?}");
    }

    #[test]
    fn entries_are_unique() {
        let mut paths = HashSet::new();
        for rule in RULES {
            assert!(paths.insert(rule.path), "{} has two entries", rule.path);
        }
    }

    #[test]
    fn components_are_not_admins() {
        let admin = [
            "/muster.v1.ClusterManagementService/UpdateClusterConf",
            "/muster.v1.ClusterManagementService/JoinCluster",
            "/muster.v1.RaftClientService/HandleClientWrite",
            "/muster.v1.TokenService/CreateToken",
            "/muster.v1.WorkerAdminService/RevokeWorker",
            "/muster.v1.WorkerAdminService/RotateWorkerCa",
            "/muster.v1.WorkerAdminService/CordonWorker",
            "/muster.v1.WorkerAdminService/DrainWorker",
            "/muster.v1.WorkerAdminService/UndrainWorker",
            "/muster.v1.WorkerAdminService/PurgeWorker",
        ];
        for path in admin {
            let rule = rule_for(path).unwrap();
            for role in [Role::Gateway, Role::Registrar, Role::Worker] {
                assert!(!allows(rule, Some(role)), "{role} may call {path}");
            }
            assert!(!allows(rule, None), "anyone may call {path}");
            assert!(allows(rule, Some(Role::Operator)));
        }
        let liveness = rule_for("/muster.v1.LivenessService/ReportLiveness").unwrap();
        assert!(!allows(liveness, Some(Role::Registrar)) && !allows(liveness, Some(Role::Operator)));
        let register = rule_for("/muster.v1.WorkerRegistryService/RegisterWorker").unwrap();
        assert!(!allows(register, Some(Role::Gateway)) && !allows(register, Some(Role::Operator)));
        for rule in rules_of(Port::ControlPlaneRaft).filter(|rule| rule.port == Port::ControlPlaneRaft) {
            for role in Role::ALL.into_iter().filter(|role| *role != Role::ControlPlane) {
                assert!(!allows(rule, Some(role)), "{role} may call {}", rule.path);
            }
        }
    }

    #[test]
    fn only_health_reflection_and_register_are_open() {
        let open: Vec<_> = RULES.iter().filter(|rule| rule.access == Access::Open).map(|rule| rule.path).collect();
        assert!(open.iter().all(|path| path.starts_with("/grpc.") || path.ends_with("/Register")), "{open:?}");
    }
}
