//! The registry's records: plain data shared by the store backends and the service logic. No I/O here.
//!
//! Identifiers are random UUID-shaped strings ([`crate::token::new_id`]), so an id reveals nothing
//! about how many objects exist and cannot be guessed. Times are Unix milliseconds, read once per request by
//! the API layer and passed in, so the logic reads no clock.
//!
//! The records are `serde` types: the etcd backend ([`crate::store::etcd`]) stores them as JSON. Renaming a
//! field changes that stored form (a new etcd schema version); adding one needs `#[serde(default)]`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use sdwand::vocab::Epoch;
pub use sdwand::vocab::{ClusterState, Lifecycle, PodPool, PrefixKind, Role, RoutedPrefix, UnknownName};

/// An account: the trust boundary. Nothing of one account is visible to, or changeable by, another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    /// Random id.
    pub id: String,
    /// Operator-chosen label (not unique, not used for lookups).
    pub name: String,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

/// An overlay network of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Random id.
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// Operator-chosen label.
    pub name: String,
    /// Peers' /128 addresses come from here.
    pub overlay_prefix: Ipv6Net,
    /// VIP addresses come from here; strictly inside `overlay_prefix`, so the overlay route covers every
    /// VIP, and never handed to a peer.
    pub vip_pool: Ipv6Net,
    /// Bumped by every change a daemon of this network must see (peers, VIPs and their candidates); the
    /// watch resumes from it. Only grows.
    pub revision: u64,
    /// Offset in `overlay_prefix` of the next peer address to try. Only grows: a released address is never
    /// handed out again, so no new key ever shows up on an address a daemon has pinned to an old key.
    pub next_peer_offset: u64,
    /// Offset in `vip_pool` of the next VIP address (only grows, for the same reason).
    pub next_vip_offset: u64,
    /// Peers' /32s come from here, if set (lowest free address first, reused after a hold-down).
    pub overlay_prefix_v4: Option<Ipv4Net>,
    /// Pod pools, at most one per address family: each peer gets one share of each at enrollment.
    pub pod_pools: Vec<PodPool>,
    /// The ranges operators may assign site prefixes from.
    pub site_ranges: Vec<IpNet>,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

/// What a bearer token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// An account's operator: networks, enrollment tokens, read access to everything of the account.
    Admin,
    /// Enrolls new peers into one network.
    Enrollment,
    /// One enrolled peer: its membership reads and handshakes.
    Peer,
}

/// A peer of a network: one node with a WireGuard key and a /128.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    /// Random id.
    pub id: String,
    /// The network it belongs to (and through it, the account).
    pub network_id: String,
    /// Name, unique in the network (daemons use it in logs and metric labels).
    pub name: String,
    /// WireGuard public key, base64; unique in the network.
    pub public_key: String,
    /// Underlay endpoint; `None` when the peer is not reachable from outside (it reaches the others).
    pub endpoint: Option<SocketAddr>,
    /// Its /128 in the network's overlay prefix.
    pub address: Ipv6Addr,
    /// How it is reaped.
    pub lifecycle: Lifecycle,
    /// The k3s roles it may take, sorted, without duplicates.
    pub roles: Vec<Role>,
    /// Its /32 in the network's `overlay_prefix_v4`, if the network has one.
    pub address_v4: Option<Ipv4Addr>,
    /// Its share of each of the network's pod pools, in the order of the pools.
    pub pod_prefixes: Vec<IpNet>,
    /// The site prefixes an operator assigned to it, in the order given.
    pub site_prefixes: Vec<IpNet>,
    /// Last time it called the registry, Unix ms.
    pub last_seen_ms: u64,
    /// Enrollment time, Unix ms.
    pub created_at_ms: u64,
    /// Key id of the enrollment token it enrolled with (`None` for peers enrolled before the registry
    /// recorded it): only that token may retry its enrollment.
    pub enrolled_by: Option<String>,
}

impl Peer {
    /// Records a call with its peer token at `now_ms`. Always after its enrollment time, even within the
    /// same millisecond: a peer whose `last_seen_ms` equals `created_at_ms` never used its token.
    pub fn mark_seen(&mut self, now_ms: u64) {
        self.last_seen_ms = now_ms.max(self.created_at_ms.saturating_add(1));
    }

