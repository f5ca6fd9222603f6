//! The local operator surface: the protocol `sdwanctl` speaks to the daemon over a unix socket, and the
//! socket itself.
//!
//! One connection carries one request and one response, each a single line of JSON. Requests are tagged by
//! `cmd` (`{"cmd":"status"}`, `{"cmd":"vip_list"}`, `{"cmd":"vip_move","vip":"…","to":"…"}`); responses by
//! `type`, with the payload in `data` (`{"type":"vips","data":[…]}`, `{"type":"error","data":{"code":…,
//! "message":…}}`). The view types are the daemon's state as the operator sees it: plain data with member
//! names filled in, so `sdwanctl` needs no configuration of its own.
//!
//! This module owns the protocol types and the socket I/O ([`bind`], [`serve`], [`call`]); it makes no
//! decisions. The daemon loop receives each parsed [`Request`] with a reply channel and answers it;
//! [`render`] turns responses into the text `sdwanctl` prints.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::vip::{Epoch, MoveError, VipStatus};
use crate::vocab::{PrefixKind, RoutedPrefix};

pub mod docker;
pub mod registry;
pub mod render;
mod socket;
#[cfg(test)]
mod tests;

pub use socket::{bind, call, serve, ControlError, Incoming, ANSWER_TIMEOUT, CALL_TIMEOUT, MAX_REQUEST, READ_TIMEOUT};

/// Where the daemon listens and `sdwanctl` connects unless told otherwise (`daemon.control_socket`).
pub const DEFAULT_SOCKET: &str = "/run/sdwand/sdwand.sock";

/// The `code` of an [`Response::Error`]: stable strings scripts may match on.
pub mod code {
    /// The request line was not a valid request (or was too long, or too slow to arrive).
    pub const BAD_REQUEST: &str = "bad_request";
    /// The daemon loop did not take or answer the request in time.
    pub const DAEMON_BUSY: &str = "daemon_busy";
    /// The daemon is stopping and no longer answers requests.
    pub const SHUTTING_DOWN: &str = "shutting_down";
    /// The VIP is not configured on this node.
    pub const UNKNOWN_VIP: &str = "unknown_vip";
    /// The `to` of a move names neither a member nor an overlay address.
    pub const UNKNOWN_PEER: &str = "unknown_peer";
    /// A move was asked of a node that does not hold the VIP.
    pub const NOT_HOLDER: &str = "not_holder";
    /// A handover of the VIP is already under way.
    pub const MOVE_IN_PROGRESS: &str = "move_in_progress";
    /// The move target is not a candidate of the VIP.
    pub const NOT_CANDIDATE: &str = "not_candidate";
    /// The move target is the holder itself.
    pub const SELF_TARGET: &str = "self_target";
    /// The move target is not live and healthy.
    pub const NOT_READY: &str = "not_ready";
    /// No other candidate is live and healthy.
    pub const NO_SUCCESSOR: &str = "no_successor";
    /// The daemon is still starting (enrolling with its registry): it has no VIPs to list or move yet.
    pub const STARTING: &str = "starting";
}

/// What an operator asks the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The daemon, its peers and its VIPs: answered with [`Response::Status`].
    Status,
    /// Every VIP in detail: answered with [`Response::Vips`].
    VipList,
    /// Hand a VIP this node holds over to another candidate: answered with [`Response::Moved`] once the
    /// handover has started (it completes when the successor's claim is confirmed).
    VipMove {
        /// The VIP.
        vip: Ipv6Addr,
        /// The successor, by member name or overlay address; `None` picks the best-ranked live and healthy
        /// candidate.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum Response {
    /// Answer to [`Request::Status`] (boxed: it is by far the largest answer).
    Status(Box<DaemonStatus>),
    /// Answer to [`Request::VipList`], in configuration order.
    Vips(Vec<NodeVip>),
    /// Answer to [`Request::VipMove`]: the handover has started.
    Moved {
        /// The VIP.
        vip: Ipv6Addr,
        /// The successor.
        to: NamedAddr,
    },
    /// The request failed.
    Error {
        /// Machine-readable reason, one of the [`code`] constants.
        code: String,
        /// What went wrong and, where there is one, what to do about it.
        message: String,
    },
}

