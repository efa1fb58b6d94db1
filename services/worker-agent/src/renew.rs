//! Certificate renewal, independent of heartbeats so an expiring certificate can never quietly
//! stop them (Nomad shipped that bug): at a random point in 50–80% of the certificate's
//! lifetime the agent makes a new key and CSR and calls Renew on the registrars (round-robin,
//! with backoff) over mTLS with its current certificate, saves the new identity and hands it
//! to the next gateway connection. Failures are loud: a warning per attempt, an error once
//! less than 10% of the lifetime is left; at expiry the agent stops with the way out. A
//! revoked worker stops at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use muster_proto::v1;
use muster_proto::v1::worker_registration_service_client::WorkerRegistrationServiceClient;
use rcgen::PublicKeyData;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::ending::Ending;
use crate::gateways::GatewayList;
use crate::heartbeat::stopped_during;
use crate::identity::{Identity, IdentityMeta};
use crate::status::AgentStatus;

/// Where in the lifetime renewal happens.
const WINDOW: std::ops::Range<f64> = 0.5..0.8;
/// Below this fraction of the lifetime left, a failed attempt is an error, not a warning.
const URGENT: f64 = 0.1;

/// The certificate's lifetime in unix seconds, as this agent counts it: from when it received
/// the certificate (the notBefore is backdated an hour for clock skew, which would put the
/// renewal point of a short-lived certificate past its expiry) to its notAfter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lifetime {
    pub start: f64,
    pub end: f64,
}

impl Lifetime {
    pub fn of(identity: &Identity) -> anyhow::Result<Self> {
        let start = match identity.meta.cert_issued_at_unix {
            0 => not_before(&identity.cert_chain_pem)?,
            issued => issued,
        };
        Ok(Self { start: start as f64, end: identity.meta.cert_expires_at_unix as f64 })
    }

    /// The unix time `fraction` of the way through.
    pub fn at(&self, fraction: f64) -> f64 {
        self.start + (self.end - self.start).max(0.0) * fraction
    }

    /// A random point in 50–80% of the lifetime.
    pub fn renewal_point(&self) -> f64 {
        self.at(rand::random_range(WINDOW))
    }

    /// The fraction of the lifetime still ahead at `now`.
    pub fn left_at(&self, now: f64) -> f64 {
        let span = self.end - self.start;
        if span <= 0.0 { 0.0 } else { ((self.end - now) / span).clamp(0.0, 1.0) }
    }
}

/// The notBefore of the first certificate in `chain_pem`, in unix seconds.
fn not_before(chain_pem: &str) -> anyhow::Result<i64> {
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes())
        .next()
        .context("cert.pem holds no certificate")?
        .context("cert.pem is not PEM")?;
    let cert = pem.parse_x509().context("parsing the worker certificate")?;
    Ok(cert.validity().not_before.timestamp())
}

pub struct Renewal {
    pub servers: Vec<String>,
    pub identity_dir: PathBuf,
    pub identity: watch::Sender<Arc<Identity>>,
    pub status: Arc<AgentStatus>,
}

/// Why one Renew attempt failed.
enum Attempt {
    Retry(anyhow::Error),
    /// Revoked or unknown: no registrar will say otherwise.
    Fatal(anyhow::Error),
}

impl Renewal {
    /// Saves the gateway list a Renew answer carried when it is news, for the heartbeat loop
    /// (which re-reads it when it knows no gateway).
    fn note_gateways(&self, response: &v1::RenewResponse) {
        if response.gateways.is_empty() {
            return;
        }
        let saved = GatewayList::load(&self.identity_dir).map(|list| list.epoch).unwrap_or(0);
        if saved != response.gateways_epoch {
            let list = GatewayList::from_endpoints(response.gateways_epoch, &response.gateways);
            if let Err(err) = list.save(&self.identity_dir) {
                tracing::warn!(error = %format!("{err:#}"), "could not save the gateway list");
            }
        }
    }

