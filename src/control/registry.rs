//! `sdwanctl registry …`: the operator's client of the registry's admin routes, and the human rendering
//! of their answers.
//!
//! The admin token is read from a file (never from the command line, where `ps` shows it). `https://` is
//! verified against the system roots, or against `--ca-file` only; `http://` is refused unless
//! `--insecure` (labs: the token travels in clear). `--insecure` never turns certificate checks off.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::registry::wire::{
    ClusterStateRequest, ClusterStateView, ClustersResponse, CreateEnrollmentTokenRequest, EnrollmentTokenInfo,
    EnrollmentTokenView, EnrollmentTokensResponse, EpochView, PeersResponse, VipMoveRequest, VipView, VipsResponse,
};
use crate::vocab::ClusterState;

/// How long one call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryCallError {
    /// The command line or a file it names cannot be used.
    #[error("{0}")]
    Setup(String),
    /// No answer (connection, TLS, timeout).
    #[error("cannot reach the registry at {url}: {message}")]
    Transport {
        /// The URL called.
        url: String,
        /// What failed, with its causes.
        message: String,
    },
    /// The registry answered with an error.
    #[error("the registry refused: {message} ({code}, HTTP {status})")]
    Refused {
        /// HTTP status.
        status: u16,
        /// Machine-readable code.
        code: String,
        /// Human message.
        message: String,
    },
    /// The answer is not what this version expects.
    #[error("unexpected answer from {url}: {message}")]
    Decode {
        /// The URL called.
        url: String,
        /// What did not decode.
        message: String,
    },
}

/// An admin client of one registry.
#[derive(Debug, Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    token: String,
}

