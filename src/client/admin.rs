//! The operator's client of the registry's admin routes (`sdwanctl registry …`), on the same
//! [`RegistryClient`] as sdwand's link: one TLS and CA policy, one error envelope, path escaping, size caps
//! and one error type ([`ClientError`]).
//!
//! The admin token is read from a file (never from the command line, where `ps` shows it). `https://` is
//! verified against the system roots, or against `--ca-file` only; `http://` is refused unless
//! `--insecure` (labs: the token travels in clear). `--insecure` never turns certificate checks off.

use std::net::Ipv6Addr;
use std::path::Path;

use reqwest::Method;

use super::http::{segment, ClientError, RegistryClient};
use crate::vocab::wire::{
    ClusterStateRequest, ClusterStateView, ClustersResponse, CreateEnrollmentTokenRequest, CreateFloatingRequest,
    CreateNetworkRequest, EnrollmentTokenInfo, EnrollmentTokenView, EnrollmentTokensResponse, FloatingResponse,
    FloatingView, NetworkView, NetworksResponse, PeerView, PeersResponse, SetFloatingRequest, SetQuorumRequest,
    SetSitePrefixesRequest, VipMoveRequest, VipView, VipsResponse,
};
use crate::vocab::{ClusterState, PodPool};
use ipnet::IpNet;

/// An admin client of one registry.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: RegistryClient,
}