    /// Renews each certificate in turn until `stop`; `Err` when the identity expired or the
    /// worker was revoked.
    pub async fn run(self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        anyhow::ensure!(!self.servers.is_empty(), "no registrar addresses configured (cluster.servers) to renew with");
        loop {
            let current = self.identity.borrow().clone();
            let lifetime = Lifetime::of(&current)?;
            let wait = Duration::from_secs_f64(
                (lifetime.renewal_point() - muster_proto::clock::since_epoch().as_secs_f64()).max(0.0),
            );
            let renew_in = Duration::from_secs(wait.as_secs());
            tracing::info!(
                ?renew_in,
                expires_at_unix = current.meta.cert_expires_at_unix,
                "certificate renewal scheduled"
            );
            if stopped_during(wait, &mut stop).await {
                return Ok(());
            }
            let Some(renewed) = self.renew(&current, lifetime, &mut stop).await? else { return Ok(()) };
            if let Err(err) = renewed.save(&self.identity_dir) {
                // The new certificate still works in memory; a restart falls back to the old one.
                tracing::error!(error = %format!("{err:#}"), "could not save the renewed identity");
            }
            tracing::info!(
                worker_id = renewed.meta.worker_id,
                expires_at_unix = renewed.meta.cert_expires_at_unix,
                "certificate renewed; the next gateway connection uses it"
            );
            self.status.renewals.fetch_add(1, Ordering::Relaxed);
            self.identity.send_replace(Arc::new(renewed));
        }
    }

    /// Tries the registrars in turn until one renews, the identity expires, or `stop`.
    async fn renew(
        &self,
        current: &Identity,
        lifetime: Lifetime,
        stop: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Identity>> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).context("generating the next key")?;
        let csr = crate::register::csr_pem(&key)?;
        let cap = Duration::from_secs_f64(((lifetime.end - lifetime.start) / 20.0).clamp(1.0, 60.0));
        let mut backoff = Backoff::new(Duration::from_secs(1).min(cap), cap);
        for server in self.servers.iter().cycle() {
            current.check_not_expired(&self.identity_dir, muster_proto::clock::unix_now())?;
            let err = match renew_with(server, current, &csr).await {
                Ok(response) => {
                    self.note_gateways(&response);
                    return renewed(current, &key, response).map(Some);
                }
                Err(Attempt::Fatal(err)) => return Err(err),
                Err(Attempt::Retry(err)) => err,
            };
            let now = muster_proto::clock::since_epoch().as_secs_f64();
            let wait = backoff.next_pause().min(Duration::from_secs_f64((lifetime.end - now).max(0.0)));
            let (left, error) = (lifetime.left_at(now), format!("{err:#}"));
            if left < URGENT {
                tracing::error!(registrar = %server, %error, retry_in = ?wait, expires_at_unix = current.meta.cert_expires_at_unix,
                    "certificate renewal keeps failing and the certificate expires soon; at expiry the agent stops");
            } else {
                tracing::warn!(registrar = %server, %error, retry_in = ?wait, "certificate renewal failed; retrying");
            }
            if stopped_during(wait, stop).await {
                return Ok(None);
            }
        }
        unreachable!("cycling a non-empty list never ends")
    }
}

/// The identity with the renewed certificate and the new key, checked to belong together.
fn renewed(current: &Identity, key: &rcgen::KeyPair, response: v1::RenewResponse) -> anyhow::Result<Identity> {
    let leaf = x509_parser::pem::Pem::iter_from_buffer(response.certificate_chain_pem.as_bytes())
        .next()
        .context("the registrar returned no certificate")??;
    let cert = leaf.parse_x509().context("parsing the renewed certificate")?;
    anyhow::ensure!(
        cert.public_key().raw == key.subject_public_key_info(),
        "the registrar returned a certificate for another key"
    );
    let ca_bundle_pem =
        if response.ca_bundle_pem.is_empty() { current.ca_bundle_pem.clone() } else { response.ca_bundle_pem };
    Ok(Identity {
        meta: IdentityMeta {
            cert_expires_at_unix: response.cert_expires_at_unix,
            cert_issued_at_unix: muster_proto::clock::unix_now(),
            ..current.meta.clone()
        },
        cert_chain_pem: response.certificate_chain_pem,
        key_pem: key.serialize_pem(),
        ca_bundle_pem,
    })
}

