//! The JSON bodies of the registry's HTTP API, shared by the server (`sdwan-registry`), the daemon's client
//! and `sdwanctl`.
//!
//! Requests refuse unknown fields: a misspelt `target_cluster_id` must fail loudly, not join the wrong
//! cluster. Responses only ever gain fields.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::{ClusterState, Lifecycle, PodPool, Role, RoutedPrefix};

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
    /// If set, each peer also gets a /32 from here beside its /128 (a dual-stack `node-ip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_prefix_v4: Option<Ipv4Net>,
    /// Pod pools, at most one per address family: each peer gets a share of each at enrollment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pod_pools: Vec<PodPool>,
    /// The ranges operators may assign site prefixes from (`[]`: none may be assigned).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site_ranges: Vec<IpNet>,
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
    /// Peers' /32s, if the network gives them.
    #[serde(default)]
    pub overlay_prefix_v4: Option<Ipv4Net>,
    /// Pod pools, at most one per address family.
    #[serde(default)]
    pub pod_pools: Vec<PodPool>,
    /// Ranges site prefixes may be assigned from.
    #[serde(default)]
    pub site_ranges: Vec<IpNet>,
    /// Current revision.
    pub revision: u64,
}

/// `GET /v1/networks` (admin token): every network of the admin's account, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworksResponse {
    /// The networks.
    pub networks: Vec<NetworkView>,
}

/// `POST /v1/networks/{id}/enrollment-tokens` (admin token): the new token's limits, each optional (an
/// empty body, or `{}`, issues a token without limits, as before limits existed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentTokenRequest {
    /// Expires this many seconds after it is issued (not with `expires_at_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// Expires at this time, Unix ms, in the future (not with `expires_in_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// How many peers it may enroll (at least 1); absent: unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_uses: Option<u64>,
    /// The k3s roles its peers may take (`[]`: none, plain mesh members); absent: every role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roles: Option<Vec<Role>>,
}

/// An enrollment token as operators see it: everything but its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentTokenInfo {
    /// Its id: the public key id, also the part of the token text after `sdwe_` (revocation names it).
    pub id: String,
    /// The network it enrolls into.
    pub network_id: String,
    /// Issue time, Unix ms.
    pub created_at_ms: u64,
    /// Expiry time, Unix ms; `None`: never.
    pub expires_at_ms: Option<u64>,
    /// Enrollments it may make; `None`: unlimited.
    pub max_uses: Option<u64>,
    /// Enrollments it made.
    pub uses: u64,
    /// Roles its peers may take; `None`: every role.
    pub roles: Option<Vec<Role>>,
    /// Revocation time, Unix ms; `None`: not revoked.
    pub revoked_at_ms: Option<u64>,
}

/// The answer to `POST /v1/networks/{id}/enrollment-tokens`: a new enrollment token, shown once, and its
/// limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentTokenView {
    /// The token.
    pub token: String,
    /// Its id, network and limits.
    #[serde(flatten)]
    pub info: EnrollmentTokenInfo,
}

/// `GET /v1/enrollment-tokens` (admin token): every enrollment token of the account, revoked and spent
/// ones included, in issue order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollmentTokensResponse {
    /// The tokens, without their secrets.
    pub tokens: Vec<EnrollmentTokenInfo>,
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
    /// The IPv6 prefixes of `prefixes`, for daemons older than that field (which route only these).
    pub routed_prefixes: Vec<Ipv6Net>,
    /// Its /32, when the network gives peers one.
    #[serde(default)]
    pub address_v4: Option<Ipv4Addr>,
    /// Every prefix routed to it, IPv4 and IPv6: its pod shares and the site prefixes assigned to it.
    #[serde(default)]
    pub prefixes: Vec<RoutedPrefix>,
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
    /// Its /32, when the network gives peers one.
    #[serde(default)]
    pub address_v4: Option<Ipv4Addr>,
    /// The network's overlay prefix (routed through the interface).
    pub overlay_prefix: Ipv6Net,
    /// Its peer token, shown once: keep it in the daemon's state directory.
    pub peer_token: String,
    /// The network's revision that includes this peer.
    pub revision: u64,
    /// Every member, this peer included, in enrollment order.
    pub members: Vec<MemberView>,
    /// The network's IPv4 overlay prefix (the members' `address_v4` are in it).
    #[serde(default)]
    pub overlay_prefix_v4: Option<Ipv4Net>,
    /// The network's pod pools (the members' pod prefixes are shares of them).
    #[serde(default)]
    pub pod_pools: Vec<PodPool>,
    /// The network's site ranges (the members' site prefixes are in them).
    #[serde(default)]
    pub site_ranges: Vec<IpNet>,
}

