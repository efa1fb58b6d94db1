//! The registrar's CSR path: a worker's certificate signing request (PEM text, or DER the
//! target wraps in PEM) through `verify_csr` / `Signer::check_csr`, then signing it with a
//! throwaway worker CA. A request the check accepts must sign (Register consumes the token
//! before signing), and the certificate must name exactly the worker id the registrar chose.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use muster_fuzz::{CSR_DER, Input};
use muster_registrar::signing::{Certified, Signer};
use muster_tls::CertificateAuthority;

const CLUSTER: &str = "c0ffee";

fn signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| {
        let worker_ca = CertificateAuthority::generate("fuzz worker CA", Duration::from_secs(24 * 3600)).unwrap();
        Signer::new(worker_ca, CLUSTER.into(), Duration::from_secs(3600))
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let mode = input.u8() % 2;
    let id = input.u64().max(1); // worker ids start at 1
    let rest = input.rest();
    let pem = if mode == CSR_DER {
        let body = base64::engine::general_purpose::STANDARD.encode(rest);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{body}\n-----END CERTIFICATE REQUEST-----\n")
    } else {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        text.to_owned()
    };
    let checked = Signer::check_csr(&pem);
    assert_eq!(checked.is_ok(), muster_tls::verify_csr(&pem).is_ok());
    if checked.is_err() {
        return;
    }
    let signer = signer();
    let Certified { signed, chain_pem: chain } = signer.certify(id, &pem).expect("a CSR that passed the check signs");
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).expect("the chain starts with a PEM certificate");
    let named = muster_tls::worker_cert(&pem.contents, CLUSTER).expect("the signed certificate names a worker");
    assert_eq!(named.worker_id, id, "the certificate names the id the registrar allocated");
    assert_eq!(named.serial_hex, signed.serial_hex);
});