async fn renew_with(server: &str, identity: &Identity, csr_pem: &str) -> Result<v1::RenewResponse, Attempt> {
    let tls = crate::tls::registrar_tls(identity).map_err(Attempt::Retry)?;
    let channel = crate::tls::registrar_channel(server, &tls).await.map_err(|err| {
        let (crate::tls::RegistrarConnectError::Address(err) | crate::tls::RegistrarConnectError::Connect(err)) = err;
        Attempt::Retry(err)
    })?;
    let request = v1::RenewRequest { csr_pem: csr_pem.to_string() };
    let status = match WorkerRegistrationServiceClient::new(channel).renew(request).await {
        Ok(response) => return Ok(response.into_inner()),
        Err(status) => status,
    };
    let id = identity.meta.worker_id;
    let refusal = format!("{} ({:?})", status.message(), status.code());
    let ending = Ending::of(&status, |code| match code {
        tonic::Code::PermissionDenied => Some(Ending::Revoked),
        tonic::Code::NotFound => Some(Ending::UnknownWorker),
        _ => None,
    });
    let dir = "the identity dir (cluster.identity_dir)";
    Err(match ending {
        Some(Ending::Revoked) => Attempt::Fatal(anyhow::Error::new(crate::Revoked {
            worker_id: id,
            message: format!(
                "worker {id} was revoked: registrar {server} refused to renew its certificate ({refusal}). To bring \
                 this node back, delete {dir} and register it with a fresh bootstrap token"
            ),
        })),
        Some(Ending::CertificateNotCurrent) => Attempt::Fatal(anyhow::anyhow!(
            "registrar {server} refused to renew: the certificate this agent holds is no longer worker {id}'s \
             current one ({refusal}); it was replaced by a renewal this agent did not keep. Delete {dir} and \
             register with a fresh bootstrap token"
        )),
        Some(Ending::UnknownWorker) => Attempt::Fatal(anyhow::anyhow!(
            "the cluster does not know worker {id} ({refusal}); delete {dir} and register with a fresh bootstrap \
             token"
        )),
        None => Attempt::Retry(anyhow::anyhow!("registrar {server}: {refusal}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_falls_within_50_to_80_percent_of_the_lifetime() {
        let lifetime = Lifetime { start: 1_000.0, end: 2_000.0 };
        for _ in 0..1000 {
            let at = lifetime.renewal_point();
            assert!((1_500.0..=1_800.0).contains(&at), "{at}");
        }
        assert_eq!(lifetime.left_at(1_950.0), 0.05);
        assert_eq!(lifetime.left_at(3_000.0), 0.0);
    }

    #[test]
    fn the_lifetime_starts_at_receipt_or_else_at_not_before() {
        let ca = muster_tls::CertificateAuthority::generate("renew test", Duration::from_secs(3600)).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = crate::register::csr_pem(&key).unwrap();
        let signed = ca.sign_csr(&csr, "worker-1", "spiffe://c/worker/1", Duration::from_secs(60)).unwrap();
        let meta = IdentityMeta {
            worker_id: 1,
            cluster_id: "c".into(),
            cert_expires_at_unix: signed.not_after_unix,
            cert_issued_at_unix: signed.not_after_unix - 60,
        };
        let mut identity = Identity {
            meta,
            cert_chain_pem: signed.cert_pem.clone(),
            key_pem: key.serialize_pem(),
            ca_bundle_pem: "".into(),
        };
        let lifetime = Lifetime::of(&identity).unwrap();
        assert_eq!(lifetime.end - lifetime.start, 60.0);
        identity.meta.cert_issued_at_unix = 0;
        let from_cert = Lifetime::of(&identity).unwrap();
        assert!(from_cert.start < lifetime.start, "notBefore is backdated");

        // A renewed certificate must be for the new key.
        let response = v1::RenewResponse {
            certificate_chain_pem: signed.cert_pem,
            cert_expires_at_unix: signed.not_after_unix,
            ..Default::default()
        };
        assert!(renewed(&identity, &key, response.clone()).is_ok());
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = renewed(&identity, &other, response).unwrap_err().to_string();
        assert!(err.contains("another key"), "{err}");
    }
}