impl Response {
    /// An error answer with `code` (one of the [`code`] constants).
    pub fn error(code: &str, message: impl Into<String>) -> Response {
        Response::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The answer to a move the VIP machine refused; addresses named through `names`. A move asked of a
    /// node that does not hold the VIP names the holder and where to ask instead.
    pub fn move_refused(vip: Ipv6Addr, e: &MoveError, names: &dyn Fn(Ipv6Addr) -> Option<String>) -> Response {
        if let MoveError::NotHolder(holder) = e {
            let message = match holder {
                Some(h) => {
                    let holder = NamedAddr::new(*h, names);
                    let on = holder.name.clone().unwrap_or_else(|| h.to_string());
                    format!(
                        "cannot move {vip}: this node does not hold it; {holder} does: run this on {on}, or use \
                         `sdwanctl registry move`"
                    )
                }
                None => format!(
                    "cannot move {vip}: this node does not hold it and knows no holder; run this on the holder \
                     (see `sdwanctl vip list` there), or use `sdwanctl registry move`"
                ),
            };
            return Response::error(code::NOT_HOLDER, message);
        }
        let code = match e {
            MoveError::NotHolder(_) => code::NOT_HOLDER,
            MoveError::InProgress(_) => code::MOVE_IN_PROGRESS,
            MoveError::NotCandidate(_) => code::NOT_CANDIDATE,
            MoveError::SelfTarget(_) => code::SELF_TARGET,
            MoveError::NotReady(_) => code::NOT_READY,
            MoveError::NoSuccessor => code::NO_SUCCESSOR,
        };
        Response::error(code, format!("cannot move {vip}: {e}"))
    }
}

/// Resolves the `to` of a [`Request::VipMove`]: an overlay address as written, otherwise a member name
/// through `by_name`. The error is the answer to send.
pub fn resolve_peer(to: &str, by_name: impl Fn(&str) -> Option<Ipv6Addr>) -> Result<Ipv6Addr, Response> {
    to.parse().ok().or_else(|| by_name(to)).ok_or_else(|| {
        Response::error(
            code::UNKNOWN_PEER,
            format!("{to:?} is neither a member name nor an overlay address"),
        )
    })
}

/// An overlay address with the member name it belongs to, when it belongs to one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedAddr {
    /// The overlay address.
    pub address: Ipv6Addr,
    /// The member's name; `None` when no member has this address.
    pub name: Option<String>,
}

impl NamedAddr {
    /// `address` named through `names`.
    pub fn new(address: Ipv6Addr, names: &dyn Fn(Ipv6Addr) -> Option<String>) -> NamedAddr {
        NamedAddr {
            address,
            name: names(address),
        }
    }
}

impl fmt::Display for NamedAddr {
    /// `name (address)`, or the bare address when it has no name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} ({})", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// A claim's fencing token ([`Epoch`]), shown as `term.rank`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEpoch {
    /// Claim round.
    pub term: u64,
    /// The claimant's rank when it claimed.
    pub rank: u16,
}

impl From<Epoch> for NodeEpoch {
    fn from(e: Epoch) -> NodeEpoch {
        NodeEpoch {
            term: e.term,
            rank: e.rank,
        }
    }
}

impl fmt::Display for NodeEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.term, self.rank)
    }
}

/// How far the holder's claim has been acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmedView {
    /// Peers that acknowledged the claim.
    pub acked: usize,
    /// Peers the claim was sent to.
    pub peers: usize,
}

/// A candidate of a VIP as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCandidate {
    /// The member's name, when the address belongs to a member.
    pub name: Option<String>,
    /// Overlay address.
    pub address: Ipv6Addr,
    /// Promotion rank (0 = first).
    pub rank: usize,
    /// This node.
    pub me: bool,
    /// Heard within its dead time, directly or through another candidate (always true for this node).
    pub live: bool,
    /// Its last reported health.
    pub healthy: bool,
    /// Its last reported state (`listening`, `standby`, `holding`, `draining`); `None` before it was heard.
    pub state: Option<String>,
    /// Milliseconds since it was last heard from.
    pub last_heard_ms: Option<u64>,
    /// Last heartbeat round trip, microseconds.
    pub rtt_us: Option<u64>,
}

