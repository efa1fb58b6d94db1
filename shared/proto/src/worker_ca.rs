//! The worker CA record's one derived fact every side needs: which certificates to trust for
//! worker client certificates. The control plane hands it to gateways, registrars check Renew
//! callers against it; both must agree, so it is computed here once.

use crate::v1;

impl v1::InitWorkerCa {
    /// The certificates to trust for worker client certificates at `now_unix`,
    /// PEM-concatenated: the current CA, the next one of a rotation in progress, then each
    /// retired one whose workers may still hold valid certificates.
    pub fn trust_bundle(&self, now_unix: i64) -> String {
        let mut bundle = self.cert_pem.clone();
        let next = (!self.next_cert_pem.is_empty()).then_some(self.next_cert_pem.as_str());
        let retired = self.retired.iter().filter(|r| r.trusted_until_unix > now_unix).map(|r| r.cert_pem.as_str());
        for pem in next.into_iter().chain(retired) {
            if !bundle.is_empty() && !bundle.ends_with('\n') {
                bundle.push('\n');
            }
            bundle.push_str(pem);
        }
        bundle
    }
}