/// `GET /v1/networks/{id}/members` (peer token of the network, or its account's admin token), and the
/// answer of `GET /v1/networks/{id}/watch` when the network changed: the whole network at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersResponse {
    /// The network.
    pub network_id: String,
    /// The revision this list is at.
    pub revision: u64,
    /// The network's overlay prefix (routed through every daemon's interface).
    #[serde(default)]
    pub overlay_prefix: Option<Ipv6Net>,
    /// The network's VIP pool (inside the overlay prefix): every VIP of the view is in it.
    #[serde(default)]
    pub vip_pool: Option<Ipv6Net>,
    /// The network's IPv4 overlay prefix: every member's `address_v4` is in it.
    #[serde(default)]
    pub overlay_prefix_v4: Option<Ipv4Net>,
    /// The network's pod pools (k3s's cluster CIDRs): every member's pod prefixes are shares of them.
    #[serde(default)]
    pub pod_pools: Vec<PodPool>,
    /// The ranges site prefixes are assigned from: every member's site prefixes are in one of them.
    #[serde(default)]
    pub site_ranges: Vec<IpNet>,
    /// Every member, in enrollment order.
    pub members: Vec<MemberView>,
    /// Every VIP of the network, in creation order, with its candidates in rank order.
    #[serde(default)]
    pub vips: Vec<VipView>,
    /// Every floating prefix of the network, in creation order, with its candidates in rank order.
    #[serde(default)]
    pub floating: Vec<FloatingView>,
}

/// `GET /v1/networks/{id}/watch?since=R&wait_ms=W` (same tokens as members): a long poll. Answers at once
/// with the whole network ([`MembersResponse`]) when its revision is not `since` (above it, or below it after
/// the registry was restored from a backup); otherwise waits until it
/// changes (200 with the network) or `wait_ms` passes (204, no body: poll again with the same `since`).
/// Changes that land while a watcher is away are batched: it gets one answer at the newest revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    /// The revision the caller has.
    pub since: u64,
    /// How long to wait for a change, ms (default [`WATCH_DEFAULT_WAIT_MS`], at most [`WATCH_MAX_WAIT_MS`]).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// A watch's wait when the query names none.
pub const WATCH_DEFAULT_WAIT_MS: u64 = 25_000;
/// The longest wait a watch may ask for.
pub const WATCH_MAX_WAIT_MS: u64 = 60_000;

/// A VIP's fencing epoch, as reported by daemons (see [`crate::vocab::Epoch`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochView {
    /// Claim round.
    pub term: u64,
    /// The claimant's rank.
    pub rank: u16,
}

/// A VIP of a network, as daemons and operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipView {
    /// Id.
    pub vip_id: String,
    /// The address.
    pub address: Ipv6Addr,
    /// The cluster whose API endpoint it is, if any.
    pub cluster_id: Option<String>,
    /// Candidates in rank order.
    pub candidates: Vec<CandidateView>,
    /// The holder's peer name, as last reported by a daemon.
    pub holder: Option<String>,
    /// The highest epoch any daemon reported.
    pub epoch: Option<EpochView>,
    /// Peers the holder last said route the VIP to it.
    #[serde(default)]
    pub confirmed_peers: Option<u32>,
    /// An operator's pending manual move, if any.
    #[serde(default)]
    pub move_request: Option<MoveRequestView>,
    /// Quorum mode (`None`: off, the default). See "Quorum mode" in `docs/protocol.md`.
    #[serde(default)]
    pub quorum: Option<QuorumView>,
}

/// Quorum mode of a VIP or a floating prefix: a candidate claims, and a holder keeps holding, only while a
/// majority of the voters (the candidates and these witnesses) back it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumView {
    /// Members that vote without being candidates (for example one witness beside two gateways), in the
    /// order the operator gave; never a candidate of the same VIP or prefix.
    #[serde(default)]
    pub witnesses: Vec<CandidateView>,
}

