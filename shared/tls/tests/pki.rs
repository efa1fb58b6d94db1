//! CA, certificate and PKI-directory behaviour without any network: what `musterctl tls init`
//! and the services' startup rely on.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use muster_tls::{
    CertSpec, CertificateAuthority, PeerIdentity, PkiInit, Role, TlsError, TlsFiles, default_node_hosts, init_pki,
    peer_identity, write_atomic,
};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

const DAY: Duration = Duration::from_secs(24 * 3600);

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap().to_vec()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn init(dir: &Path, nodes: &[&str], operator: bool, force: bool) -> Result<Vec<String>, TlsError> {
    let report = init_pki(&PkiInit {
        dir: dir.to_owned(),
        cluster_name: "test".to_owned(),
        nodes: nodes.iter().map(|n| CertSpec::node(n, Role::ControlPlane, DAY)).collect(),
        operator,
        force,
        validity: 10 * DAY,
        ca_validity: 10 * DAY,
    })?;
    Ok(report.files.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect())
}

#[test]
fn issue_roundtrip_carries_sans_ekus_and_identity() {
    let ca = CertificateAuthority::generate("test CA", 10 * DAY).unwrap();
    let pem = ca.issue(&CertSpec::node("w-1", Role::Worker, DAY)).unwrap();
    assert!(pem.key_pem.contains("PRIVATE KEY"));

    let leaf_der = der(&pem.cert_pem);
    let ca_der = der(ca.cert_pem());
    let (_, leaf) = parse_x509_certificate(&leaf_der).unwrap();
    let (_, ca_cert) = parse_x509_certificate(&ca_der).unwrap();
    assert!(ca_cert.is_ca());
    assert!(ca_cert.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert!(!leaf.is_ca());
    leaf.verify_signature(Some(ca_cert.public_key())).unwrap();
    assert_eq!(leaf.issuer(), ca_cert.subject());
    let cn = leaf.subject().iter_common_name().next().unwrap();
    assert_eq!(cn.as_str().unwrap(), "w-1");

    let sans: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("dns:{d}"),
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::IPAddress(ip) => format!("ip:{}", ip.len()),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(sans, ["dns:w-1", "dns:localhost", "ip:4", "ip:16", "uri:spiffe://muster/worker/w-1"]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);

    assert_eq!(peer_identity(&leaf_der), Some(PeerIdentity { role: Role::Worker, name: "w-1".to_owned() }));
    assert_eq!(peer_identity(&ca_der), None);
    assert_eq!(peer_identity(b"not a certificate"), None);

    // Leaf validity is capped at the CA's.
    let long = ca.issue(&CertSpec::node("w-2", Role::Worker, 1000 * DAY)).unwrap();
    let long_der = der(&long.cert_pem);
    let (_, long) = parse_x509_certificate(&long_der).unwrap();
    assert!(long.validity().not_after <= ca_cert.validity().not_after);
}

#[test]
fn operator_cert_is_client_only() {
    let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
    let pem = ca.issue(&CertSpec::operator(DAY)).unwrap();
    let leaf_der = der(&pem.cert_pem);
    let (_, leaf) = parse_x509_certificate(&leaf_der).unwrap();
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    let id = peer_identity(&leaf_der).unwrap();
    assert_eq!((id.role, id.name.as_str()), (Role::Operator, "operator"));
    assert_eq!(id.spiffe_id(), "spiffe://muster/operator/operator");
}

#[test]
fn from_pem_roundtrip_and_rejections() {
    let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
    let loaded = CertificateAuthority::from_pem(ca.cert_pem(), ca.key_pem()).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(loaded.key_pem(), ca.key_pem());
    assert_eq!(loaded.public_key_sha256(), ca.public_key_sha256());

    // Certificates issued by the reloaded CA verify against the original CA certificate.
    let leaf_der = der(&loaded.issue(&CertSpec::node("n", Role::Gateway, DAY)).unwrap().cert_pem);
    let ca_der = der(ca.cert_pem());
    let (_, leaf) = parse_x509_certificate(&leaf_der).unwrap();
    let (_, ca_cert) = parse_x509_certificate(&ca_der).unwrap();
    leaf.verify_signature(Some(ca_cert.public_key())).unwrap();

    let other = CertificateAuthority::generate("other CA", DAY).unwrap();
    let err = CertificateAuthority::from_pem(ca.cert_pem(), other.key_pem()).unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("cert_pem"), "{err}");

    let leaf = ca.issue(&CertSpec::node("n", Role::Gateway, DAY)).unwrap();
    let err = CertificateAuthority::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");

    let err = CertificateAuthority::from_pem("garbage", ca.key_pem()).unwrap_err();
    assert!(err.to_string().contains("no CERTIFICATE block"), "{err}");
}

