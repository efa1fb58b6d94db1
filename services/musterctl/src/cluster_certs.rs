//! The certificate part of `musterctl cluster status`: every member says when the certificates
//! it knows of expire (its own, its CAs, and those its clients presented: registrars,
//! gateways, operators, other nodes), and status shows the earliest across the cluster, so
//! one command answers "what lapses first".

use muster_client::ControlPlaneClient;
use muster_proto::v1;

/// One certificate and the node that reported it.
#[derive(Clone, Debug, PartialEq)]
pub struct Known {
    pub expiry: v1::CertificateExpiry,
    pub seen_by: u64,
}

/// What the members said.
#[derive(Debug, Default)]
pub struct Report {
    /// The newest known certificate per (role, name), earliest expiry first.
    pub certificates: Vec<Known>,
    /// Members that did not answer (their certificates are missing).
    pub unreachable: Vec<String>,
}

/// Asks every member of `meta` (the answer of one of them) for its certificates.
pub async fn gather(client: &ControlPlaneClient, meta: &v1::ClusterMembership) -> Report {
    let mut report = Report::default();
    let mut all: Vec<Known> = known(meta);
    for member in meta.members.iter().filter(|member| member.node_id != meta.node_id) {
        match client.metadata_of(&member.api_addr).await {
            Ok(answer) => all.extend(known(&answer)),
            Err(err) => report.unreachable.push(format!("node {} ({}): {err}", member.node_id, member.api_addr)),
        }
    }
    report.certificates = newest_per_identity(all);
    report
}

fn known(meta: &v1::ClusterMembership) -> Vec<Known> {
    meta.certificates.iter().map(|expiry| Known { expiry: expiry.clone(), seen_by: meta.node_id }).collect()
}

/// How much a report is worth: a node's word on its own certificate and CAs beats what a
/// client presented on a connection (which may predate a renewal).
fn authority(known: &Known) -> u8 {
    u8::from(known.expiry.source != v1::CertificateSource::Peer as i32)
}

/// One entry per (role, name): the most authoritative report, and among those the latest
/// expiry (an older one is a certificate renewed since), earliest first.
fn newest_per_identity(all: Vec<Known>) -> Vec<Known> {
    let mut newest: std::collections::BTreeMap<(String, String), Known> = Default::default();
    for known in all {
        let key = (known.expiry.role.clone(), known.expiry.name.clone());
        let rank = |k: &Known| (authority(k), k.expiry.not_after_unix);
        match newest.get(&key) {
            Some(kept) if rank(kept) >= rank(&known) => {}
            _ => {
                newest.insert(key, known);
            }
        }
    }
    let mut list: Vec<Known> = newest.into_values().collect();
    list.sort_by_key(|known| known.expiry.not_after_unix);
    list
}

/// `12d 3h`, `5h 10m`, `expired 2h ago`: how far off an expiry is.
fn from_now(not_after_unix: i64, now_unix: i64) -> String {
    let left = not_after_unix - now_unix;
    let span = muster_tls::humanize;
    if left < 0 { format!("expired {} ago", span(-left)) } else { format!("in {}", span(left)) }
}

fn source_name(source: i32) -> &'static str {
    match v1::CertificateSource::try_from(source) {
        Ok(v1::CertificateSource::Own) => "own",
        Ok(v1::CertificateSource::TrustedCa) => "trusted CA",
        Ok(v1::CertificateSource::Peer) => "client",
        _ => "unknown",
    }
}

/// The status lines: the earliest expiry, and who could not be asked.
pub fn lines(report: &Report, now_unix: i64) -> Vec<String> {
    let mut lines = Vec::new();
    match report.certificates.first() {
        None => lines.push("certificates: none reported (TLS off?)".to_string()),
        Some(first) => lines.push(format!(
            "certificates: earliest expiry {}/{} at {} ({}; {} of node {}); {} known",
            first.expiry.role,
            first.expiry.name,
            crate::output::unix_time(first.expiry.not_after_unix),
            from_now(first.expiry.not_after_unix, now_unix),
            source_name(first.expiry.source),
            first.seen_by,
            report.certificates.len(),
        )),
    }
    for missing in &report.unreachable {
        lines.push(format!("  not asked: {missing}"));
    }
    lines
}

pub fn json(report: &Report) -> serde_json::Value {
    let list: Vec<serde_json::Value> = report
        .certificates
        .iter()
        .map(|known| {
            serde_json::json!({
                "role": known.expiry.role, "name": known.expiry.name,
                "not_after_unix": known.expiry.not_after_unix, "source": source_name(known.expiry.source),
                "seen_by": known.seen_by,
            })
        })
        .collect();
    serde_json::json!({
        "earliest": list.first().cloned(),
        "certificates": list,
        "unreachable": report.unreachable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(role: &str, name: &str, not_after_unix: i64, seen_by: u64) -> Known {
        Known {
            expiry: v1::CertificateExpiry {
                role: role.into(),
                name: name.into(),
                not_after_unix,
                source: v1::CertificateSource::Peer as i32,
            },
            seen_by,
        }
    }

    #[test]
    fn a_nodes_word_on_its_own_certificate_beats_what_its_peers_saw() {
        let mut own = cert("control-plane", "node-2", 100, 2);
        own.expiry.source = v1::CertificateSource::Own as i32;
        // Node 1 still has node 2's older connection, with the certificate it renewed since...
        // and a later one would win too, were node 2 not the authority on itself.
        let list = newest_per_identity(vec![cert("control-plane", "node-2", 900, 1), own.clone()]);
        assert_eq!(list, [own]);
    }

    #[test]
    fn the_newest_sighting_of_each_certificate_counts_and_the_earliest_comes_first() {
        let list = newest_per_identity(vec![
            cert("gateway", "gw-1", 100, 1),
            cert("gateway", "gw-1", 900, 2),
            cert("control-plane", "node-2", 500, 1),
            cert("ca", "muster CA", 5000, 3),
        ]);
        let names: Vec<(&str, i64)> = list.iter().map(|k| (k.expiry.name.as_str(), k.expiry.not_after_unix)).collect();
        assert_eq!(names, [("node-2", 500), ("gw-1", 900), ("muster CA", 5000)]);
        assert_eq!(list[1].seen_by, 2);
    }

    #[test]
    fn the_status_line_names_the_earliest_and_how_far_off_it_is() {
        let report =
            Report { certificates: vec![cert("registrar", "reg-1", 2 * 86_400 + 7200, 3)], unreachable: vec![] };
        let line = &lines(&report, 0)[0];
        assert!(line.contains("registrar/reg-1") && line.contains("in 2d 2h") && line.contains("node 3"), "{line}");
        assert_eq!(from_now(0, 3600), "expired 1h 0m ago");
    }
}