/// A floating prefix of a network: a LAN or range behind several gateways (its candidates), routed by every
/// member to the one that holds it, and moved by the VIP failover protocol (a VIP is the special case of a
/// /128 whose holder puts it on its interface).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingView {
    /// Id.
    pub floating_id: String,
    /// The prefix, IPv4 or IPv6, in canonical form (host bits zero).
    pub prefix: IpNet,
    /// An address in the prefix that the holder puts on its interface toward the prefix (the gateway the
    /// site's hosts route the overlay through), if any.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Candidates in rank order.
    pub candidates: Vec<CandidateView>,
    /// The holder's peer name, as last reported by a daemon.
    #[serde(default)]
    pub holder: Option<String>,
    /// The highest epoch any daemon reported.
    #[serde(default)]
    pub epoch: Option<EpochView>,
    /// An operator's pending manual move, if any.
    #[serde(default)]
    pub move_request: Option<MoveRequestView>,
    /// Quorum mode (`None`: off, the default).
    #[serde(default)]
    pub quorum: Option<QuorumView>,
}

/// `POST /v1/networks/{id}/floating` (admin token): a new floating prefix of the network. The answer is the
/// prefix ([`FloatingView`]); the network's revision is bumped, so every daemon routes it to its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateFloatingRequest {
    /// The prefix, IPv4 or IPv6, canonical (host bits zero); it overlaps nothing else the network routes.
    pub prefix: IpNet,
    /// An address inside the prefix, not its network address, that the holder puts on its interface.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Candidate peers (names or ids), best first: 1 to [`crate::vocab::MAX_CANDIDATES`], distinct.
    pub candidates: Vec<String>,
    /// Quorum mode on (default off).
    #[serde(default)]
    pub quorum: bool,
    /// Witnesses (names or ids) that vote without being candidates; only with `quorum: true`.
    #[serde(default)]
    pub witnesses: Vec<String>,
}

/// `PUT /v1/floating/{id}` (admin token): changes a floating prefix; a field left out is kept. Bumps the
/// network's revision when something changed; answers the prefix ([`FloatingView`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFloatingRequest {
    /// The new candidate list (names or ids), best first, replacing the old one.
    #[serde(default)]
    pub candidates: Option<Vec<String>>,
    /// Quorum mode on or off (turning it off drops the witnesses).
    #[serde(default)]
    pub quorum: Option<bool>,
    /// The new witness list (names or ids), replacing the old one; only while quorum mode is on.
    #[serde(default)]
    pub witnesses: Option<Vec<String>>,
}

/// `GET /v1/floating` (admin token): every floating prefix of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingResponse {
    /// Floating prefixes, by network then creation order.
    pub floating: Vec<FloatingView>,
}

/// `PUT /v1/vips/{id}/quorum` (admin token): quorum mode of a VIP. Bumps the network's revision when it
/// changed; answers the VIP ([`VipView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetQuorumRequest {
    /// Quorum mode on or off.
    pub enabled: bool,
    /// Witnesses (names or ids) that vote without being candidates; must be empty when `enabled` is false.
    #[serde(default)]
    pub witnesses: Vec<String>,
}

/// An operator's request to move a VIP (`POST /v1/vips/{id}/move`). The holder's daemon sees it through the
/// watch and performs a planned handover, once per `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveRequestView {
    /// Target candidate's peer name.
    pub to: String,
    /// Increases with every request, so a daemon acts on each request once.
    pub seq: u64,
}

/// `POST /v1/vips/{id}/move` and `POST /v1/floating/{id}/move` (admin token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipMoveRequest {
    /// Target: the peer name of one of the VIP's candidates.
    pub to: String,
}

/// `POST /v1/peers/self/report` (peer token): the daemon's liveness and its view of every VIP it follows.
/// Updates the peer's last-seen time; does not bump the network's revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerReportRequest {
    /// One entry per VIP the daemon runs.
    #[serde(default)]
    pub vips: Vec<VipReport>,
}

