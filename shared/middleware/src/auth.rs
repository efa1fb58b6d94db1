//! Mutual TLS at the RPC level: every call is checked against the authorization table
//! ([`crate::authz`]) with the role of the caller's verified client certificate. Default
//! deny: a method with no entry is refused whoever calls it.
//!
//! Why a layer and not just `ServerTlsConfig::client_ca_root`: health checks, reflection and
//! `Register` must stay reachable without a client certificate, so servers accept the
//! handshake with `client_auth_optional(true)` (rustls still verifies any certificate that is
//! presented against the cluster CA) and this layer refuses the methods that need one.
//! Servers started with `--insecure` have no TLS at all and do not install this layer.
//!
//! The certificate is read from the `TlsConnectInfo<TcpConnectInfo>` in the request
//! extensions: tonic's own TLS acceptor puts it there, and so does `muster-listener`, whose
//! TLS streams are tokio-rustls streams over TCP, for which tonic derives the same info. The
//! identity is whatever the server's function derives from the leaf certificate
//! (`muster_tls::peer_identity` for cluster certificates, the worker id for worker
//! certificates); this crate parses no X.509 itself.
//!
//! Relayed calls: a control-plane node that forwards an operator's call to the leader sends
//! the caller's identity in [`FORWARDED_PEER_HEADER`]. The header is honoured from
//! control-plane certificates only (and dropped from anyone else), and the call is then
//! checked as the original caller's, so relaying grants nothing.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use muster_tls::{PeerIdentity, Role};
use pin_project::pin_project;
use tonic::Status;
use tonic::transport::CertificateDer;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use crate::ApiError;
use crate::authz::{self, Rule};

/// The original caller of a call a control-plane node relays (`spiffe://muster/<role>/<name>`).
pub const FORWARDED_PEER_HEADER: &str = "x-muster-forwarded-peer";

/// How the `UNAUTHENTICATED` answer starts (it goes on to name the method and the roles).
pub const CERT_REQUIRED: &str = "a client certificate is required";

/// Derives the caller's identity from a verified leaf certificate (DER), or says why the
/// certificate names none this server accepts (the reason is part of the refusal).
pub type IdentityFn = Arc<dyn Fn(&[u8]) -> Result<PeerIdentity, String> + Send + Sync>;

/// The authenticated caller, put in the request extensions of every admitted call that
/// presented a certificate with a Muster identity (after adopting a relayed caller).
/// Handlers read it with `request.extensions().get::<Peer>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer(pub PeerIdentity);

impl Peer {
    pub fn role(&self) -> Role {
        self.0.role
    }

    pub fn name(&self) -> &str {
        &self.0.name
    }
}

/// Checks every call against the authorization table.
#[derive(Clone)]
pub struct AuthorizeLayer {
    rules: &'static [Rule],
    identity_of: IdentityFn,
}

impl AuthorizeLayer {
    /// Enforces [`authz::RULES`], with callers identified by `identity_of`.
    pub fn new(identity_of: impl Fn(&[u8]) -> Result<PeerIdentity, String> + Send + Sync + 'static) -> Self {
        Self { rules: authz::RULES, identity_of: Arc::new(identity_of) }
    }

    /// Cluster certificates: the `spiffe://muster/<role>/<name>` URI SAN.
    pub fn cluster() -> Self {
        Self::new(|der| {
            muster_tls::peer_identity(der)
                .ok_or_else(|| "the client certificate has no spiffe://muster/<role>/<name> URI SAN".to_string())
        })
    }

    /// Enforces `rules` instead of the real table (tests of the layer itself).
    pub fn with_rules(mut self, rules: &'static [Rule]) -> Self {
        self.rules = rules;
        self
    }