impl RegistryClient {
    /// A client of the registry at `url` with the admin token in `token_file`.
    pub fn new(
        url: &str,
        token_file: &Path,
        insecure: bool,
        ca_file: Option<&PathBuf>,
    ) -> Result<Self, RegistryCallError> {
        let setup = RegistryCallError::Setup;
        let base = Url::parse(url).map_err(|e| setup(format!("--url {url:?} is not a URL ({e})")))?;
        match base.scheme() {
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
        // reqwest is built without a bundled crypto provider (see the health checks): install ring, or
        // keep the one already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("sdwanctl/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let pem =
                std::fs::read(path).map_err(|e| setup(format!("--ca-file {}: cannot read: {e}", path.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| setup(format!("--ca-file {}: not PEM certificates ({e})", path.display())))?;
            if certs.is_empty() {
                return Err(setup(format!("--ca-file {}: holds no PEM certificate", path.display())));
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| setup(format!("cannot set up the HTTP client: {e}")))?;
        Ok(RegistryClient { http, base, token })
    }

    /// `GET /v1/clusters`.
    pub async fn clusters(&self) -> Result<ClustersResponse, RegistryCallError> {
        self.call(Method::GET, "/v1/clusters", None).await
    }

    /// `GET /v1/vips`.
    pub async fn vips(&self) -> Result<VipsResponse, RegistryCallError> {
        self.call(Method::GET, "/v1/vips", None).await
    }

    /// `GET /v1/peers`.
    pub async fn peers(&self) -> Result<PeersResponse, RegistryCallError> {
        self.call(Method::GET, "/v1/peers", None).await
    }

    /// `POST /v1/vips/{id}/move`.
    pub async fn move_vip(&self, vip_id: &str, to: &str) -> Result<VipView, RegistryCallError> {
        let body = encode(&VipMoveRequest { to: to.to_owned() })?;
        self.call(Method::POST, &format!("/v1/vips/{}/move", segment(vip_id)), Some(body))
            .await
    }

    /// `DELETE /v1/peers/{id}`.
    pub async fn remove_peer(&self, peer_id: &str) -> Result<(), RegistryCallError> {
        let path = format!("/v1/peers/{}", segment(peer_id));
        self.send(Method::DELETE, &path, None).await.map(drop)
    }

    /// `POST /v1/networks/{id}/enrollment-tokens`.
    pub async fn create_enrollment_token(
        &self,
        network_id: &str,
        req: &CreateEnrollmentTokenRequest,
    ) -> Result<EnrollmentTokenView, RegistryCallError> {
        let path = format!("/v1/networks/{}/enrollment-tokens", segment(network_id));
        self.call(Method::POST, &path, Some(encode(req)?)).await
    }

    /// `GET /v1/enrollment-tokens`.
    pub async fn enrollment_tokens(&self) -> Result<EnrollmentTokensResponse, RegistryCallError> {
        self.call(Method::GET, "/v1/enrollment-tokens", None).await
    }

    /// `DELETE /v1/enrollment-tokens/{id}`.
    pub async fn revoke_enrollment_token(&self, token_id: &str) -> Result<EnrollmentTokenInfo, RegistryCallError> {
        let path = format!("/v1/enrollment-tokens/{}", segment(token_id));
        self.call(Method::DELETE, &path, None).await
    }

    /// `POST /v1/clusters/{id}/state`.
    pub async fn set_cluster_state(
        &self,
        cluster_id: &str,
        state: ClusterState,
    ) -> Result<ClusterStateView, RegistryCallError> {
        let path = format!("/v1/clusters/{}/state", segment(cluster_id));
        self.call(Method::POST, &path, Some(encode(&ClusterStateRequest { state })?))
            .await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, RegistryCallError> {
        let (url, bytes) = self.send(method, path, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| RegistryCallError::Decode {
            url,
            message: e.to_string(),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(String, Vec<u8>), RegistryCallError> {
        let url = self
            .base
            .join(path)
            .map_err(|e| RegistryCallError::Setup(format!("cannot build the URL of {path}: {e}")))?;
        let shown = url.to_string();
        let transport = |e: reqwest::Error| RegistryCallError::Transport {
            url: shown.clone(),
            message: crate::error_chain(&e),
        };
        let mut req = self.http.request(method, url.clone()).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport)?.to_vec();
        if status.is_success() {
            return Ok((shown, bytes));
        }
        Err(refused(status, &bytes))
    }
}

/// A request body as JSON.
fn encode(req: &impl serde::Serialize) -> Result<Vec<u8>, RegistryCallError> {
    serde_json::to_vec(req).map_err(|e| RegistryCallError::Setup(format!("cannot encode the request: {e}")))
}

/// An id as one path segment: ids are letters, digits and `-`; anything else is percent-encoded.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn refused(status: StatusCode, bytes: &[u8]) -> RegistryCallError {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize)]
    struct Detail {
        code: String,
        message: String,
    }
    let (code, message) = match serde_json::from_slice::<Envelope>(bytes) {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => (
            "http_error".to_owned(),
            String::from_utf8_lossy(bytes).chars().take(200).collect(),
        ),
    };
    RegistryCallError::Refused {
        status: status.as_u16(),
        code,
        message,
    }
}

/// `sdwanctl registry clusters`.
pub fn clusters(c: &ClustersResponse) -> String {
    if c.clusters.is_empty() {
        return "no clusters\n".to_owned();
    }
    let rows: Vec<Vec<String>> = c
        .clusters
        .iter()
        .map(|c| {
            let members: Vec<String> = c.members.iter().map(|(name, role)| format!("{name}({role})")).collect();
            vec![
                c.name.clone(),
                c.cluster_id.clone(),
                c.state.to_string(),
                c.api_endpoint.clone(),
                or_dash(c.vip.holder.as_deref()),
                members.join(","),
            ]
        })
        .collect();
    table(&["NAME", "ID", "STATE", "API", "HOLDER", "MEMBERS"], &rows)
}

/// `sdwanctl registry vips`.
pub fn vips(v: &VipsResponse) -> String {
    if v.vips.is_empty() {
        return "no VIPs\n".to_owned();
    }
    let rows: Vec<Vec<String>> = v
        .vips
        .iter()
        .map(|v| {
            let candidates: Vec<&str> = v.candidates.iter().map(|c| c.name.as_str()).collect();
            vec![
                v.address.to_string(),
                v.vip_id.clone(),
                or_dash(v.cluster_id.as_deref()),
                or_dash(v.holder.as_deref()),
                v.epoch.map_or_else(|| "-".to_owned(), epoch),
                v.confirmed_peers.map_or_else(|| "-".to_owned(), |c| c.to_string()),
                candidates.join(","),
                v.move_request
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |m| format!("to {} (#{})", m.to, m.seq)),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "ID",
            "CLUSTER",
            "HOLDER",
            "EPOCH",
            "CONFIRMED",
            "CANDIDATES",
            "MOVE",
        ],
        &rows,
    )
}

/// `sdwanctl registry peers`; `now_ms` dates the last-seen column.
pub fn peers(p: &PeersResponse, now_ms: u64) -> String {
    if p.peers.is_empty() {
        return "no peers\n".to_owned();
    }
    let rows: Vec<Vec<String>> = p
        .peers
        .iter()
        .map(|p| {
            let m = &p.member;
            let roles: Vec<&str> = m.roles.iter().map(|r| r.as_str()).collect();
            let silent = Duration::from_secs(now_ms.saturating_sub(m.last_seen_ms) / 1000);
            vec![
                m.name.clone(),
                m.peer_id.clone(),
                m.address.to_string(),
                m.lifecycle.to_string(),
                if roles.is_empty() {
                    "-".to_owned()
                } else {
                    roles.join(",")
                },
                p.cluster
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |(id, role)| format!("{id} ({role})")),
                format!("{} ago", humantime::format_duration(silent)),
                if p.stale { "stale" } else { "live" }.to_owned(),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "ID",
            "ADDRESS",
            "CLASS",
            "ROLES",
            "CLUSTER",
            "LAST SEEN",
            "STATE",
        ],
        &rows,
    )
}

/// `sdwanctl registry move`: what was requested.
pub fn moved(v: &VipView) -> String {
    match &v.move_request {
        Some(m) => format!(
            "move of VIP {} to {} requested (#{}); its holder hands it over once it sees the request\n",
            v.address, m.to, m.seq
        ),
        None => format!("VIP {}: no move pending\n", v.address),
    }
}

/// `sdwanctl registry remove-peer`: what was done.
pub fn removed(peer_id: &str) -> String {
    format!("peer {peer_id} removed (tokens, cluster membership, VIP candidacy); every daemon drops it\n")
}

/// `sdwanctl registry tokens create`: the token (shown once, alone on its first line) and its limits.
pub fn token_created(t: &EnrollmentTokenView, now_ms: u64) -> String {
    format!(
        "{}\nenrollment token {} for network {}: {}; it is shown only now\n",
        t.token,
        t.info.id,
        t.info.network_id,
        limits(&t.info, now_ms)
    )
}

/// `sdwanctl registry tokens revoke`: what was done.
pub fn token_revoked(t: &EnrollmentTokenInfo) -> String {
    format!(
        "enrollment token {} revoked: it answers 401 token_revoked from now on (peers it enrolled keep their own \
         tokens)\n",
        t.id
    )
}

/// `sdwanctl registry tokens list`; `now_ms` decides which tokens are expired.
pub fn tokens(t: &EnrollmentTokensResponse, now_ms: u64) -> String {
    if t.tokens.is_empty() {
        return "no enrollment tokens\n".to_owned();
    }
    let rows: Vec<Vec<String>> = t
        .tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.network_id.clone(),
                time(t.created_at_ms),
                t.expires_at_ms.map_or_else(|| "never".to_owned(), time),
                format!(
                    "{}/{}",
                    t.uses,
                    t.max_uses.map_or_else(|| "unlimited".to_owned(), |m| m.to_string())
                ),
                roles(t.roles.as_deref()),
                token_state(t, now_ms).to_owned(),
            ]
        })
        .collect();
    table(
        &["ID", "NETWORK", "CREATED", "EXPIRES", "USES", "ROLES", "STATE"],
        &rows,
    )
}

/// `sdwanctl registry cluster-state`: the state now.
pub fn cluster_state(c: &ClusterStateView) -> String {
    format!("cluster {} is {}\n", c.cluster_id, c.state)
}

/// One line of a token's limits.
fn limits(t: &EnrollmentTokenInfo, now_ms: u64) -> String {
    format!(
        "expires {}, {} use(s) of {}, roles {}, {}",
        t.expires_at_ms.map_or_else(|| "never".to_owned(), time),
        t.uses,
        t.max_uses.map_or_else(|| "unlimited".to_owned(), |m| m.to_string()),
        roles(t.roles.as_deref()),
        token_state(t, now_ms)
    )
}

/// Whether a token can still enroll at `now_ms`, in one word.
fn token_state(t: &EnrollmentTokenInfo, now_ms: u64) -> &'static str {
    if t.revoked_at_ms.is_some() {
        "revoked"
    } else if t.expires_at_ms.is_some_and(|at| now_ms >= at) {
        "expired"
    } else if t.max_uses.is_some_and(|m| t.uses >= m) {
        "used-up"
    } else {
        "active"
    }
}

fn roles(roles: Option<&[crate::vocab::Role]>) -> String {
    match roles {
        None => "all".to_owned(),
        Some([]) => "none".to_owned(),
        Some(r) => r.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
    }
}

/// A Unix-ms time as RFC 3339 UTC, to the second.
fn time(ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(at).to_string()
}

fn epoch(e: EpochView) -> String {
    format!("{}.{}", e.term, e.rank)
}

fn or_dash(s: Option<&str>) -> String {
    s.unwrap_or("-").to_owned()
}

/// Left-aligned columns two spaces apart, trailing blanks trimmed.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    let mut out = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::wire::{CandidateView, ClusterView, MemberView, MoveRequestView, PeerView};
    use crate::vocab::{ClusterState, Lifecycle, Role};