#[test]
fn public_key_sha256_is_the_spki_digest_and_stable() {
    let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
    let ca_der = der(ca.cert_pem());
    let (_, cert) = parse_x509_certificate(&ca_der).unwrap();
    let expected = hex::encode(Sha256::digest(cert.public_key().raw));
    assert_eq!(ca.public_key_sha256(), expected);
    assert_eq!(ca.public_key_sha256(), ca.public_key_sha256());
    assert_eq!(ca.public_key_sha256().len(), 64);
    let other = CertificateAuthority::generate("test CA", DAY).unwrap();
    assert_ne!(other.public_key_sha256(), expected);
}

#[test]
fn invalid_specs_name_the_field() {
    let ca = CertificateAuthority::generate("test CA", DAY).unwrap();
    let mut spec = CertSpec::node("w-1", Role::Worker, DAY);
    spec.hosts.push("bad host".to_owned());
    let err = ca.issue(&spec).unwrap_err().to_string();
    assert!(err.contains("CertSpec.hosts") && err.contains("bad host"), "{err}");

    let mut spec = CertSpec::node("a/b", Role::Worker, DAY);
    assert!(ca.issue(&spec).unwrap_err().to_string().contains("CertSpec.name"));
    spec.name = "w".to_owned();
    spec.server_auth = false;
    spec.client_auth = false;
    assert!(ca.issue(&spec).unwrap_err().to_string().contains("client_auth"));
    spec.client_auth = true;
    spec.validity = Duration::ZERO;
    assert!(ca.issue(&spec).unwrap_err().to_string().contains("validity"));
    assert!(CertificateAuthority::generate("", DAY).is_err());
}

#[test]
fn roles_roundtrip() {
    for role in Role::ALL {
        assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
        assert_eq!(role.to_string(), role.as_str());
    }
    let err = "admin".parse::<Role>().unwrap_err().to_string();
    assert!(err.contains("\"admin\"") && err.contains("control-plane"), "{err}");
    assert_eq!(default_node_hosts("cp-1"), ["cp-1", "localhost", "127.0.0.1", "::1"]);
}

#[test]
fn init_pki_writes_files_with_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let written = init(&dir, &["cp-1", "cp-2"], true, false).unwrap();
    assert_eq!(
        written,
        [
            "ca-key.pem",
            "ca.pem",
            "worker-ca-key.pem",
            "worker-ca.pem",
            "cp-1-key.pem",
            "cp-1.pem",
            "cp-2-key.pem",
            "cp-2.pem",
            "operator-key.pem",
            "operator.pem"
        ]
    );
    assert_eq!(mode(&dir), 0o700);
    for name in &written {
        let want = if name.ends_with("-key.pem") { 0o600 } else { 0o644 };
        assert_eq!(mode(&dir.join(name)), want, "{name}");
    }
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // What was written loads as tonic configs.
    let files = TlsFiles::in_dir(&dir, "cp-1");
    files.server_tls().unwrap();
    files.client_tls().unwrap();
    TlsFiles::in_dir(&dir, "operator").client_tls_for("cp-1").unwrap();
    let ca = CertificateAuthority::load(&dir.join("ca.pem"), &dir.join("ca-key.pem")).unwrap();
    let report_pin = init_pki(&PkiInit {
        dir: dir.clone(),
        cluster_name: "test".to_owned(),
        nodes: Vec::new(),
        operator: false,
        force: false,
        validity: DAY,
        ca_validity: DAY,
    })
    .unwrap()
    .ca_public_key_sha256;
    assert_eq!(report_pin, ca.public_key_sha256());
}

