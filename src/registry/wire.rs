//! The JSON bodies of the registry's HTTP API (shared with its clients).
//!
//! Requests refuse unknown fields: a misspelt `target_cluster_id` must fail loudly, not join the wrong
//! cluster. Responses only ever gain fields.

use std::net::{Ipv6Addr, SocketAddr};

use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};

use super::model::{ClusterState, Lifecycle, Role};

/// `POST /v1/networks` (admin token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateNetworkRequest {
    /// Label.
    pub name: String,
    /// Peers' /128s come from here.
    pub overlay_prefix: Ipv6Net,
    /// VIPs come from here; must lie strictly inside `overlay_prefix`.
    pub vip_pool: Ipv6Net,
}

/// A network, as its account's admin sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    /// Id.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// Label.
    pub name: String,
    /// Peer address prefix.
    pub overlay_prefix: Ipv6Net,
    /// VIP pool.
    pub vip_pool: Ipv6Net,
    /// Current revision.
    pub revision: u64,
}

/// `POST /v1/networks/{id}/enrollment-tokens` (admin token): a new enrollment token, shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentTokenView {
    /// The network it enrolls into.
    pub network_id: String,
    /// The token.
    pub token: String,
}

/// `POST /v1/peers/enroll` (enrollment token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// Name, unique in the network: 1-64 letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    /// Underlay endpoint others reach it at, if any.
    #[serde(default)]
    pub endpoint: Option<SocketAddr>,
    /// Lifecycle class (default persistent).
    #[serde(default = "persistent")]
    pub lifecycle: Lifecycle,
    /// k3s roles it may take.
    #[serde(default)]
    pub roles: Vec<Role>,
}

fn persistent() -> Lifecycle {
    Lifecycle::Persistent
}

/// One member of a network, as daemons see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Peer id.
    pub peer_id: String,
    /// Name.
    pub name: String,
    /// WireGuard public key, base64.
    pub public_key: String,
    /// Underlay endpoint.
    pub endpoint: Option<SocketAddr>,
    /// Its /128.
    pub address: Ipv6Addr,
    /// Extra prefixes routed to it.
    pub routed_prefixes: Vec<Ipv6Net>,
    /// Lifecycle class.
    pub lifecycle: Lifecycle,
    /// k3s roles.
    pub roles: Vec<Role>,
    /// Last time it called the registry, Unix ms.
    pub last_seen_ms: u64,
}

/// The answer to an enrollment: the peer's identity and the network as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    /// The new peer's id.
    pub peer_id: String,
    /// Its network.
    pub network_id: String,
    /// Its /128.
    pub address: Ipv6Addr,
    /// The network's overlay prefix (routed through the interface).
    pub overlay_prefix: Ipv6Net,
    /// Its peer token, shown once: keep it in the daemon's state directory.
    pub peer_token: String,
    /// The network's revision that includes this peer.
    pub revision: u64,
    /// Every member, this peer included, in enrollment order.
    pub members: Vec<MemberView>,
}

/// `GET /v1/networks/{id}/members` (peer token of the network, or its account's admin token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// The network.
    pub network_id: String,
    /// The revision this list is at.
    pub revision: u64,
    /// Every member, in enrollment order.
    pub members: Vec<MemberView>,
}

/// `phase` of a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// A k3s server creates a cluster.
    Bootstrap,
    /// A k3s server or agent joins a cluster.
    JoinRequest,
}

/// `POST /v1/runtime/handshake` (peer token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandshakeRequest {
    /// Bootstrap or join.
    pub phase: Phase,
    /// The k3s role the caller acts in (bootstrap: server).
    pub role: Role,
    /// Join only: the cluster; absent or empty = the most recent active cluster of the caller's network.
    #[serde(default)]
    pub target_cluster_id: Option<String>,
    /// Bootstrap only: the new cluster's name (default: generated from its id).
    #[serde(default)]
    pub cluster_name: Option<String>,
}

/// A VIP candidate, in rank order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateView {
    /// Peer id.
    pub peer_id: String,
    /// Peer name.
    pub name: String,
    /// Its /128 (where its heartbeats come from).
    pub address: Ipv6Addr,
}

/// The answer to a handshake: what k3s needs, and the VIP it reaches the cluster on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeResponse {
    /// The cluster.
    pub cluster_id: String,
    /// Its name.
    pub cluster_name: String,
    /// Its state.
    pub state: ClusterState,
    /// The role the caller is a member in.
    pub role: Role,
    /// `https://[VIP]:6443`.
    pub api_endpoint: String,
    /// The k3s join token.
    pub join_token: String,
    /// The cluster's VIP.
    pub vip: Ipv6Addr,
    /// The VIP's candidates in rank order.
    pub vip_candidates: Vec<CandidateView>,
}

/// What a k3s server reports about its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum K3sStatus {
    /// k3s is up: a bootstrapping cluster becomes active.
    Ready,
    /// k3s failed: the cluster goes to error state and refuses joins.
    Failed,
}

/// `POST /v1/clusters/{id}/report` (peer token of a server member of the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// What k3s does.
    pub k3s: K3sStatus,
}

/// A cluster's state after a report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStateView {
    /// The cluster.
    pub cluster_id: String,
    /// Its state now.
    pub state: ClusterState,
}

/// A new account, from `sdwan-registry init-account`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountCreated {
    /// Its id.
    pub account_id: String,
    /// Its name.
    pub name: String,
    /// Its admin token, shown once.
    pub admin_token: String,
}