    /// Whether the peer has called the registry with its token since it enrolled.
    pub fn token_used(&self) -> bool {
        self.last_seen_ms != self.created_at_ms
    }
}

impl Peer {
    /// Every prefix routed to the peer: its pod shares, then its site prefixes.
    pub fn prefixes(&self) -> Vec<RoutedPrefix> {
        let pods = self.pod_prefixes.iter().map(|&prefix| RoutedPrefix {
            prefix,
            kind: PrefixKind::Pod,
        });
        let sites = self.site_prefixes.iter().map(|&prefix| RoutedPrefix {
            prefix,
            kind: PrefixKind::Site,
        });
        pods.chain(sites).collect()
    }

    /// Everything of the network's address space the peer holds beyond its /128: its /32 (as a /32
    /// prefix), pod shares and site prefixes.
    pub fn held(&self) -> Vec<IpNet> {
        let v4 = self.address_v4.map(|a| IpNet::V4(Ipv4Net::from(a)));
        v4.into_iter()
            .chain(self.pod_prefixes.iter().copied())
            .chain(self.site_prefixes.iter().copied())
            .collect()
    }
}

/// A prefix (or /32) a removed peer held, not handed out again before `until_ms`: daemons that have not
/// yet heard of the removal (one watch round trip) or are cut off from the registry still route it to the
/// old node, and a new node must never receive traffic meant for it (see [`crate::service::Ttls`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrefixHold {
    /// The network whose space it is.
    pub network_id: String,
    /// The prefix: a pod share, a site prefix or a /32.
    pub prefix: IpNet,
    /// Free again from this time on (Unix ms).
    pub until_ms: u64,
    /// The name of the peer that held it, for messages.
    pub released_by: String,
}

/// A virtual IP of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vip {
    /// Random id.
    pub id: String,
    /// The network whose VIP pool it came from.
    pub network_id: String,
    /// The address.
    pub address: Ipv6Addr,
    /// Candidate peer ids in rank order (rank 0 = the bootstrap server; joining servers are appended).
    pub candidates: Vec<String>,
    /// The peer holding it, as last reported; `None` until a daemon reports.
    pub holder: Option<String>,
    /// The highest epoch reported for it, kept so epochs stay monotonic across full restarts.
    #[serde(with = "stored_epoch")]
    pub epoch: Option<Epoch>,
    /// Peers the holder said route the VIP to it, as reported with the highest epoch.
    pub confirmed_peers: Option<u32>,
    /// The candidate (peer id) an operator asked the VIP to move to; `None` when no move is pending.
    pub move_to: Option<String>,
    /// Sequence number of the last move request (0: none ever); grows with every request.
    pub move_seq: u64,
    /// Quorum mode (`None`: off, the default and what every VIP stored before it existed).
    #[serde(default)]
    pub quorum: Option<Quorum>,
}

/// Quorum mode of a VIP or floating prefix: the candidates and these witnesses vote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    /// Peer ids of the witnesses, in the order the operator gave; never a candidate of the same object.
    pub witnesses: Vec<String>,
}

/// A floating prefix of a network: routed by every member to the candidate that holds it, moved by the VIP
/// failover protocol under its key ([`sdwand::vocab::floating_key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Floating {
    /// Random id.
    pub id: String,
    /// The network it belongs to.
    pub network_id: String,
    /// The prefix (canonical).
    pub prefix: IpNet,
    /// The address the holder puts on its interface, if any (inside the prefix, not its network address).
    pub gateway: Option<IpAddr>,
    /// Candidate peer ids in rank order. Empty only after every candidate was removed from the network:
    /// then nobody holds or routes it until an operator names new candidates.
    pub candidates: Vec<String>,
    /// The peer holding it, as last reported; `None` until a daemon reports.
    pub holder: Option<String>,
    /// The highest epoch reported for it.
    #[serde(with = "stored_epoch")]
    pub epoch: Option<Epoch>,
    /// The candidate (peer id) an operator asked it to move to; `None` when no move is pending.
    pub move_to: Option<String>,
    /// Sequence number of the last move request (0: none ever).
    pub move_seq: u64,
    /// Quorum mode (`None`: off).
    pub quorum: Option<Quorum>,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

