//! `TokenService`: bootstrap tokens. The leader generates the secret (randomness never enters
//! the FSM), stores only its hash through the log, and returns the token string once.

use muster_proto::clock::unix_now;
use std::sync::Arc;

use muster_middleware::{ApiError, Refused};
use muster_proto::v1;
use muster_proto::v1::token_service_server::TokenService;
use tonic::{Request, Response, Status};

use crate::errors::page_error;
use crate::errors::storage_error;
use crate::leadership::{Confirmation, Leadership as _};
use crate::node::NodeHandle;
use crate::store::page_size;

/// Longest token lifetime accepted.
const MAX_TTL_SECONDS: u64 = 365 * 24 * 3600;
/// Most registrations one token may allow.
const MAX_USES: u32 = 100_000;
/// Longest token description (it is stored in Raft and listed with every token).
const MAX_DESCRIPTION_BYTES: usize = 1024;

#[derive(Clone)]
pub struct TokenApi {
    node: Arc<NodeHandle>,
    /// The node's TLS material, whose CA bundle's first certificate is the CA workers pin the
    /// registrar's certificate to (`None` with `--insecure`: tokens carry no pin).
    tls: Option<Arc<muster_tls::LiveTls>>,
}

impl TokenApi {
    pub fn new(node: Arc<NodeHandle>, tls: Option<Arc<muster_tls::LiveTls>>) -> Self {
        Self { node, tls }
    }

    /// SHA-256 of the public key of the first CA in the node's CA bundle as it is now: during a
    /// cluster CA rotation that is the old CA until `musterctl tls rotate-ca reissue` puts the
    /// new one first (and re-issues the registrars' certificates from it).
    fn ca_pin(&self) -> Result<Vec<u8>, ApiError> {
        let Some(tls) = &self.tls else { return Ok(Vec::new()) };
        let pin = muster_tls::public_key_pin(&tls.current().ca_pem, &tls.files().ca.display().to_string())
            .map_err(|err| ApiError::Internal(format!("the CA bundle this node trusts: {err}")))?;
        Ok(pin.to_vec())
    }
}

fn check_spec(request: &v1::CreateTokenRequest) -> Result<(), ApiError> {
    if request.ttl_seconds > MAX_TTL_SECONDS {
        return Err(ApiError::InvalidArgument(format!(
            "ttl of {} s is longer than the limit of {MAX_TTL_SECONDS} s (one year)",
            request.ttl_seconds
        )));
    }
    if request.uses > MAX_USES {
        return Err(ApiError::InvalidArgument(format!("uses {} exceeds the limit of {MAX_USES}", request.uses)));
    }
    if request.description.len() > MAX_DESCRIPTION_BYTES {
        return Err(ApiError::InvalidArgument(format!(
            "description is {} bytes; the limit is {MAX_DESCRIPTION_BYTES} (max_description_bytes)",
            request.description.len()
        )));
    }
    // Workers registered with the token receive these labels: the same limits as their own.
    muster_proto::limits::validate_labels("labels", &request.labels)
        .map_err(|err| ApiError::InvalidArgument(err.to_string()))
}

#[tonic::async_trait]
impl TokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let request = request.into_inner();
        check_spec(&request)?;
        if !self.node.standing().leading {
            return Err(self.node.not_leader().into());
        }
        let cluster_id = self
            .node
            .reader
            .cluster_id()
            .map_err(storage_error)?
            .ok_or_else(|| ApiError::Unavailable("the cluster id is not recorded yet; retry in a moment".into()))?;
        let spec = muster_token::TokenSpec {
            ttl_seconds: request.ttl_seconds,
            uses: request.uses,
            labels: request.labels,
            description: request.description,
        };
        let issued = muster_token::generate(&spec, &cluster_id, &self.ca_pin()?, unix_now());
        let create = v1::CreateToken { record: Some(issued.record) };
        let result = Refused::check(self.node.propose(v1::command::Op::CreateToken(create)).await?)?;
        tracing::info!(token_id = %result.token.as_ref().map_or("", |t| t.token_id.as_str()), "created bootstrap token");
        Ok(Response::new(v1::CreateTokenResponse { token: issued.token, record: result.token }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.node.confirm(Confirmation::Quorum).await?;
        let now = unix_now();
        let request = request.into_inner();
        let all = request.all;
        let page = self
            .node
            .reader
            .tokens_page(&request.page_token, page_size(request.page_size), |record| {
                all || muster_token::state(record, now) == "active"
            })
            .map_err(page_error)?;
        Ok(Response::new(v1::ListTokensResponse { tokens: page.items, next_page_token: page.next_page_token }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let token_id = request.into_inner().token_id;
        if token_id.is_empty() {
            return Err(ApiError::InvalidArgument("token_id is required".into()).into());
        }
        let revoke = v1::RevokeToken { token_id, revoked_at_unix: unix_now() };
        let result = Refused::check(self.node.propose(v1::command::Op::RevokeToken(revoke)).await?)?;
        Ok(Response::new(v1::RevokeTokenResponse { record: result.token }))
    }
}