/// One VIP or floating prefix as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeVip {
    /// The virtual address; for a floating prefix its failover key ([`crate::vocab::floating_key`]).
    pub vip: Ipv6Addr,
    /// The floating prefix, when this entry is one (`None`: a VIP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<ipnet::IpNet>,
    /// This node's role (`listening`, `standby`, `holding`, `draining`, `follower`).
    pub role: String,
    /// This node's health as last reported.
    pub healthy: bool,
    /// The holder named by the highest claim seen; `None` when no claim is known.
    pub holder: Option<NamedAddr>,
    /// That claim's epoch.
    pub epoch: Option<NodeEpoch>,
    /// Where this node routes the VIP (itself when it serves the VIP).
    pub routed_to: Option<NamedAddr>,
    /// Candidates in rank order.
    pub candidates: Vec<NodeCandidate>,
    /// When this node holds the VIP: how many peers acknowledged its claim.
    pub confirmed: Option<ConfirmedView>,
    /// Fewer than two candidates: nobody can take the VIP over when its holder fails.
    pub single_candidate: bool,
}

impl NodeVip {
    /// What the entry moves, as operators name it: the VIP's address or the floating prefix.
    pub fn target(&self) -> String {
        self.prefix.map_or_else(|| self.vip.to_string(), |p| p.to_string())
    }

    /// The operator's view of `status`, with addresses named through `names` (`prefix`: the floating
    /// prefix it is, if any).
    pub fn from_status(
        status: &VipStatus,
        prefix: Option<ipnet::IpNet>,
        names: &dyn Fn(Ipv6Addr) -> Option<String>,
    ) -> NodeVip {
        NodeVip {
            vip: status.vip,
            prefix,
            role: status.role.as_str().to_owned(),
            healthy: status.healthy,
            holder: status.claim.map(|c| NamedAddr::new(c.holder, names)),
            epoch: status.claim.map(|c| c.epoch.into()),
            routed_to: status.routed_to.map(|a| NamedAddr::new(a, names)),
            candidates: status
                .candidates
                .iter()
                .map(|c| NodeCandidate {
                    name: names(c.address),
                    address: c.address,
                    rank: c.rank,
                    me: c.me,
                    live: c.live,
                    healthy: c.healthy,
                    state: c.state.map(|s| s.as_str().to_owned()),
                    last_heard_ms: c.last_heard_ms,
                    rtt_us: c.rtt_us,
                })
                .collect(),
            confirmed: status.confirmed.map(|(acked, peers)| ConfirmedView { acked, peers }),
            single_candidate: status.candidates.len() < 2,
        }
    }
}

/// A WireGuard peer of this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePeer {
    /// The member's name.
    pub name: String,
    /// Its public key, base64.
    pub public_key: String,
    /// Its overlay address.
    pub address: Ipv6Addr,
    /// Its current endpoint as the device knows it (configured or roamed).
    pub endpoint: Option<SocketAddr>,
    /// Seconds since the last completed handshake; `None` before the first.
    pub last_handshake_secs_ago: Option<u64>,
    /// Seconds since sdwand first saw more bytes received from it than at its previous device read
    /// (reads at each resync, scrape and status request): a live peer sends at least every keepalive.
    /// `None` while nothing new arrived since sdwand started (and from daemons that predate it).
    #[serde(default)]
    pub last_received_secs_ago: Option<u64>,
    /// Bytes received from it since the device was created.
    pub rx_bytes: u64,
    /// Bytes sent to it since the device was created.
    pub tx_bytes: u64,
}