#[test]
fn init_pki_rerun_adds_only_missing_certs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir, &["cp-1"], false, false).unwrap();
    let ca_before = fs::read(dir.join("ca.pem")).unwrap();
    let cp1_before = fs::read(dir.join("cp-1.pem")).unwrap();

    let written = init(dir, &["cp-1", "cp-2"], true, false).unwrap();
    assert_eq!(written, ["cp-2-key.pem", "cp-2.pem", "operator-key.pem", "operator.pem"]);
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);
    assert_eq!(fs::read(dir.join("cp-1.pem")).unwrap(), cp1_before);
    // The new cert is signed by the existing CA.
    TlsFiles::in_dir(dir, "cp-2").server_tls().unwrap();

    assert!(init(dir, &["cp-1", "cp-2"], true, false).unwrap().is_empty());

    // A node whose key went missing is reissued.
    fs::remove_file(dir.join("cp-2-key.pem")).unwrap();
    assert_eq!(init(dir, &["cp-2"], false, false).unwrap(), ["cp-2-key.pem", "cp-2.pem"]);
}

#[test]
fn init_pki_refuses_to_overwrite_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir, &["cp-1"], false, false).unwrap();
    let ca_before = fs::read(dir.join("ca.pem")).unwrap();

    fs::remove_file(dir.join("ca-key.pem")).unwrap();
    let err = init(dir, &["cp-2"], false, false).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TlsError::RefuseOverwrite { .. }), "{msg}");
    assert!(msg.contains("ca.pem") && msg.contains("--force"), "{msg}");
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);
    assert!(!dir.join("cp-2.pem").exists());

    // --force replaces the CA and reissues what was asked.
    let written = init(dir, &["cp-1"], false, true).unwrap();
    assert_eq!(written, ["ca-key.pem", "ca.pem", "worker-ca-key.pem", "worker-ca.pem", "cp-1-key.pem", "cp-1.pem"]);
    assert_ne!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);
    TlsFiles::in_dir(dir, "cp-1").server_tls().unwrap();
}

#[test]
fn init_pki_creates_a_separate_worker_ca_and_keeps_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    init(dir, &["cp-1"], false, false).unwrap();
    let worker_ca = CertificateAuthority::load(&dir.join("worker-ca.pem"), &dir.join("worker-ca-key.pem")).unwrap();
    let cluster_ca = CertificateAuthority::load(&dir.join("ca.pem"), &dir.join("ca-key.pem")).unwrap();
    assert_ne!(worker_ca.public_key_sha256(), cluster_ca.public_key_sha256(), "a CA of its own");
    assert_eq!(mode(&dir.join("worker-ca-key.pem")), 0o600);
    assert_eq!(worker_ca.cert_sha256().len(), 64);

    // Kept on a re-run; reported by fingerprint.
    let report = init_pki(&PkiInit {
        dir: dir.to_owned(),
        cluster_name: "test".to_owned(),
        nodes: Vec::new(),
        operator: false,
        force: false,
        validity: DAY,
        ca_validity: DAY,
    })
    .unwrap();
    assert!(report.files.is_empty(), "{:?}", report.files);
    assert_eq!(report.worker_ca_sha256, worker_ca.cert_sha256());

    // A directory made before the worker CA existed gets one added, nothing else changes.
    fs::remove_file(dir.join("worker-ca.pem")).unwrap();
    fs::remove_file(dir.join("worker-ca-key.pem")).unwrap();
    let ca_before = fs::read(dir.join("ca.pem")).unwrap();
    assert_eq!(init(dir, &["cp-1"], false, false).unwrap(), ["worker-ca-key.pem", "worker-ca.pem"]);
    assert_eq!(fs::read(dir.join("ca.pem")).unwrap(), ca_before);

    // Half a worker CA is refused, naming the missing file.
    fs::remove_file(dir.join("worker-ca-key.pem")).unwrap();
    let err = init(dir, &[], false, false).unwrap_err().to_string();
    assert!(err.contains("worker-ca-key.pem"), "{err}");
}