    fn vip() -> VipView {
        VipView {
            vip_id: "v-1".into(),
            address: "fd00:5d:f::1".parse().expect("address"),
            cluster_id: Some("c-1".into()),
            candidates: ["s1", "s2"]
                .iter()
                .enumerate()
                .map(|(i, n)| CandidateView {
                    peer_id: format!("p-{i}"),
                    name: (*n).into(),
                    address: format!("fd00:5d::{}", i + 1).parse().expect("address"),
                })
                .collect(),
            holder: Some("s1".into()),
            epoch: Some(EpochView { term: 4, rank: 0 }),
            confirmed_peers: Some(3),
            move_request: Some(MoveRequestView {
                to: "s2".into(),
                seq: 2,
            }),
        }
    }

    #[test]
    fn vips_render_holder_epoch_candidates_and_move() {
        let text = vips(&VipsResponse { vips: vec![vip()] });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("ADDRESS       ID   CLUSTER  HOLDER  EPOCH"),
            "{text}"
        );
        assert_eq!(
            lines[1],
            "fd00:5d:f::1  v-1  c-1      s1      4.0    3          s1,s2       to s2 (#2)"
        );
        assert_eq!(vips(&VipsResponse { vips: vec![] }), "no VIPs\n");
        assert!(moved(&vip()).contains("to s2 requested (#2)"));
    }

    #[test]
    fn clusters_and_peers_render_one_row_each() {
        let c = ClusterView {
            cluster_id: "c-1".into(),
            name: "prod".into(),
            network_id: "n-1".into(),
            state: ClusterState::Active,
            api_endpoint: "https://[fd00:5d:f::1]:6443".into(),
            vip: vip(),
            members: vec![("s1".into(), Role::Server), ("a1".into(), Role::Agent)],
            created_at_ms: 0,
        };
        let text = clusters(&ClustersResponse { clusters: vec![c] });
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.ends_with("active  https://[fd00:5d:f::1]:6443  s1      s1(server),a1(agent)")),
            "{text}"
        );
        let peer = PeerView {
            member: MemberView {
                peer_id: "p-0".into(),
                name: "s1".into(),
                public_key: "k".into(),
                endpoint: None,
                address: "fd00:5d::1".parse().expect("address"),
                routed_prefixes: vec![],
                lifecycle: Lifecycle::Spot,
                roles: vec![Role::Server],
                last_seen_ms: 1_000,
            },
            network_id: "n-1".into(),
            cluster: Some(("c-1".into(), Role::Server)),
            stale: true,
        };
        let text = peers(&PeersResponse { peers: vec![peer] }, 66_000);
        assert!(
            text.lines()
                .nth(1)
                .is_some_and(|l| l.contains("spot   server  c-1 (server)  1m 5s ago  stale")),
            "{text}"
        );
    }

    #[test]
    fn tokens_render_limits_and_state_never_a_secret() {
        let info = |id: &str| EnrollmentTokenInfo {
            id: id.into(),
            network_id: "n-1".into(),
            created_at_ms: 0,
            expires_at_ms: Some(86_400_000),
            max_uses: Some(3),
            uses: 1,
            roles: Some(vec![Role::Agent]),
            revoked_at_ms: None,
        };
        let revoked = EnrollmentTokenInfo {
            revoked_at_ms: Some(5),
            roles: None,
            max_uses: None,
            expires_at_ms: None,
            ..info("t-2")
        };
        let list = EnrollmentTokensResponse {
            tokens: vec![info("t-1"), revoked],
        };
        let text = tokens(&list, 1_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("ID   NETWORK  CREATED"), "{text}");
        assert!(
            lines[1].ends_with("1970-01-02T00:00:00Z  1/3          agent  active"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("never                 1/unlimited  all    revoked"),
            "{text}"
        );
        assert!(tokens(&list, 86_400_000)
            .lines()
            .nth(1)
            .is_some_and(|l| l.ends_with("expired")));
        let created = EnrollmentTokenView {
            token: "sdwe_x_y".into(),
            info: info("t-1"),
        };
        let text = token_created(&created, 0);
        assert_eq!(
            text.lines().next(),
            Some("sdwe_x_y"),
            "the token alone on the first line"
        );
        assert!(text.contains("1 use(s) of 3, roles agent, active"), "{text}");
        assert!(token_revoked(&info("t-1")).contains("t-1 revoked"));
        assert_eq!(
            tokens(&EnrollmentTokensResponse { tokens: vec![] }, 0),
            "no enrollment tokens\n"
        );
    }

    #[test]
    fn plain_http_needs_insecure_and_ids_are_one_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "sdwa_x_y\n").expect("write");
        let e = RegistryClient::new("http://127.0.0.1:1", &token, false, None).expect_err("plain HTTP");
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(RegistryClient::new("http://127.0.0.1:1", &token, true, None).is_ok());
        let e = RegistryClient::new("https://r", &dir.path().join("none"), false, None).expect_err("no file");
        assert!(e.to_string().contains("--token-file"), "{e}");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }
}
