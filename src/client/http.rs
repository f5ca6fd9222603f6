//! The registry's HTTP API as async functions. Every request has a timeout; tokens go in the
//! `Authorization` header only and are never logged or put in an error.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::RegistryConfig;
use crate::registry::wire::{
    ClusterStateView, EnrollRequest, EnrollResponse, HandshakeRequest, HandshakeResponse, K3sStatus, MembersResponse,
    PeerReportRequest, PeerReportResponse, ReportRequest,
};

/// Timeout of every request but the watch.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a watch request gets beyond the wait it asks for.
const WATCH_SLACK: Duration = Duration::from_secs(10);

/// A failed registry call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// No answer (connection refused, timeout, TLS failure...).
    #[error("{url}: registry unreachable: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The registry answered with an error.
    #[error("{url}: the registry refused: {status} {code}: {message}")]
    Refused {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The registry's machine-readable code.
        code: String,
        /// Its message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("{url}: unexpected answer: {reason}")]
    Decode {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The client could not be set up (the CA file).
    #[error("{0}")]
    Setup(String),
}

impl ClientError {
    /// A 4xx other than 408 and 429: retrying the same request cannot help until someone changes
    /// something (the registry side or this node's configuration).
    pub fn is_definitive(&self) -> bool {
        matches!(self, ClientError::Refused { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }
}

/// A client of one registry, optionally with a bearer token.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client for the registry of `cfg` (its `ca_file` trusted in addition to the system roots).
    pub fn new(cfg: &RegistryConfig) -> Result<RegistryClient, ClientError> {
        // reqwest is built without a bundled crypto provider (see `crate::vip::health`); installing fails
        // only when one is installed already, which serves as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("sdwand/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &cfg.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Setup(format!(
                    "registry.ca_file {}: cannot be read: {e} (fix: point it at a readable PEM file)",
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Setup(format!(
                    "registry.ca_file {}: not PEM certificates: {e}",
                    path.display()
                ))
            })?;
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(format!("cannot set up the HTTP client: {}", crate::error_chain(&e))))?;
        Ok(RegistryClient {
            http,
            base: cfg.url.clone(),
            token: None,
        })
    }

    /// The same client with `token` as its bearer token.
    pub fn with_token(&self, token: &str) -> RegistryClient {
        RegistryClient {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// The registry's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One call. `Ok(None)` on 204.
    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Result<Option<T>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).timeout(timeout);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            let bytes = serde_json::to_vec(b).map_err(|e| ClientError::Decode {
                url: url.clone(),
                reason: format!("encoding the request: {e}"),
            })?;
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(bytes);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            reason: crate::error_chain(&e),
        };
        let resp = req.send().await.map_err(unreachable)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(unreachable)?;
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        if !status.is_success() {
            let envelope: Option<serde_json::Value> = serde_json::from_slice(&bytes).ok();
            let field = |k: &str| {
                envelope
                    .as_ref()
                    .and_then(|v| v["error"][k].as_str())
                    .map(str::to_owned)
            };
            return Err(ClientError::Refused {
                url,
                status: status.as_u16(),
                code: field("code").unwrap_or_else(|| "unknown".into()),
                message: field("message")
                    .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect()),
            });
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ClientError::Decode {
                url,
                reason: e.to_string(),
            })
    }

    async fn must<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        self.call(method, path, body, REQUEST_TIMEOUT)
            .await?
            .ok_or_else(|| ClientError::Decode {
                url: format!("{}{path}", self.base),
                reason: "204 without a body".into(),
            })
    }

    /// `POST /v1/peers/enroll` with `enrollment_token`.
    pub async fn enroll(&self, enrollment_token: &str, req: &EnrollRequest) -> Result<EnrollResponse, ClientError> {
        self.with_token(enrollment_token)
            .must(Method::POST, "/v1/peers/enroll", Some(req))
            .await
    }

    /// `GET /v1/networks/{id}/members`.
    pub async fn members(&self, network_id: &str) -> Result<MembersResponse, ClientError> {
        self.must::<(), _>(Method::GET, &format!("/v1/networks/{network_id}/members"), None)
            .await
    }

    /// `GET /v1/networks/{id}/watch?since=R&wait_ms=W`: the network when its revision is not `since`,
    /// `None` when `wait` passed without a change.
    pub async fn watch(
        &self,
        network_id: &str,
        since: u64,
        wait: Duration,
    ) -> Result<Option<MembersResponse>, ClientError> {
        let path = format!(
            "/v1/networks/{network_id}/watch?since={since}&wait_ms={}",
            wait.as_millis()
        );
        self.call::<(), _>(Method::GET, &path, None, wait + WATCH_SLACK).await
    }

    /// `POST /v1/peers/self/report`.
    pub async fn report(&self, req: &PeerReportRequest) -> Result<PeerReportResponse, ClientError> {
        self.must(Method::POST, "/v1/peers/self/report", Some(req)).await
    }

    /// `POST /v1/runtime/handshake`.
    pub async fn handshake(&self, req: &HandshakeRequest) -> Result<HandshakeResponse, ClientError> {
        self.must(Method::POST, "/v1/runtime/handshake", Some(req)).await
    }

    /// `POST /v1/clusters/{id}/report`.
    pub async fn cluster_report(&self, cluster_id: &str, k3s: K3sStatus) -> Result<ClusterStateView, ClientError> {
        self.must(
            Method::POST,
            &format!("/v1/clusters/{cluster_id}/report"),
            Some(&ReportRequest { k3s }),
        )
        .await
    }
}