#[test]
fn init_pki_rejects_bad_requests_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    for nodes in [&["ca"][..], &["worker-ca"], &["a", "a"], &["x-key"], &["../evil"]] {
        let err = init(&dir, nodes, false, false).unwrap_err().to_string();
        assert!(err.contains("CertSpec.name"), "{err}");
    }
    let err = init(&dir, &["operator"], true, false).unwrap_err().to_string();
    assert!(err.contains("requested twice"), "{err}");
    assert!(!dir.exists());
}

#[test]
fn tls_files_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let missing = TlsFiles::in_dir(dir, "cp-1");
    let err = missing.server_tls().unwrap_err().to_string();
    assert!(
        err.contains(&format!("reading CA certificate {}", missing.ca.display()))
            && err.contains("musterctl tls init")
            && err.contains("--insecure"),
        "{err}"
    );

    init(dir, &["cp-1", "cp-2"], false, false).unwrap();
    let other = tempfile::tempdir().unwrap();
    init(other.path(), &["cp-1"], false, false).unwrap();

    let foreign = TlsFiles {
        cert: other.path().join("cp-1.pem"),
        key: other.path().join("cp-1-key.pem"),
        ..TlsFiles::in_dir(dir, "cp-1")
    };
    let err = foreign.client_tls().unwrap_err();
    assert!(matches!(err, TlsError::NotSignedByCa { .. }), "{err}");

    let mismatched = TlsFiles { key: dir.join("cp-2-key.pem"), ..TlsFiles::in_dir(dir, "cp-1") };
    let err = mismatched.server_tls().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(err.to_string().contains("cp-2-key.pem"), "{err}");

    fs::write(dir.join("cp-1.pem"), "junk").unwrap();
    let err = TlsFiles::in_dir(dir, "cp-1").server_tls().unwrap_err().to_string();
    assert!(err.contains("cp-1.pem") && err.contains("no CERTIFICATE"), "{err}");
}

#[test]
fn write_atomic_replaces_with_exact_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("secret.pem");
    write_atomic(&path, b"one", 0o600).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"one");
    assert_eq!(mode(&path), 0o600);
    write_atomic(&path, b"two", 0o644).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"two");
    assert_eq!(mode(&path), 0o644);
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);

    let err = write_atomic(&tmp.path().join("no/such/dir/x"), b"", 0o600).unwrap_err();
    assert!(err.to_string().contains("no/such/dir/x"), "{err}");
}

#[test]
fn public_key_pin_matches_the_ca_fingerprint() {
    let ca = muster_tls::CertificateAuthority::generate("pin test", std::time::Duration::from_secs(3600)).unwrap();
    let pin = muster_tls::public_key_pin(ca.cert_pem(), "test").unwrap();
    assert_eq!(hex::encode(pin), ca.public_key_sha256());
}

#[test]
fn sign_csr_keeps_only_the_identity_the_signer_chose() {
    let ca = muster_tls::CertificateAuthority::generate("worker CA", std::time::Duration::from_secs(3600)).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let uri = "spiffe://c1/worker/7";
    let signed = ca.sign_csr(&csr, "worker-7", uri, std::time::Duration::from_secs(600)).unwrap();
    assert_eq!(signed.serial_hex.len(), 32);
    let der = rustls::pki_types::CertificateDer::from_pem_slice(signed.cert_pem.as_bytes()).unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let sans = cert.subject_alternative_name().unwrap().unwrap().value.general_names.clone();
    assert_eq!(sans.len(), 1, "requested SANs are dropped: {sans:?}");
    assert!(matches!(sans[0], x509_parser::extensions::GeneralName::URI(u) if u == uri));
    assert!(!cert.is_ca(), "a CSR cannot ask to become a CA");
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.client_auth && !eku.server_auth);
    use rcgen::PublicKeyData;
    assert_eq!(cert.public_key().raw, key.subject_public_key_info(), "the requester's own key is certified");
    assert!(ca.sign_csr("garbage", "w", uri, std::time::Duration::from_secs(60)).is_err());
}