/// One VIP in a [`PeerReportRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipReport {
    /// The VIP.
    pub address: Ipv6Addr,
    /// The reporter's role (`holding`, `standby`, `follower`, ...).
    pub role: String,
    /// The holder the reporter believes in, by peer name.
    #[serde(default)]
    pub holder: Option<String>,
    /// The epoch of the claim in force as the reporter sees it.
    #[serde(default)]
    pub epoch: Option<EpochView>,
    /// When holding: peers that acknowledged the claim.
    #[serde(default)]
    pub confirmed_peers: Option<u32>,
}

/// The answer to a [`PeerReportRequest`]. The caller's liveness is recorded even when entries are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerReportResponse {
    /// The network's revision now (a daemon behind it polls the watch).
    pub revision: u64,
    /// The highest epoch the registry knows for each VIP of the network: a daemon never claims a term at or
    /// below it, so epochs keep growing across a restart of every daemon. Never above
    /// [`crate::vocab::MAX_TERM`] minus [`crate::vocab::MAX_TERM_STEP`], so a floor always leaves room to claim.
    pub epochs: Vec<VipEpochView>,
    /// Entries of the report that were not taken, one line each (an implausible epoch); empty when every
    /// entry was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// A VIP's highest known epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipEpochView {
    /// The VIP.
    pub address: Ipv6Addr,
    /// Its highest epoch.
    pub epoch: EpochView,
}

/// A peer as operators see it (`GET /v1/peers`, admin token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerView {
    /// The member fields.
    #[serde(flatten)]
    pub member: MemberView,
    /// Its network.
    pub network_id: String,
    /// The cluster it is a member of, and as what.
    pub cluster: Option<(String, Role)>,
    /// Silent longer than its class's TTL (persistent peers are shown stale, never removed).
    pub stale: bool,
    /// Silent longer than the registry's `silent_after` (default 15 s: three of sdwand's default 5 s report
    /// intervals) but not yet stale: its node is likely down. A display state only; reaping is unchanged.
    #[serde(default)]
    pub silent: bool,
}

/// `PUT /v1/peers/{id}/site-prefixes` (admin token): the peer's site prefixes, replacing the ones it had
/// (`[]` removes them all). Each must lie in one of the network's `site_ranges` and overlap nothing else
/// the network routes; the answer is the peer ([`PeerView`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSitePrefixesRequest {
    /// The prefixes, IPv4 or IPv6.
    pub prefixes: Vec<IpNet>,
}

/// `GET /v1/peers` (admin token): every peer of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeersResponse {
    /// Peers, by network then enrollment order.
    pub peers: Vec<PeerView>,
}

/// A cluster as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    /// Id.
    pub cluster_id: String,
    /// Name.
    pub name: String,
    /// Its network.
    pub network_id: String,
    /// Life stage.
    pub state: ClusterState,
    /// `https://[VIP]:6443`.
    pub api_endpoint: String,
    /// Its VIP.
    pub vip: VipView,
    /// Members: (peer name, role), in join order.
    pub members: Vec<(String, Role)>,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

/// `GET /v1/clusters` (admin token): every cluster of the account, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClustersResponse {
    /// Clusters.
    pub clusters: Vec<ClusterView>,
}

/// `GET /v1/vips` (admin token): every VIP of the account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipsResponse {
    /// VIPs, by network then creation order.
    pub vips: Vec<VipView>,
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
    /// The k3s token for the caller's role: the cluster's server token for a server, its agent token for an
    /// agent (from registries that predate agent tokens: the server token for both).
    pub join_token: String,
    /// The cluster's agent token (k3s `agent-token`: joins agents, not servers). Servers set it as
    /// `agent-token`, agents use it as their `token`. Absent from registries that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<String>,
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

/// `POST /v1/clusters/{id}/state` (admin token): an operator sets a cluster's state, e.g. `active` to take
/// it out of `error` once its servers are repaired, so joins work again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterStateRequest {
    /// The new state: `active` or `error` (`bootstrapping` is only where a cluster starts).
    pub state: ClusterState,
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
    /// Its admin token, shown once; empty (and left out) when it was written to `admin_token_file`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub admin_token: String,
    /// The new 0600 file the admin token was written to (`init-account --token-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_file: Option<String>,
}
