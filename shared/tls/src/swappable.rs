//! Client-certificate trust whose CAs are replaced while listeners run. The gateway and the
//! registrar verify workers against the worker CAs the control plane lists, and that list
//! changes during a worker CA rotation (a next CA is added, a retired one is dropped); each
//! handshake uses the list as it is at that moment, and connections already open keep what
//! they were made with.

use std::sync::{Arc, RwLock};

use rustls::server::danger::ClientCertVerifier;

use crate::following::{FollowingVerifier, VerifierSource};
use crate::{ClientAuth, TlsError, client_cert_verifier};

/// Trusts the CAs of the PEM bundle it was last given.
#[derive(Debug)]
pub struct SwappableClientVerifier {
    auth: ClientAuth,
    what: &'static str,
    current: RwLock<(String, Arc<dyn ClientCertVerifier>)>,
}

impl SwappableClientVerifier {
    /// Trusts the certificates of `ca_pem`; `what` names them in errors ("the worker CA").
    pub fn new(ca_pem: &str, auth: ClientAuth, what: &'static str) -> Result<Arc<Self>, TlsError> {
        let verifier = client_cert_verifier(ca_pem, auth, what)?;
        Ok(Arc::new(Self { auth, what, current: RwLock::new((ca_pem.to_owned(), verifier)) }))
    }

    /// Trusts `ca_pem` from the next handshake on; false when it is what is trusted already.
    /// A bundle that does not load is refused and the current one stays.
    pub fn replace(&self, ca_pem: &str) -> Result<bool, TlsError> {
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == ca_pem {
            return Ok(false);
        }
        let verifier = client_cert_verifier(ca_pem, self.auth, self.what)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = (ca_pem.to_owned(), verifier);
        Ok(true)
    }

    /// The bundle trusted now.
    pub fn ca_pem(&self) -> String {
        self.current.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The verifier for a server config: it follows every [`Self::replace`].
    pub fn verifier(self: &Arc<Self>) -> Arc<dyn ClientCertVerifier> {
        Arc::new(FollowingVerifier { source: self.clone(), auth: self.auth })
    }
}

impl VerifierSource for Arc<SwappableClientVerifier> {
    fn verifier(&self, _auth: ClientAuth) -> Arc<dyn ClientCertVerifier> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }
}
