//! Bootstrap-token administration through the leader.

use muster_proto::v1;
use muster_proto::v1::token_service_client::TokenServiceClient;

use crate::{ClientError, ControlPlaneClient};

impl ControlPlaneClient {
    pub async fn create_token(&self, request: v1::CreateTokenRequest) -> Result<v1::CreateTokenResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move { TokenServiceClient::new(channel).create_token(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    /// Every token (`all`: expired, used-up and revoked ones too), fetched page by page.
    pub async fn list_tokens(&self, all: bool) -> Result<Vec<v1::TokenRecord>, ClientError> {
        let mut tokens = Vec::new();
        let mut request = v1::ListTokensRequest { all, ..Default::default() };
        loop {
            let page = self.list_tokens_page(request.clone()).await?;
            tokens.extend(page.tokens);
            if page.next_page_token.is_empty() || page.next_page_token == request.page_token {
                return Ok(tokens);
            }
            request.page_token = page.next_page_token;
        }
    }

    /// One page of tokens (`page_size`, `page_token`), as the server answered it.
    pub async fn list_tokens_page(
        &self,
        request: v1::ListTokensRequest,
    ) -> Result<v1::ListTokensResponse, ClientError> {
        self.on_leader(|channel| {
            let request = request.clone();
            async move { TokenServiceClient::new(channel).list_tokens(request).await.map(tonic::Response::into_inner) }
        })
        .await
    }

    pub async fn revoke_token(&self, token_id: &str) -> Result<Option<v1::TokenRecord>, ClientError> {
        let request = v1::RevokeTokenRequest { token_id: token_id.to_string() };
        let response = self
            .on_leader(|channel| {
                let request = request.clone();
                async move { TokenServiceClient::new(channel).revoke_token(request).await.map(tonic::Response::into_inner) }
            })
            .await?;
        Ok(response.record)
    }
}
