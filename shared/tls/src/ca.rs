//! The cluster certificate authority: creates or loads the CA (EC P-256) and issues the leaf
//! certificates carrying Muster's SPIFFE-style identities.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::parse::{certs_from_pem, parse_err, x509};
use crate::spec::invalid;
use crate::{CertSpec, Pem, TlsError};

/// Certificates start this long before they are made, so small clock skew between nodes
/// does not reject a freshly issued certificate.
const BACKDATE: time::Duration = time::Duration::hours(1);

/// A CA that can issue Muster certificates. Holds the CA private key: keep it off nodes.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    key_pem: String,
    not_after: OffsetDateTime,
    spki_sha256: String,
}

impl CertificateAuthority {
    /// A new self-signed CA: EC P-256, `CA:true` (path length 0), keyCertSign and cRLSign.
    pub fn generate(common_name: &str, validity: Duration) -> Result<Self, TlsError> {
        if common_name.trim().is_empty() {
            return Err(invalid("CA common name", common_name, "must not be empty"));
        }
        let (not_before, not_after) = window(validity, "CA validity")?;
        let key = new_key("CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key)
            .map_err(|source| TlsError::Generate { what: format!("CA certificate {common_name:?}"), source })?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        Self::from_pem_at(&cert_pem, &key_pem, "(generated)", "(generated)")
    }

    /// Loads a CA from PEM text. The first certificate in `cert_pem` must be a CA
    /// certificate and `key_pem` its private key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        Self::from_pem_at(cert_pem, key_pem, "cert_pem", "key_pem")
    }

    /// Loads a CA from a certificate file and a key file, e.g. `ca.pem` and `ca-key.pem`.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let cert_pem = crate::files::read_string("CA certificate", cert_path)?;
        let key_pem = crate::files::read_string("CA private key", key_path)?;
        Self::from_pem_at(&cert_pem, &key_pem, &cert_path.display().to_string(), &key_path.display().to_string())
    }

    fn from_pem_at(cert_pem: &str, key_pem: &str, cert_origin: &str, key_origin: &str) -> Result<Self, TlsError> {
        const WHAT: &str = "CA certificate";
        let certs = certs_from_pem(cert_pem.as_bytes(), WHAT, cert_origin)?;
        let der = &certs[0];
        let parsed = x509(der, WHAT, cert_origin)?;
        if !parsed.is_ca() {
            return Err(parse_err(WHAT, cert_origin, "not a CA certificate (basicConstraints CA:true missing)"));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| parse_err("CA private key", key_origin, e))?;
        let spki = parsed.public_key().raw;
        if key.subject_public_key_info() != spki {
            return Err(TlsError::KeyMismatch { cert: cert_origin.to_owned(), key: key_origin.to_owned() });
        }
        let not_after = parsed.validity().not_after.to_datetime();
        let spki_sha256 = hex::encode(Sha256::digest(spki));
        let issuer = Issuer::from_ca_cert_der(der, key).map_err(|e| parse_err(WHAT, cert_origin, e))?;
        Ok(CertificateAuthority {
            issuer,
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            not_after,
            spki_sha256,
        })
    }

    /// The CA certificate (what goes in every node's `ca.pem`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key (what goes in `ca-key.pem`, mode 0600).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Hex SHA-256 of the CA's DER certificate: the fingerprint the control plane records
    /// for the worker CA.
    pub fn cert_sha256(&self) -> String {
        crate::parse::cert_summary(&self.cert_pem, "CA certificate", "(loaded)").map(|s| s.sha256).unwrap_or_default()
    }

    /// Hex SHA-256 of the CA's DER SubjectPublicKeyInfo; join tokens pin the CA with it.
    pub fn public_key_sha256(&self) -> String {
        self.spki_sha256.clone()
    }

    /// Issues a leaf certificate with a fresh P-256 key. SANs: every host (DNS or IP) plus
    /// `spiffe://muster/<role>/<name>`; EKUs per `server_auth`/`client_auth`. Validity is
    /// capped at the CA's own expiry.
    pub fn issue(&self, spec: &CertSpec) -> Result<Pem, TlsError> {
        let what = format!("certificate for {}", spec.spiffe_id());
        let key = new_key(&what)?;
        let cert_pem = self.issue_for(spec, &key)?;
        Ok(Pem { cert_pem, key_pem: key.serialize_pem() })
    }

    /// [`Self::issue`] for the key already in `key_pem`: renewal keeps the key, so the
    /// certificate file is the only one that changes and a process reloading its files never
    /// sees a certificate and a key that do not belong together.
    pub fn reissue(&self, spec: &CertSpec, key_pem: &str, key_origin: &str) -> Result<String, TlsError> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| parse_err("private key", key_origin, e))?;
        self.issue_for(spec, &key)
    }

    fn issue_for(&self, spec: &CertSpec, key: &KeyPair) -> Result<String, TlsError> {
        spec.validate()?;
        let leaf = Leaf {
            common_name: &spec.name,
            unit: spec.role.as_str(),
            sans: subject_alt_names(spec)?,
            server_auth: spec.server_auth,
            client_auth: spec.client_auth,
            validity: spec.validity,
        };
        let mut params = self.leaf_params(&leaf)?;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand_serial()));
        let what = format!("certificate for {}", spec.spiffe_id());
        let cert = params.signed_by(key, &self.issuer).map_err(|source| TlsError::Generate { what, source })?;
        Ok(cert.pem())
    }

    /// Signs the public key of a PKCS#10 request (its signature verified) as a client-auth-only
    /// leaf whose one SAN is `uri`; whatever names the request asked for are ignored, so a
    /// requester can only get the identity the caller decided. The key never leaves the
    /// requester.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        common_name: &str,
        uri: &str,
        validity: Duration,
    ) -> Result<SignedCert, TlsError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| parse_err("certificate signing request", "the request", e))?;
        let uri = uri.try_into().map_err(|_| invalid("uri", uri, "not a valid URI SAN"))?;
        let leaf = Leaf {
            common_name,
            unit: "worker",
            sans: vec![SanType::URI(uri)],
            server_auth: false,
            client_auth: true,
            validity,
        };
        csr.params = self.leaf_params(&leaf)?;
        let serial: [u8; 16] = rand_serial();
        csr.params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let not_after = csr.params.not_after.unix_timestamp();
        let what = format!("certificate for {common_name}");
        let cert = csr.signed_by(&self.issuer).map_err(|source| TlsError::Generate { what, source })?;
        Ok(SignedCert { cert_pem: cert.pem(), serial_hex: hex::encode(serial), not_after_unix: not_after })
    }

    fn leaf_params(&self, leaf: &Leaf<'_>) -> Result<CertificateParams, TlsError> {
        let (not_before, not_after) = window(leaf.validity, "validity")?;
        let not_after = not_after.min(self.not_after);
        if not_after <= OffsetDateTime::now_utc() {
            return Err(TlsError::NotValidNow {
                cert: "CA certificate".to_owned(),
                not_before: "-".to_owned(),
                not_after: self.not_after.to_string(),
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, leaf.common_name);
        params.distinguished_name.push(DnType::OrganizationalUnitName, leaf.unit);
        params.subject_alt_names = leaf.sans.clone();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if leaf.server_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if leaf.client_auth {
            params.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        Ok(params)
    }
}

/// What a leaf certificate says, whoever generated its key.
struct Leaf<'a> {
    common_name: &'a str,
    unit: &'a str,
    sans: Vec<SanType>,
    server_auth: bool,
    client_auth: bool,
    validity: Duration,
}

/// A certificate signed for someone else's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCert {
    pub cert_pem: String,
    /// Hex of the serial number.
    pub serial_hex: String,
    pub not_after_unix: i64,
}