    /// The decision for one call: `Ok(caller)` to admit it, or the status to answer with.
    fn check(&self, path: &str, leaf: Option<&[u8]>, forwarded: Option<&str>) -> Result<Option<PeerIdentity>, Status> {
        let Some(rule) = self.rules.iter().find(|rule| rule.path == path) else {
            return Err(
                ApiError::PermissionDenied(format!("{path} has no authorization entry; nobody may call it")).into()
            );
        };
        let peer = leaf.map(|leaf| (self.identity_of)(leaf));
        let (peer, unusable) = match peer {
            Some(Ok(peer)) => (Some(peer), None),
            Some(Err(reason)) => (None, Some(reason)),
            None => (None, None),
        };
        let caller = match (&peer, forwarded) {
            (Some(node), Some(forwarded)) if node.role == Role::ControlPlane => {
                Some(PeerIdentity::from_spiffe_id(forwarded).ok_or_else(|| {
                    ApiError::InvalidArgument(format!("{FORWARDED_PEER_HEADER} is not a Muster identity"))
                })?)
            }
            _ => peer,
        };
        if authz::allows(rule, caller.as_ref().map(|caller| caller.role)) {
            return Ok(caller);
        }
        let authz::Access::Roles(roles) = rule.access else { unreachable!("open methods allow everyone") };
        let allowed = roles.iter().map(|role| role.as_str()).collect::<Vec<_>>().join(", ");
        match (leaf, caller) {
            (None, _) => {
                Err(ApiError::Unauthenticated(format!("{CERT_REQUIRED} to call {path} (allowed: {allowed})")).into())
            }
            (Some(_), Some(caller)) => Err(ApiError::PermissionDenied(format!(
                "role {:?} may not call {path} (allowed: {allowed})",
                caller.role.as_str()
            ))
            .into()),
            (Some(_), None) => Err(ApiError::PermissionDenied(format!(
                "{}: no Muster identity allowed to call {path} (allowed: {allowed})",
                unusable.unwrap_or_else(|| "the client certificate names no role".into())
            ))
            .into()),
        }
    }
}

impl fmt::Debug for AuthorizeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorizeLayer").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize { inner, policy: Arc::new(self.clone()) }
    }
}

/// The service built by [`AuthorizeLayer`].
#[derive(Clone, Debug)]
pub struct Authorize<S> {
    inner: S,
    policy: Arc<AuthorizeLayer>,
}

/// The chain the client presented, as verified by the TLS stack (shared, not copied: the Raft
/// port takes many calls a second).
fn peer_chain<B>(req: &Request<B>) -> Option<Arc<Vec<CertificateDer<'static>>>> {
    req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs)
}

impl<S, B, ResBody> Service<Request<B>> for Authorize<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = AuthFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let chain = peer_chain(&req);
        let leaf = chain.as_deref().and_then(|chain| chain.first()).map(|cert| cert.as_ref());
        // Never passed on: only this layer may turn it into a caller.
        let forwarded = req.headers_mut().remove(FORWARDED_PEER_HEADER);
        let forwarded = forwarded.as_ref().and_then(|value| value.to_str().ok());
        match self.policy.check(req.uri().path(), leaf, forwarded) {
            Ok(caller) => {
                if let Some(caller) = caller {
                    req.extensions_mut().insert(Peer(caller));
                }
                AuthFuture::Admitted { inner: self.inner.call(req) }
            }
            Err(status) => {
                tracing::debug!(path = req.uri().path(), %status, "call refused");
                AuthFuture::Refused { response: Some(status.into_http()) }
            }
        }
    }
}

/// The inner call, or the trailers-only refusal.
#[pin_project(project = AuthFutureProj)]
pub enum AuthFuture<F, B> {
    Admitted {
        #[pin]
        inner: F,
    },
    Refused {
        response: Option<Response<B>>,
    },
}