impl Floating {
    /// Its key in the failover protocol: what daemons report it under.
    pub fn key(&self) -> Ipv6Addr {
        sdwand::vocab::floating_key(self.prefix)
    }
}

/// A k3s cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    /// Random id (the `target_cluster_id` of joins).
    pub id: String,
    /// The owning account.
    pub account_id: String,
    /// The network its nodes and VIP live in.
    pub network_id: String,
    /// Operator-chosen or generated label.
    pub name: String,
    /// Life stage.
    pub state: ClusterState,
    /// The VIP its API endpoint lives on.
    pub vip_id: String,
    /// The k3s join token handed to joiners (a k3s secret, so kept readable, unlike bearer tokens).
    pub join_token: String,
    /// The k3s agent token (`agent-token` on servers, `token` on agents): it joins agents, not servers.
    /// `None` for clusters created before agent tokens; the next handshake gives them one.
    pub agent_token: Option<String>,
    /// Creation time, Unix ms.
    pub created_at_ms: u64,
}

/// A peer's membership of a cluster. A peer is a member of at most one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMember {
    /// The cluster.
    pub cluster_id: String,
    /// The member.
    pub peer_id: String,
    /// What it joined as.
    pub role: Role,
    /// Join (or bootstrap) time, Unix ms.
    pub joined_at_ms: u64,
}

/// A stored bearer token: only a hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public lookup key, part of the token text.
    pub key_id: String,
    /// What it allows.
    pub kind: TokenKind,
    /// SHA-256 of the secret part.
    pub secret_hash: [u8; 32],
    /// The account it belongs to (every token belongs to exactly one).
    pub account_id: String,
    /// The network, for enrollment and peer tokens.
    pub network_id: Option<String>,
    /// The peer, for peer tokens.
    pub peer_id: Option<String>,
    /// Issue time, Unix ms.
    pub created_at_ms: u64,
    /// What the token may still do (enrollment tokens; other kinds are never limited).
    pub limits: TokenLimits,
}

impl TokenRecord {
    /// A new, unlimited token record of `kind` in `account_id`, issued at `now_ms`.
    pub fn new(key_id: String, kind: TokenKind, secret_hash: [u8; 32], account_id: String, now_ms: u64) -> Self {
        TokenRecord {
            key_id,
            kind,
            secret_hash,
            account_id,
            network_id: None,
            peer_id: None,
            created_at_ms: now_ms,
            limits: TokenLimits::default(),
        }
    }
}

/// The limits of an enrollment token, and how much of them is used. The default is what every token
/// stored before limits existed keeps: no expiry, unlimited uses, every role, not revoked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenLimits {
    /// After this time (Unix ms) the token answers 401 `token_expired`; `None`: never.
    pub expires_at_ms: Option<u64>,
    /// How many successful enrollments it may make; `None`: unlimited.
    pub max_uses: Option<u64>,
    /// Successful enrollments made with it (a retried enrollment of the same peer counts once).
    pub uses: u64,
    /// The roles a peer enrolled with it may name, sorted, without duplicates; `None`: every role.
    pub roles: Option<Vec<Role>>,
    /// When an operator revoked it (Unix ms); from then on it answers 401 `token_revoked`.
    pub revoked_at_ms: Option<u64>,
}

/// Why a token that matched cannot be used any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSpent {
    /// Revoked by an operator.
    Revoked,
    /// Past its expiry time.
    Expired,
    /// Every allowed use is used.
    UsedUp,
}

impl TokenLimits {
    /// Why the token can no longer be used at `now_ms`, if it cannot. `new_use`: the request would count
    /// as one more use (a new enrollment, not a retry).
    pub fn spent(&self, now_ms: u64, new_use: bool) -> Option<TokenSpent> {
        if self.revoked_at_ms.is_some() {
            Some(TokenSpent::Revoked)
        } else if self.expires_at_ms.is_some_and(|at| now_ms >= at) {
            Some(TokenSpent::Expired)
        } else if new_use && self.max_uses.is_some_and(|max| self.uses >= max) {
            Some(TokenSpent::UsedUp)
        } else {
            None
        }
    }

