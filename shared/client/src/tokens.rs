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

    pub async fn list_tokens(&self, all: bool) -> Result<Vec<v1::TokenRecord>, ClientError> {
        let response = self
            .on_leader(|channel| async move {
                TokenServiceClient::new(channel)
                    .list_tokens(v1::ListTokensRequest { all })
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(response.tokens)
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
