//! Mutual TLS at the RPC level: every method except health and reflection needs a client
//! certificate, and optionally a certificate role from an allow-list.
//!
//! Why a layer and not just `ServerTlsConfig::client_ca_root`: health checks, reflection and
//! `Register` must stay reachable without a client certificate, so servers accept the
//! handshake with `client_auth_optional(true)` (rustls still verifies any certificate that is
//! presented against the cluster CA) and this layer refuses the methods that need one.
//! Servers started with `--insecure` have no TLS at all and do not install this layer.
//!
//! The certificate is read from the `TlsConnectInfo<TcpConnectInfo>` in the request
//! extensions: tonic's own TLS acceptor puts it there, and so does `muster-listener`, whose
//! TLS streams are tokio-rustls streams over TCP, for which tonic derives the same info. The role is whatever the caller's function derives from the leaf
//! certificate (e.g. `muster-tls` reading the SPIFFE URI SAN); this crate parses no X.509.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use pin_project::pin_project;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// Paths that stay open by default: health checks and server reflection (v1 and v1alpha).
pub const DEFAULT_EXEMPT_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

/// The message of the `UNAUTHENTICATED` answer.
const CERT_REQUIRED: &str = "a client certificate signed by the cluster CA is required";

/// Derives a role from a leaf certificate (DER); `None` when the certificate names none.
pub type RoleFn = Arc<dyn Fn(&[u8]) -> Option<String> + Send + Sync>;

/// The role of the authenticated peer, put in the request extensions when a role function is
/// configured and it found one. Handlers read it with `request.extensions().get::<PeerRole>()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRole(pub String);

/// Requires a verified client certificate, and optionally an allowed role, per call.
#[derive(Clone)]
pub struct RequireClientCertLayer {
    /// Calls whose path starts with one of these need no certificate.
    pub exempt_prefixes: Vec<&'static str>,
    /// When set, only certificates whose role is listed are admitted.
    pub allowed_roles: Option<Vec<String>>,
    role_of: Option<RoleFn>,
}

impl RequireClientCertLayer {
    /// Exempts [`DEFAULT_EXEMPT_PREFIXES`] and accepts any certificate the TLS stack verified.
    pub fn new() -> Self {
        Self { exempt_prefixes: DEFAULT_EXEMPT_PREFIXES.to_vec(), allowed_roles: None, role_of: None }
    }

    /// Also exempts paths starting with `prefix` (e.g. the registrar's `Register`).
    pub fn exempt(mut self, prefix: &'static str) -> Self {
        self.exempt_prefixes.push(prefix);
        self
    }

    /// Derives each peer's role with `role_of`; the role is exposed as [`PeerRole`].
    pub fn with_role_fn(mut self, role_of: impl Fn(&[u8]) -> Option<String> + Send + Sync + 'static) -> Self {
        self.role_of = Some(Arc::new(role_of));
        self
    }

    /// Admits only these roles (`PERMISSION_DENIED` otherwise). Fails closed: without
    /// [`Self::with_role_fn`] no role can be found and every non-exempt call is refused.
    pub fn allow_roles<R: Into<String>>(mut self, roles: impl IntoIterator<Item = R>) -> Self {
        self.allowed_roles = Some(roles.into_iter().map(Into::into).collect());
        self
    }

    /// The decision for one call: `Ok(role)` to admit it, or the status to answer with.
    fn check(&self, path: &str, leaf: Option<&[u8]>) -> Result<Option<String>, Status> {
        if self.exempt_prefixes.iter().any(|p| path.starts_with(p)) {
            return Ok(None);
        }
        let leaf = leaf.ok_or_else(|| Status::unauthenticated(CERT_REQUIRED))?;
        let role = self.role_of.as_ref().and_then(|role_of| role_of(leaf));
        let Some(allowed) = &self.allowed_roles else {
            return Ok(role);
        };
        match role {
            Some(role) if allowed.contains(&role) => Ok(Some(role)),
            Some(role) => Err(Status::permission_denied(format!(
                "role {role:?} may not call {path} (allowed: {})",
                allowed.join(", ")
            ))),
            None => Err(Status::permission_denied(format!(
                "the client certificate carries no role allowed to call {path} (allowed: {})",
                allowed.join(", ")
            ))),
        }
    }
}