/// The daemon as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    /// The daemon's version.
    pub version: String,
    /// The WireGuard interface it manages.
    pub interface: String,
    /// This node's overlay address.
    pub address: Ipv6Addr,
    /// The WireGuard backend in use (`kernel` or `userspace`).
    pub backend: String,
    /// Whether the data plane has been reconciled since the daemon started (systemd readiness).
    pub ready: bool,
    /// The failover socket; absent from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_socket: Option<SocketView>,
    /// The metrics endpoint; absent from daemons that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<EndpointView>,
    /// The second metrics endpoint on the overlay address (`daemon.metrics_overlay_port`), once started;
    /// absent without the setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_overlay: Option<EndpointView>,
    /// The registry link, with `[registry]`; absent without (and from daemons that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryView>,
    /// This node's workload prefixes and the interface MTU, once the data plane runs; absent while
    /// starting (and from daemons that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadView>,
    /// The k3s handshake and drop-in, with `[k3s]`; absent without (and from daemons that predate it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k3s: Option<K3sView>,
    /// Peers in configuration order.
    pub peers: Vec<NodePeer>,
    /// VIPs in configuration order.
    pub vips: Vec<NodeVip>,
}

/// The failover socket: a node whose socket is not bound hears no other candidate, so it claims no VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketView {
    /// `[overlay address]:failover.port`.
    pub address: SocketAddr,
    /// Bound and receiving.
    pub bound: bool,
    /// Why it is not bound (the last bind or receive error), when it is not.
    pub error: Option<String>,
}

/// The registry link as `sdwanctl status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryView {
    /// The registry's base URL (`registry.url`).
    pub url: String,
    /// This node has a registry identity; `false` while it is still enrolling.
    pub enrolled: bool,
    /// The last call reached the registry and was not refused as unauthenticated or forbidden.
    pub up: bool,
    /// What the last call ran into and how to fix it, while calls keep failing.
    pub problem: Option<String>,
}

/// Where the k3s handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum K3sHandshake {
    /// Not answered yet (the registry was not reached, or the request is under way): retried.
    Pending,
    /// The registry accepted it: the drop-in follows from its answer.
    Accepted,
    /// The registry refused it (a 4xx with a code): retried every minute or two, until fixed.
    Refused,
}

/// The k3s integration as `sdwanctl status` shows it: the handshake of `[k3s]` and the drop-in it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct K3sView {
    /// The k3s role (`server` or `agent`).
    pub role: String,
    /// `k3s.bootstrap`: this server creates the cluster (`false`: it joins one).
    pub bootstrap: bool,
    /// The handshake's state.
    pub handshake: K3sHandshake,
    /// The registry's error code, while refused.
    pub refused_code: Option<String>,
    /// What the last attempt ran into, while not accepted; or why the drop-in cannot be written.
    pub problem: Option<String>,
    /// The cluster's id, once accepted.
    pub cluster_id: Option<String>,
    /// The cluster's name, once accepted.
    pub cluster_name: Option<String>,
    /// The cluster's state as the accepted answer gave it (`bootstrapping`, `active`, `error`).
    pub cluster_state: Option<String>,
    /// The drop-in's path (`k3s.config_path`).
    pub drop_in: String,
    /// The first 12 hex digits of the SHA-256 of the drop-in as sdwand wrote it (or found it, unchanged);
    /// `None` before it is written. `sha256sum` of the file shows whether it was edited since.
    pub drop_in_sha256: Option<String>,
    /// When the drop-in was written, Unix seconds (an unchanged file: its modification time).
    pub written_at_unix: Option<u64>,
}

/// The Prometheus endpoint (`daemon.metrics_listen`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointView {
    /// The configured listen address.
    pub listen: SocketAddr,
    /// Listening and serving.
    pub serving: bool,
    /// Why it is not (the daemon keeps retrying), when it is not.
    pub error: Option<String>,
}

/// This node's own workload prefixes as the daemon routes them: what `sdwanctl docker-network` (and an
/// operator) builds a container network from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadView {
    /// The WireGuard interface's MTU (configured or derived from the underlay): containers and pods
    /// behind this node use it so their packets fit the tunnel.
    pub mtu: u32,
    /// This node's pod shares and site prefixes, as the registry gave them (empty without any).
    pub prefixes: Vec<RoutedPrefix>,
}

impl WorkloadView {
    /// This node's pod shares (its pods' and containers' addresses), IPv4 and IPv6.
    pub fn pods(&self) -> impl Iterator<Item = ipnet::IpNet> + '_ {
        self.prefixes
            .iter()
            .filter(|p| p.kind == PrefixKind::Pod)
            .map(|p| p.prefix)
    }
}