impl AdminClient {
    /// A client of the registry whose replicas answer at `urls` (tried in order, the next when one does not
    /// answer) with the admin token in `token_file`; `insecure` allows plain HTTP, `ca_file` replaces the
    /// system roots.
    pub fn new(
        urls: &[String],
        token_file: &Path,
        insecure: bool,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let setup = ClientError::Setup;
        if urls.is_empty() {
            return Err(setup(
                "--url is missing: give the registry's URL (repeat --url for each replica)".into(),
            ));
        }
        for url in urls {
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
        let client = RegistryClient::connect(urls, ca_file, "--ca-file", agent)?.with_token(&token);
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

    /// The id of the VIP `given` names: its id, or its address (looked up in `GET /v1/vips`). Unknown or
    /// ambiguous (one address in two networks): a [`ClientError::Setup`] that lists what to use.
    pub async fn resolve_vip(&self, given: &str) -> Result<String, ClientError> {
        pick_vip(&self.vips().await?, given).map_err(ClientError::Setup)
    }

    /// The id of the peer `given` names: its id, or its name (looked up in `GET /v1/peers`). Unknown or
    /// ambiguous (one name in two networks): a [`ClientError::Setup`] that lists what to use.
    pub async fn resolve_peer(&self, given: &str) -> Result<String, ClientError> {
        pick_peer(&self.peers().await?, given).map_err(ClientError::Setup)
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

    /// `PUT /v1/peers/{id}/site-prefixes`: replaces the peer's site prefixes (`[]` removes them).
    pub async fn set_site_prefixes(&self, peer_id: &str, prefixes: &[IpNet]) -> Result<PeerView, ClientError> {
        let path = format!("/v1/peers/{}/site-prefixes", segment(peer_id));
        let req = SetSitePrefixesRequest {
            prefixes: prefixes.to_vec(),
        };
        self.client.must(Method::PUT, &path, Some(&req)).await
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

    /// `PUT /v1/vips/{id}/quorum`.
    pub async fn set_vip_quorum(&self, vip_id: &str, req: &SetQuorumRequest) -> Result<VipView, ClientError> {
        let path = format!("/v1/vips/{}/quorum", segment(vip_id));
        self.client.must(Method::PUT, &path, Some(req)).await
    }

    /// `GET /v1/floating`.
    pub async fn floating(&self) -> Result<FloatingResponse, ClientError> {
        self.client.must::<(), _>(Method::GET, "/v1/floating", None).await
    }

    /// `POST /v1/networks/{id}/floating`.
    pub async fn create_floating(
        &self,
        network_id: &str,
        req: &CreateFloatingRequest,
    ) -> Result<FloatingView, ClientError> {
        let path = format!("/v1/networks/{}/floating", segment(network_id));
        self.client.must(Method::POST, &path, Some(req)).await
    }

    /// `PUT /v1/floating/{id}`.
    pub async fn set_floating(&self, id: &str, req: &SetFloatingRequest) -> Result<FloatingView, ClientError> {
        let path = format!("/v1/floating/{}", segment(id));
        self.client.must(Method::PUT, &path, Some(req)).await
    }

    /// `DELETE /v1/floating/{id}`.
    pub async fn delete_floating(&self, id: &str) -> Result<(), ClientError> {
        let path = format!("/v1/floating/{}", segment(id));
        let (timeout, limit) = (super::http::REQUEST_TIMEOUT, super::http::MAX_ANSWER_BYTES);
        let _: Option<serde_json::Value> = self
            .client
            .call::<(), _>(Method::DELETE, &path, None, timeout, limit)
            .await?;
        Ok(())
    }

    /// `POST /v1/floating/{id}/move`.
    pub async fn move_floating(&self, id: &str, to: &str) -> Result<FloatingView, ClientError> {
        let path = format!("/v1/floating/{}/move", segment(id));
        let req = VipMoveRequest { to: to.to_owned() };
        self.client.must(Method::POST, &path, Some(&req)).await
    }

    /// The id of the floating prefix `given` names: its id, or its prefix (looked up in `GET /v1/floating`).
    /// Unknown or ambiguous (one prefix in two networks): a [`ClientError::Setup`] that lists what to use.
    pub async fn resolve_floating(&self, given: &str) -> Result<String, ClientError> {
        pick_floating(&self.floating().await?, given).map_err(ClientError::Setup)
    }

    /// The id of the network `given` names: its id, or its name (looked up in `GET /v1/networks`).
    pub async fn resolve_network(&self, given: &str) -> Result<String, ClientError> {
        pick_network(&self.networks().await?, given).map_err(ClientError::Setup)
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

/// The VIP of `vips` whose id is `given`, or else whose address is `given`; the error lists the choices.
fn pick_vip(vips: &VipsResponse, given: &str) -> Result<String, String> {
    if let Some(v) = vips.vips.iter().find(|v| v.vip_id == given) {
        return Ok(v.vip_id.clone());
    }
    let address: Option<Ipv6Addr> = given.parse().ok();
    let found: Vec<&VipView> = vips.vips.iter().filter(|v| Some(v.address) == address).collect();
    match found.as_slice() {
        [one] => Ok(one.vip_id.clone()),
        [] => {
            let known: Vec<String> = vips
                .vips
                .iter()
                .map(|v| format!("{} ({})", v.address, v.vip_id))
                .collect();
            Err(format!(
                "no VIP with address or id {given:?} in this account; VIPs: {} (see `sdwanctl registry vips`)",
                list(&known)
            ))
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|v| format!("{} (cluster {})", v.vip_id, v.cluster_id.as_deref().unwrap_or("-")))
                .collect();
            Err(format!(
                "{given} is the address of {} VIPs (one per network); give the id: {}",
                many.len(),
                list(&ids)
            ))
        }
    }
}

/// The floating prefix of `floating` whose id is `given`, or else whose prefix is `given`; the error lists
/// the choices.
fn pick_floating(floating: &FloatingResponse, given: &str) -> Result<String, String> {
    if let Some(f) = floating.floating.iter().find(|f| f.floating_id == given) {
        return Ok(f.floating_id.clone());
    }
    let prefix: Option<IpNet> = given.parse().ok();
    let found: Vec<&FloatingView> = floating.floating.iter().filter(|f| Some(f.prefix) == prefix).collect();
    match found.as_slice() {
        [one] => Ok(one.floating_id.clone()),
        [] => {
            let known: Vec<String> = floating
                .floating
                .iter()
                .map(|f| format!("{} ({})", f.prefix, f.floating_id))
                .collect();
            Err(format!(
                "no floating prefix {given:?} (prefix or id) in this account; floating prefixes: {} (see \
                 `sdwanctl registry floating list`)",
                list(&known)
            ))
        }
        many => {
            let ids: Vec<String> = many.iter().map(|f| f.floating_id.clone()).collect();
            Err(format!(
                "{given} floats in {} networks; give the id: {}",
                many.len(),
                list(&ids)
            ))
        }
    }
}

/// The network of `networks` whose id is `given`, or else whose name is `given`; the error lists the choices.
fn pick_network(networks: &NetworksResponse, given: &str) -> Result<String, String> {
    if let Some(n) = networks.networks.iter().find(|n| n.id == given) {
        return Ok(n.id.clone());
    }
    let found: Vec<&NetworkView> = networks.networks.iter().filter(|n| n.name == given).collect();
    match found.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => {
            let known: Vec<String> = networks
                .networks
                .iter()
                .map(|n| format!("{} ({})", n.name, n.id))
                .collect();
            Err(format!(
                "no network with name or id {given:?} in this account; networks: {} (see `sdwanctl registry \
                 networks`)",
                list(&known)
            ))
        }
        many => {
            let ids: Vec<String> = many.iter().map(|n| n.id.clone()).collect();
            Err(format!(
                "{} networks are named {given:?}; give the id: {}",
                many.len(),
                list(&ids)
            ))
        }
    }
}

/// The peer of `peers` whose id is `given`, or else whose name is `given`; the error lists the choices.
fn pick_peer(peers: &PeersResponse, given: &str) -> Result<String, String> {
    if let Some(p) = peers.peers.iter().find(|p| p.member.peer_id == given) {
        return Ok(p.member.peer_id.clone());
    }
    let found: Vec<&PeerView> = peers.peers.iter().filter(|p| p.member.name == given).collect();
    match found.as_slice() {
        [one] => Ok(one.member.peer_id.clone()),
        [] => {
            let known: Vec<String> = peers
                .peers
                .iter()
                .map(|p| format!("{} ({})", p.member.name, p.member.peer_id))
                .collect();
            Err(format!(
                "no peer with name or id {given:?} in this account; peers: {} (see `sdwanctl registry peers`)",
                list(&known)
            ))
        }
        many => {
            let ids: Vec<String> = many
                .iter()
                .map(|p| format!("{} (network {})", p.member.peer_id, p.network_id))
                .collect();
            Err(format!(
                "{} peers are named {given:?} (one per network); give the id: {}",
                many.len(),
                list(&ids)
            ))
        }
    }
}

/// A pod pool as `sdwanctl registry create-network --pod-pool` takes it: `PREFIX:NODE_LEN`, e.g.
/// `198.51.100.0/24:28` or `fd00:42::/48:64` (the registry checks the rest).
pub fn parse_pod_pool(text: &str) -> Result<PodPool, String> {
    let usage = || format!("{text:?} is not PREFIX:NODE_LEN (e.g. 10.42.0.0/16:24 or fd00:42::/48:64)");
    let (prefix, node_len) = text.rsplit_once(':').ok_or_else(usage)?;
    if !prefix.contains('/') {
        return Err(usage());
    }
    Ok(PodPool {
        prefix: prefix.parse().map_err(|e| format!("{}: {e}", usage()))?,
        node_len: node_len.parse().map_err(|e| format!("{}: node length: {e}", usage()))?,
    })
}

/// At most ten items, comma-separated, then how many more; `none` for none.
fn list(items: &[String]) -> String {
    const SHOWN: usize = 10;
    match items.len() {
        0 => "none".to_owned(),
        n if n <= SHOWN => items.join(", "),
        n => format!("{}, and {} more", items[..SHOWN].join(", "), n - SHOWN),
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
        let e = AdminClient::new(&["http://127.0.0.1:1".to_owned()], &token, false, None).expect_err("plain HTTP");
        assert!(e.to_string().contains("--insecure"), "{e}");
        assert!(AdminClient::new(&["http://127.0.0.1:1".to_owned()], &token, true, None).is_ok());
        let e =
            AdminClient::new(&["https://r".to_owned()], &dir.path().join("none"), false, None).expect_err("no file");
        assert!(e.to_string().contains("--token-file"), "{e}");
        assert_eq!(segment("a/b?c"), "a%2Fb%3Fc");
    }

    fn vip(id: &str, address: &str) -> VipView {
        VipView {
            vip_id: id.into(),
            address: address.parse().expect("address"),
            cluster_id: Some(format!("c-{id}")),
            candidates: vec![],
            holder: None,
            epoch: None,
            confirmed_peers: None,
            move_request: None,
            quorum: None,
        }
    }

    fn peer(id: &str, name: &str, network: &str) -> PeerView {
        PeerView {
            member: crate::vocab::wire::MemberView {
                peer_id: id.into(),
                name: name.into(),
                public_key: "k".into(),
                endpoint: None,
                address: "fd00:5d::1".parse().expect("address"),
                routed_prefixes: vec![],
                address_v4: None,
                prefixes: Vec::new(),
                lifecycle: crate::vocab::Lifecycle::Persistent,
                roles: vec![],
                last_seen_ms: 0,
            },
            network_id: network.into(),
            cluster: None,
            stale: false,
            silent: false,
        }
    }

    #[test]
    fn a_floating_prefix_is_named_by_prefix_or_id_and_a_network_by_name_or_id() {
        let floating = |id: &str, prefix: &str| FloatingView {
            floating_id: id.into(),
            prefix: prefix.parse().expect("prefix"),
            gateway: None,
            candidates: vec![],
            holder: None,
            epoch: None,
            move_request: None,
            quorum: None,
        };
        let all = FloatingResponse {
            floating: vec![
                floating("f-1", "203.0.113.0/24"),
                floating("f-2", "2001:db8:6::/48"),
                floating("f-3", "2001:db8:6::/48"),
            ],
        };
        assert_eq!(pick_floating(&all, "f-2").as_deref(), Ok("f-2"));
        assert_eq!(pick_floating(&all, "203.0.113.0/24").as_deref(), Ok("f-1"));
        let e = pick_floating(&all, "2001:db8:6::/48").expect_err("two networks");
        assert!(e.contains("floats in 2 networks") && e.contains("f-2, f-3"), "{e}");
        let e = pick_floating(&all, "203.0.113.0/25").expect_err("unknown");
        assert!(
            e.contains("203.0.113.0/24 (f-1)") && e.contains("sdwanctl registry floating list"),
            "{e}"
        );
        let network = |id: &str, name: &str| NetworkView {
            id: id.into(),
            account_id: "a".into(),
            name: name.into(),
            overlay_prefix: "fd00:5d::/48".parse().expect("prefix"),
            vip_pool: "fd00:5d:f::/64".parse().expect("prefix"),
            overlay_prefix_v4: None,
            pod_pools: vec![],
            site_ranges: vec![],
            revision: 1,
        };
        let networks = NetworksResponse {
            networks: vec![network("n-1", "branch"), network("n-2", "lab"), network("n-3", "lab")],
        };
        assert_eq!(pick_network(&networks, "branch").as_deref(), Ok("n-1"));
        assert_eq!(pick_network(&networks, "n-3").as_deref(), Ok("n-3"));
        let e = pick_network(&networks, "lab").expect_err("two named lab");
        assert!(e.contains("n-2, n-3"), "{e}");
        let e = pick_network(&networks, "prod").expect_err("unknown");
        assert!(e.contains("branch (n-1)"), "{e}");
    }

    #[test]
    fn a_vip_is_named_by_address_or_id_and_ambiguity_lists_the_ids() {
        let vips = VipsResponse {
            vips: vec![
                vip("v-1", "fd00:5d:f::1"),
                vip("v-2", "fd00:5d:f::2"),
                vip("v-3", "fd00:5d:f::2"),
            ],
        };
        assert_eq!(pick_vip(&vips, "v-2").as_deref(), Ok("v-2"));
        assert_eq!(pick_vip(&vips, "fd00:5d:f::1").as_deref(), Ok("v-1"));
        assert_eq!(
            pick_vip(&vips, "fd00:5d:f:0::1").as_deref(),
            Ok("v-1"),
            "any spelling of the address"
        );
        let e = pick_vip(&vips, "fd00:5d:f::2").expect_err("two networks");
        assert!(
            e.contains("give the id: v-2 (cluster c-v-2), v-3 (cluster c-v-3)"),
            "{e}"
        );
        let e = pick_vip(&vips, "fd00::9").expect_err("unknown");
        assert!(
            e.contains("fd00:5d:f::1 (v-1)") && e.contains("sdwanctl registry vips"),
            "{e}"
        );
    }

    #[test]
    fn a_peer_is_named_by_name_or_id_and_ambiguity_lists_the_ids() {
        let peers = PeersResponse {
            peers: vec![
                peer("p-1", "node-1", "n-1"),
                peer("p-2", "node-2", "n-1"),
                peer("p-3", "node-2", "n-2"),
            ],
        };
        assert_eq!(pick_peer(&peers, "p-3").as_deref(), Ok("p-3"));
        assert_eq!(pick_peer(&peers, "node-1").as_deref(), Ok("p-1"));
        let e = pick_peer(&peers, "node-2").expect_err("two networks");
        assert!(e.contains("give the id: p-2 (network n-1), p-3 (network n-2)"), "{e}");
        let e = pick_peer(&peers, "node-9").expect_err("unknown");
        assert!(
            e.contains("node-1 (p-1)") && e.contains("sdwanctl registry peers"),
            "{e}"
        );
        let e = pick_peer(&PeersResponse { peers: vec![] }, "x").expect_err("none");
        assert!(e.contains("peers: none"), "{e}");
    }

    #[test]
    fn pod_pools_parse_as_prefix_colon_length() {
        let v4 = parse_pod_pool("198.51.100.0/24:28").expect("v4");
        assert_eq!((v4.prefix.to_string(), v4.node_len), ("198.51.100.0/24".to_owned(), 28));
        let v6 = parse_pod_pool("fd00:42::/48:64").expect("v6");
        assert_eq!((v6.prefix.to_string(), v6.node_len), ("fd00:42::/48".to_owned(), 64));
        for bad in [
            "198.51.100.0/24",
            "fd00:42::/48",
            "fd00:42::48:64",
            "198.51.100.0/24:x",
            "198.51.100.0/24:",
        ] {
            assert!(parse_pod_pool(bad).is_err(), "{bad}");
        }
    }
}
