//! The operator's client of the registry's admin routes (`sdwanctl registry …`), on the same
//! [`RegistryClient`] as sdwand's link: one TLS and CA policy, one error envelope, path escaping, size caps
//! and one error type ([`ClientError`]).
//!
//! The admin token is read from a file (never from the command line, where `ps` shows it). `https://` is
//! verified against the system roots, or against `--ca-file` only; `http://` is refused unless
//! `--insecure` (labs: the token travels in clear). `--insecure` never turns certificate checks off.

use std::path::Path;

use reqwest::Method;

use super::http::{segment, ClientError, RegistryClient};
use crate::vocab::wire::{
    ClusterStateRequest, ClusterStateView, ClustersResponse, CreateEnrollmentTokenRequest, CreateNetworkRequest,
    EnrollmentTokenInfo, EnrollmentTokenView, EnrollmentTokensResponse, NetworkView, NetworksResponse, PeersResponse,
    VipMoveRequest, VipView, VipsResponse,
};
use crate::vocab::ClusterState;

/// An admin client of one registry.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: RegistryClient,
}

impl AdminClient {
    /// A client of the registry at `url` with the admin token in `token_file`; `insecure` allows plain
    /// HTTP, `ca_file` replaces the system roots.
    pub fn new(url: &str, token_file: &Path, insecure: bool, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let setup = ClientError::Setup;
        let parsed = reqwest::Url::parse(url).map_err(|e| setup(format!("--url {url:?} is not a URL ({e})")))?;
        match parsed.scheme() {
            "https" => {}
            "http" if insecure => {}
            "http" => {
                return Err(setup(format!(
                    "--url {url} is plain HTTP: the admin token would travel in clear; use https:// or add \
                     --insecure (labs only)"
                )))
            }
            other => return Err(setup(format!("--url {url}: scheme {other:?} is not http(s)"))),
        }
        let token = std::fs::read_to_string(token_file)
            .map_err(|e| setup(format!("--token-file {}: cannot read: {e}", token_file.display())))?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(setup(format!(
                "--token-file {}: the file is empty",
                token_file.display()
            )));
        }
        let agent = concat!("sdwanctl/", env!("CARGO_PKG_VERSION"));
        let client = RegistryClient::connect(url, ca_file, "--ca-file", agent)?.with_token(&token);
        Ok(AdminClient { client })
    }

    /// `GET /v1/networks`.
    pub async fn networks(&self) -> Result<NetworksResponse, ClientError> {
        self.client.must::<(), _>(Method::GET, "/v1/networks", None).await
    }

    /// `POST /v1/networks`.
    pub async fn create_network(&self, req: &CreateNetworkRequest) -> Result<NetworkView, ClientError> {
        self.client.must(Method::POST, "/v1/networks", Some(req)).await
    }

    /// `GET /v1/clusters`.
    pub async fn clusters(&self) -> Result<ClustersResponse, ClientError> {
        self.client.must::<(), _>(Method::GET, "/v1/clusters", None).await
    }

    /// `GET /v1/vips`.
    pub async fn vips(&self) -> Result<VipsResponse, ClientError> {
        self.client.must::<(), _>(Method::GET, "/v1/vips", None).await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self) -> Result<PeersResponse, ClientError> {
        self.client.must::<(), _>(Method::GET, "/v1/peers", None).await
    }

    /// `POST /v1/vips/{id}/move`.
    pub async fn move_vip(&self, vip_id: &str, to: &str) -> Result<VipView, ClientError> {
        let path = format!("/v1/vips/{}/move", segment(vip_id));
        let req = VipMoveRequest { to: to.to_owned() };
        self.client.must(Method::POST, &path, Some(&req)).await
    }

    /// `DELETE /v1/peers/{id}`.
    pub async fn remove_peer(&self, peer_id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/peers/{}", segment(peer_id));
        let timeout = super::http::REQUEST_TIMEOUT;
        let limit = super::http::MAX_ANSWER_BYTES;
        let _: Option<serde_json::Value> = self
            .client
            .call::<(), _>(Method::DELETE, &path, None, timeout, limit)
            .await?;
        Ok(())
    }

    /// `POST /v1/networks/{id}/enrollment-tokens`.
    pub async fn create_enrollment_token(
        &self,
        network_id: &str,
        req: &CreateEnrollmentTokenRequest,
    ) -> Result<EnrollmentTokenView, ClientError> {
        let path = format!("/v1/networks/{}/enrollment-tokens", segment(network_id));
        self.client.must(Method::POST, &path, Some(req)).await
    }

    /// `GET /v1/enrollment-tokens`.
    pub async fn enrollment_tokens(&self) -> Result<EnrollmentTokensResponse, ClientError> {
        self.client
            .must::<(), _>(Method::GET, "/v1/enrollment-tokens", None)
            .await
    }

    /// `DELETE /v1/enrollment-tokens/{id}`.
    pub async fn revoke_enrollment_token(&self, token_id: &str) -> Result<EnrollmentTokenInfo, ClientError> {
        let path = format!("/v1/enrollment-tokens/{}", segment(token_id));
        self.client.must::<(), _>(Method::DELETE, &path, None).await
    }

    /// `POST /v1/clusters/{id}/state`.
    pub async fn set_cluster_state(
        &self,
        cluster_id: &str,
        state: ClusterState,
    ) -> Result<ClusterStateView, ClientError> {
        let path = format!("/v1/clusters/{}/state", segment(cluster_id));
        self.client
            .must(Method::POST, &path, Some(&ClusterStateRequest { state }))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_needs_insecure_and_ids_are_one_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "sdwa_x_y\n").expect("write");
        let e = AdminClient::new("http://127.0.0.1:1", &token, false, None).expect_err("plain HTTP");
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(AdminClient::new("http://127.0.0.1:1", &token, true, None).is_ok());
        let e = AdminClient::new("https://r", &dir.path().join("none"), false, None).expect_err("no file");
        assert!(e.to_string().contains("--token-file"), "{e}");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }
}