/// 128 random bits, top bit clear so the DER integer stays positive.
fn rand_serial() -> [u8; 16] {
    let mut serial: [u8; 16] = rand::random();
    serial[0] &= 0x7f;
    serial
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("public_key_sha256", &self.spki_sha256)
            .field("not_after", &self.not_after)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

fn new_key(what: &str) -> Result<KeyPair, TlsError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|source| TlsError::Generate { what: what.to_owned(), source })
}

/// `(now - BACKDATE, now + validity)`.
fn window(validity: Duration, field: &str) -> Result<(OffsetDateTime, OffsetDateTime), TlsError> {
    let bad = || invalid(field, &format!("{validity:?}"), "must be positive and representable");
    if validity.is_zero() {
        return Err(bad());
    }
    let now = OffsetDateTime::now_utc();
    let span = time::Duration::try_from(validity).map_err(|_| bad())?;
    let not_after = now.checked_add(span).ok_or_else(bad)?;
    Ok((now - BACKDATE, not_after))
}

fn subject_alt_names(spec: &CertSpec) -> Result<Vec<SanType>, TlsError> {
    let mut sans = Vec::with_capacity(spec.hosts.len() + 1);
    for host in &spec.hosts {
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(ia5("CertSpec.hosts", host)?),
        });
    }
    sans.push(SanType::URI(ia5("CertSpec.name", &spec.spiffe_id())?));
    Ok(sans)
}

fn ia5(field: &str, value: &str) -> Result<Ia5String, TlsError> {
    Ia5String::try_from(value).map_err(|e| invalid(field, value, &e.to_string()))
}

/// Checks that `csr_pem` is a well-formed PKCS#10 request with a valid self-signature.
pub fn verify_csr(csr_pem: &str) -> Result<(), TlsError> {
    rcgen::CertificateSigningRequestParams::from_pem(csr_pem)
        .map(drop)
        .map_err(|e| parse_err("certificate signing request", "the request", e))
}