    /// Whether a peer enrolled with this token may take `role`.
    pub fn allows(&self, role: Role) -> bool {
        self.roles.as_ref().is_none_or(|r| r.contains(&role))
    }
}

impl TokenKind {
    /// The stable name used in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenKind::Admin => "admin",
            TokenKind::Enrollment => "enrollment",
            TokenKind::Peer => "peer",
        }
    }
}

impl FromStr for TokenKind {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, UnknownName> {
        match s {
            "admin" => Ok(TokenKind::Admin),
            "enrollment" => Ok(TokenKind::Enrollment),
            "peer" => Ok(TokenKind::Peer),
            _ => Err(UnknownName {
                what: "token kind",
                value: s.to_owned(),
            }),
        }
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A VIP's epoch as stored: `[term, rank]` (the wire's [`Epoch`] is serialized only).
mod stored_epoch {
    use sdwand::vocab::Epoch;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(epoch: &Option<Epoch>, s: S) -> Result<S::Ok, S::Error> {
        epoch.map(|e| (e.term, e.rank)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Epoch>, D::Error> {
        Ok(Option::<(u64, u16)>::deserialize(d)?.map(|(term, rank)| Epoch { term, rank }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for l in [Lifecycle::Persistent, Lifecycle::Ephemeral, Lifecycle::Spot] {
            assert_eq!(l.as_str().parse::<Lifecycle>(), Ok(l));
            assert_eq!(serde_json::to_string(&l).ok(), Some(format!("\"{l}\"")));
        }
        for s in [ClusterState::Bootstrapping, ClusterState::Active, ClusterState::Error] {
            assert_eq!(s.as_str().parse::<ClusterState>(), Ok(s));
        }
        for k in [TokenKind::Admin, TokenKind::Enrollment, TokenKind::Peer] {
            assert_eq!(k.as_str().parse::<TokenKind>(), Ok(k));
        }
        assert!("Server".parse::<Role>().is_err());
    }

    #[test]
    fn token_limits_spend_in_order_revoked_expired_used_up() {
        let unlimited = TokenLimits::default();
        assert_eq!(unlimited.spent(u64::MAX, true), None);
        assert!(unlimited.allows(Role::Server));
        let limits = TokenLimits {
            expires_at_ms: Some(1_000),
            max_uses: Some(2),
            uses: 2,
            roles: Some(vec![Role::Agent]),
            revoked_at_ms: None,
        };
        assert_eq!(limits.spent(999, false), None, "a retry is no new use");
        assert_eq!(limits.spent(999, true), Some(TokenSpent::UsedUp));
        assert_eq!(limits.spent(1_000, false), Some(TokenSpent::Expired));
        let revoked = TokenLimits {
            revoked_at_ms: Some(5),
            ..limits.clone()
        };
        assert_eq!(revoked.spent(0, false), Some(TokenSpent::Revoked));
        assert!(limits.allows(Role::Agent) && !limits.allows(Role::Server));
    }

    /// A VIP stored in etcd before quorum mode (no `quorum` field) reads as quorum off, and one with it
    /// round-trips.
    #[test]
    fn a_vip_stored_before_quorum_mode_reads_with_quorum_off() {
        let old = r#"{"id":"v","network_id":"n","address":"fd00:1::ffff:1","candidates":["p"],"holder":null,
                      "epoch":[3,0],"confirmed_peers":null,"move_to":null,"move_seq":0}"#;
        let vip: Vip = serde_json::from_str(old).expect("old VIP");
        assert_eq!(
            (vip.quorum.as_ref(), vip.epoch),
            (None, Some(Epoch { term: 3, rank: 0 }))
        );
        let quorate = Vip {
            quorum: Some(Quorum {
                witnesses: vec!["w".into()],
            }),
            ..vip
        };
        let json = serde_json::to_string(&quorate).expect("encode");
        assert_eq!(serde_json::from_str::<Vip>(&json).ok(), Some(quorate));
    }
}