impl<F, B, E> Future for AuthFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthFutureProj::Admitted { inner } => inner.poll(cx),
            AuthFutureProj::Refused { response } => match response.take() {
                Some(response) => Poll::Ready(Ok(response)),
                None => Poll::Pending,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tonic::Code;
    use tower::ServiceExt as _;
    use tower_test::mock;

    use super::*;

    const ADMIN: &str = "/muster.v1.WorkerAdminService/ListWorkers";

    fn identity_of(der: &[u8]) -> Result<PeerIdentity, String> {
        // Test certificates are fake: "spiffe://muster/<role>/<name>" bytes stand in for a DER leaf.
        std::str::from_utf8(der).ok().and_then(PeerIdentity::from_spiffe_id).ok_or_else(|| "no identity".into())
    }

    fn layer() -> AuthorizeLayer {
        AuthorizeLayer::new(identity_of)
    }

    #[test]
    fn open_paths_need_no_certificate() {
        let layer = layer();
        assert_eq!(layer.check("/grpc.health.v1.Health/Check", None, None).unwrap(), None);
        let reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
        assert_eq!(layer.check(reflection, None, None).unwrap(), None);
        assert_eq!(layer.check("/muster.v1.WorkerRegistrationService/Register", None, None).unwrap(), None);
    }

    #[test]
    fn missing_certificate_is_unauthenticated() {
        let err = layer().check(ADMIN, None, None).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(err.message(), format!("{CERT_REQUIRED} to call {ADMIN} (allowed: operator, watcher)"));
    }

    #[test]
    fn a_method_without_an_entry_is_refused_to_everyone() {
        let err = layer().check("/muster.v1.WorkerAdminService/Nope", Some(b"spiffe://muster/operator/o"), None);
        let err = err.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("no authorization entry"), "{}", err.message());
    }

    #[test]
    fn the_table_names_the_refused_role() {
        let layer = layer();
        let operator = layer.check(ADMIN, Some(b"spiffe://muster/operator/o"), None).unwrap().unwrap();
        assert_eq!(operator.role, Role::Operator);
        let err = layer.check(ADMIN, Some(b"spiffe://muster/gateway/g"), None).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("\"gateway\""), "{}", err.message());
        let err = layer.check(ADMIN, Some(b"no identity here"), None).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    #[test]
    fn a_node_relays_its_callers_identity_and_nobody_else_can_claim_one() {
        let layer = layer();
        let node = Some(b"spiffe://muster/control-plane/cp-2".as_slice());
        let caller = layer.check(ADMIN, node, Some("spiffe://muster/operator/alice")).unwrap().unwrap();
        assert_eq!((caller.role, caller.name.as_str()), (Role::Operator, "alice"));
        // A node relaying a gateway's call gets the gateway's rights, not its own.
        let err = layer.check(ADMIN, node, Some("spiffe://muster/gateway/g")).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        // Anyone else's header is ignored.
        let err = layer.check(ADMIN, Some(b"spiffe://muster/gateway/g"), Some("spiffe://muster/operator/x"));
        assert_eq!(err.unwrap_err().code(), Code::PermissionDenied);
        let err = layer.check(ADMIN, node, Some("not an id")).unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }

    #[tokio::test]
    async fn plaintext_call_gets_a_trailers_only_refusal_without_reaching_the_service() {
        let (mut service, mut handle) = mock::spawn_layer::<Request<()>, Response<tonic::body::Body>, _>(layer());
        handle.allow(1);
        assert!(service.poll_ready().is_ready());
        let req = Request::builder().uri(ADMIN).body(()).unwrap();
        let response = service.call(req).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().starts_with(CERT_REQUIRED), "{status:?}");
        drop(service);
        assert!(handle.next_request().await.is_none(), "inner service was called");
    }

    #[tokio::test]
    async fn open_call_reaches_the_service_without_the_relay_header() {
        let service = layer().layer(tower::service_fn(|req: Request<()>| async move {
            assert!(req.extensions().get::<Peer>().is_none());
            assert!(req.headers().get(FORWARDED_PEER_HEADER).is_none());
            Ok::<_, Infallible>(Response::new(tonic::body::Body::default()))
        }));
        let req = Request::builder()
            .uri("/grpc.health.v1.Health/Check")
            .header(FORWARDED_PEER_HEADER, "spiffe://muster/operator/x")
            .body(())
            .unwrap();
        let response = service.oneshot(req).await.unwrap();
        assert!(response.headers().get("grpc-status").is_none());
    }
}