impl Default for RequireClientCertLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RequireClientCertLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireClientCertLayer")
            .field("exempt_prefixes", &self.exempt_prefixes)
            .field("allowed_roles", &self.allowed_roles)
            .field("role_of", &self.role_of.as_ref().map(|_| ".."))
            .finish()
    }
}

impl<S> Layer<S> for RequireClientCertLayer {
    type Service = RequireClientCert<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireClientCert { inner, policy: Arc::new(self.clone()) }
    }
}

/// The service built by [`RequireClientCertLayer`].
#[derive(Clone, Debug)]
pub struct RequireClientCert<S> {
    inner: S,
    policy: Arc<RequireClientCertLayer>,
}

impl<S, B, ResBody> Service<Request<B>> for RequireClientCert<S>
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
        let certs = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>().and_then(TlsConnectInfo::peer_certs);
        let leaf = certs.as_deref().and_then(|certs| certs.first());
        match self.policy.check(req.uri().path(), leaf.map(|c| c.as_ref())) {
            Ok(role) => {
                if let Some(role) = role {
                    req.extensions_mut().insert(PeerRole(role));
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

    const ADMIN: &str = "/muster.v1.AdminService/ListWorkers";

    fn role_prefix(der: &[u8]) -> Option<String> {
        // Test certificates are fake: "role:<name>" bytes stand in for a DER leaf.
        std::str::from_utf8(der).ok()?.strip_prefix("role:").map(str::to_owned)
    }

    #[test]
    fn exempt_paths_need_no_certificate() {
        let layer = RequireClientCertLayer::new().exempt("/muster.v1.Registration/Register");
        assert_eq!(layer.check("/grpc.health.v1.Health/Check", None).unwrap(), None);
        let reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
        assert_eq!(layer.check(reflection, None).unwrap(), None);
        assert_eq!(layer.check("/muster.v1.Registration/Register", None).unwrap(), None);
    }

    #[test]
    fn missing_certificate_is_unauthenticated() {
        let err = RequireClientCertLayer::new().check(ADMIN, None).unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert_eq!(err.message(), CERT_REQUIRED);
    }

    #[test]
    fn any_certificate_passes_without_an_allow_list() {
        let layer = RequireClientCertLayer::new();
        assert_eq!(layer.check(ADMIN, Some(b"role:worker")).unwrap(), None);
        let layer = layer.with_role_fn(role_prefix);
        assert_eq!(layer.check(ADMIN, Some(b"role:worker")).unwrap(), Some("worker".into()));
    }

    #[test]
    fn allow_list_names_the_refused_role() {
        let layer = RequireClientCertLayer::new().with_role_fn(role_prefix).allow_roles(["operator"]);
        assert_eq!(layer.check(ADMIN, Some(b"role:operator")).unwrap(), Some("operator".into()));
        let err = layer.check(ADMIN, Some(b"role:worker")).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
        assert!(err.message().contains("\"worker\""), "{}", err.message());
        let err = layer.check(ADMIN, Some(b"no role here")).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    #[test]
    fn allow_list_without_role_fn_fails_closed() {
        let layer = RequireClientCertLayer::new().allow_roles(["operator"]);
        let err = layer.check(ADMIN, Some(b"role:operator")).unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }

    #[tokio::test]
    async fn plaintext_call_gets_a_trailers_only_refusal_without_reaching_the_service() {
        let (mut service, mut handle) =
            mock::spawn_layer::<Request<()>, Response<tonic::body::Body>, _>(RequireClientCertLayer::new());
        handle.allow(1);
        assert!(service.poll_ready().is_ready());
        let req = Request::builder().uri(ADMIN).body(()).unwrap();
        let response = service.call(req).await.unwrap();
        let status = Status::from_header_map(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), CERT_REQUIRED);
        drop(service);
        assert!(handle.next_request().await.is_none(), "inner service was called");
    }

    #[tokio::test]
    async fn exempt_call_reaches_the_service() {
        let service = RequireClientCertLayer::new().layer(tower::service_fn(|req: Request<()>| async move {
            assert!(req.extensions().get::<PeerRole>().is_none());
            Ok::<_, Infallible>(Response::new(tonic::body::Body::default()))
        }));
        let req = Request::builder().uri("/grpc.health.v1.Health/Check").body(()).unwrap();
        let response = service.oneshot(req).await.unwrap();
        assert!(response.headers().get("grpc-status").is_none());
    }
}
