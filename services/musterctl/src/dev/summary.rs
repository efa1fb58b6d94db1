//! The text printed once everything is up: where each component listens, where the
//! certificates are, and the commands to type next, each one complete and copy-pasteable.
//! Scripts (the e2e test) read it too, so its last line is a fixed marker.

use std::fmt::Write as _;
use std::path::Path;

use muster_proto::v1;

use super::pki::DevPki;
use super::ports::Addrs;

/// The summary's last line.
pub const READY_LINE: &str = "Ready. Ctrl-C stops every component and exits.";

pub struct Summary<'a> {
    /// How to invoke musterctl again (`musterctl`, or the path it was run as).
    pub program: &'a str,
    pub data_dir: &'a Path,
    pub temporary: bool,
    pub addrs: &'a Addrs,
    pub pki: &'a DevPki,
    pub token_file: &'a Path,
    pub leader: &'a v1::ClusterMembership,
    pub workers: &'a [v1::WorkerRecord],
}

impl Summary<'_> {
    pub fn render(&self) -> String {
        let a = self.addrs;
        let (ca, cert, key) =
            (quote(&self.pki.operator.ca), quote(&self.pki.operator.cert), quote(&self.pki.operator.key));
        let api = a.api.to_string();
        let mut out = String::new();
        let mut row = |label: &str, value: String| {
            let _ = writeln!(out, "  {label:<20}{value}");
        };
        let kept = if self.temporary { " (temporary: removed on exit; --data-dir DIR keeps one)" } else { " (kept)" };
        row("data dir", format!("{}{kept}", self.data_dir.display()));
        row(
            "cluster",
            format!(
                "{} (node {} is the leader, term {})",
                self.leader.cluster_id, self.leader.leader_id, self.leader.term
            ),
        );
        row("control-plane API", format!("{api}  (Raft peers: {})", a.raft));
        row("registrar", a.registrar.to_string());
        row("heartbeat gateway", a.gateway.to_string());
        // Worker ids are the cluster's to give, so agent n need not be worker n: say which is which.
        let workers: Vec<String> =
            self.workers.iter().enumerate().map(|(i, w)| format!("{} (agent {})", w.worker_id, i + 1)).collect();
        row("workers", format!("{} Ready: ids {}", self.workers.len(), workers.join(", ")));
        row("admin HTTP", format!("control plane http://{}/  (/healthz, /readyz, /metrics)", a.control_plane_admin));
        row("", format!("registrar http://{}/  gateway http://{}/", a.registrar_admin, a.gateway_admin));
        let agents: Vec<String> = a.agents_admin.iter().map(|addr| format!("http://{addr}/")).collect();
        row("", format!("agents {}", agents.join("  ")));
        row("CA", ca.clone());
        row("operator cert", cert.clone());
        row("operator key", key.clone());
        row("all certificates", quote(&self.pki.dir));
        row("bootstrap token", quote(self.token_file));

        let tls = format!("-cacert {ca} -cert {cert} -key {key}");
        let mut text = String::from("Muster is running in this process.\n\n");
        text.push_str(&out);
        text.push_str("\nTry:\n");
        let _ = writeln!(text, "  grpcurl {tls} {api} list");
        let _ = writeln!(text, "  grpcurl {tls} {api} muster.v1.ClusterManagementService/GetClusterMetadata");
        let _ = writeln!(
            text,
            "  {} --endpoints {api} --ca {ca} --cert {cert} --key {key} workers list",
            quote(Path::new(self.program))
        );
        let _ = writeln!(text, "\n{READY_LINE}");
        text
    }
}

/// `path` as one shell word: as is when it is plain, else single-quoted.
pub fn quote(path: &Path) -> String {
    let text = path.display().to_string();
    let plain = !text.is_empty() && text.chars().all(|c| c.is_ascii_alphanumeric() || "/._-:+,=@%".contains(c));
    if plain { text } else { format!("'{}'", text.replace('\'', r"'\''")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_stay_as_they_are_and_others_are_quoted() {
        assert_eq!(quote(Path::new("/tmp/muster-dev-x1/tls/ca.pem")), "/tmp/muster-dev-x1/tls/ca.pem");
        assert_eq!(quote(Path::new("/home/me/my dev/ca.pem")), "'/home/me/my dev/ca.pem'");
        assert_eq!(quote(Path::new("/tmp/it's")), r"'/tmp/it'\''s'");
    }

    #[test]
    fn the_commands_name_the_api_and_the_operator_files() {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::super::pki::ensure(dir.path()).unwrap();
        let at = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let addrs = Addrs {
            raft: at(3668),
            api: at(3669),
            control_plane_admin: at(3680),
            registrar: at(3670),
            registrar_admin: at(3681),
            gateway: at(3671),
            gateway_admin: at(3682),
            agents_admin: vec![at(40001)],
        };
        let token = dir.path().join("bootstrap.token");
        let leader = v1::ClusterMembership { leader_id: 1, ..Default::default() };
        let workers = [v1::WorkerRecord { worker_id: 7, ..Default::default() }];
        let summary = Summary {
            program: "musterctl",
            data_dir: dir.path(),
            temporary: true,
            addrs: &addrs,
            pki: &pki,
            token_file: &token,
            leader: &leader,
            workers: &workers,
        };
        let text = summary.render();
        let ca = pki.operator.ca.display();
        let (cert, key) = (pki.operator.cert.display(), pki.operator.key.display());
        let list = format!("  grpcurl -cacert {ca} -cert {cert} -key {key} 127.0.0.1:3669 list");
        assert!(text.lines().any(|line| line == list), "{text}");
        let ctl = format!("  musterctl --endpoints 127.0.0.1:3669 --ca {ca} --cert {cert} --key {key} workers list");
        assert!(text.lines().any(|line| line == ctl), "{text}");
        assert!(text.contains("1 Ready: ids 7 (agent 1)"), "{text}");
        assert_eq!(text.lines().last(), Some(READY_LINE));
    }
}
