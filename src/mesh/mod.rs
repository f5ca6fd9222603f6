//! The node's desired state and the pure plans that bring the actual state to it.
//!
//! Nothing here does I/O. [`Desired`] is built from the configuration ([`Desired::from_config`]) and the
//! allowed-IP claims of every owner ([`AllowedIps`]); [`plan_device`] and [`plan_net`] diff it against a
//! snapshot of the device and of the kernel and return the minimal change. Applying the change is the job
//! of [`crate::wg`] and [`crate::net`], driven by [`crate::reconcile`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ipnet::{IpNet, Ipv6Net};
use wireguard_control::Key;

use crate::config::{host_net, Config};

mod plan;
#[cfg(test)]
mod tests;

pub use plan::{plan_device, plan_net, DevicePlan, NetPlan, PeerUpdate};

/// A public key as map key (`wireguard_control::Key` is not `Ord`).
pub type KeyBytes = [u8; 32];

/// A handshake younger than this marks the peer's session live: its endpoint may have roamed, so a
/// configured endpoint does not overwrite it (WireGuard's `REJECT_AFTER_TIME`).
pub const FRESH_HANDSHAKE: Duration = Duration::from_secs(180);

/// Who wants an allowed IP on a peer. A peer's allowed IPs are the union of every owner's claims, so an
/// owner changing its claims never strips another's (a resync never undoes a VIP move).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Owner {
    /// The member list: each member's /128 and routed prefixes.
    Membership,
    /// VIP failover: each VIP's /128 on the peer that holds it.
    Vip,
}

/// Allowed-IP claims by owner and peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps {
    claims: BTreeMap<Owner, BTreeMap<KeyBytes, BTreeSet<IpNet>>>,
}

impl AllowedIps {
    /// Replaces everything `owner` claims.
    pub fn set_owner(&mut self, owner: Owner, claims: BTreeMap<KeyBytes, BTreeSet<IpNet>>) {
        self.claims.insert(owner, claims);
    }

    /// The union of every owner's claims for `peer`.
    pub fn for_peer(&self, peer: &KeyBytes) -> BTreeSet<IpNet> {
        self.claims
            .values()
            .filter_map(|by_peer| by_peer.get(peer))
            .flatten()
            .copied()
            .collect()
    }
}

/// What one peer should look like on the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer's name (logs, metrics).
    pub name: String,
    /// Its public key.
    pub public_key: Key,
    /// Configured endpoint, if any.
    pub endpoint: Option<SocketAddr>,
    /// Composed allowed IPs (every owner's claims).
    pub allowed_ips: BTreeSet<IpNet>,
    /// Persistent keepalive, seconds.
    pub keepalive: Option<u16>,
}

/// What the node should look like: the WireGuard device and the kernel state around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// Interface name.
    pub ifname: String,
    /// Private key.
    pub private_key: Key,
    /// Listen port.
    pub listen_port: u16,
    /// MTU.
    pub mtu: u32,
    /// Peers by public key.
    pub peers: BTreeMap<KeyBytes, PeerSpec>,
    /// Addresses sdwand puts on the interface (this node's /128).
    pub addresses: BTreeSet<Ipv6Net>,
    /// Addresses sdwand owns when it sees them on the interface: /128s inside the overlay prefix. Those
    /// not in `addresses` are removed; anything else on the interface is left alone.
    pub owned_address_space: Ipv6Net,
    /// Further addresses sdwand owns wherever they are: the configured VIPs. On the interface only while
    /// this node holds them (then they are in `addresses` too).
    pub owned_addresses: BTreeSet<Ipv6Net>,
    /// Routes through the interface (overlay prefix, routed prefixes).
    pub routes: BTreeSet<Ipv6Net>,
}

impl Desired {
    /// The desired state for `config` with this node's `private_key`, and the membership owner's
    /// allowed-IP claims (to be merged with other owners' claims by the caller).
    pub fn from_config(config: &Config, private_key: &Key) -> (Desired, BTreeMap<KeyBytes, BTreeSet<IpNet>>) {
        let own_public = private_key.get_public();
        let mut peers = BTreeMap::new();
        let mut claims = BTreeMap::new();
        let overlay = config.interface.overlay_prefix;
        let vips: BTreeSet<Ipv6Net> = config.vips.iter().map(|v| host_net(v.address)).collect();
        // A VIP outside the overlay prefix needs its own route (the holder's local address wins over it).
        let mut routes: BTreeSet<Ipv6Net> = vips.iter().filter(|v| !overlay.contains(*v)).copied().collect();
        routes.insert(overlay);
        for m in config.members.iter().filter(|m| m.public_key != own_public) {
            claims.insert(m.public_key.0, m.prefixes().map(IpNet::V6).collect());
            routes.extend(m.routed_prefixes.iter().copied());
            peers.insert(
                m.public_key.0,
                PeerSpec {
                    name: m.name.clone(),
                    public_key: m.public_key.clone(),
                    endpoint: m.endpoint,
                    allowed_ips: BTreeSet::new(),
                    keepalive: config.interface.persistent_keepalive,
                },
            );
        }
        let desired = Desired {
            ifname: config.interface.name.clone(),
            private_key: private_key.clone(),
            listen_port: config.interface.listen_port,
            mtu: config.interface.mtu,
            peers,
            addresses: BTreeSet::from([host_net(config.interface.address)]),
            owned_address_space: overlay,
            owned_addresses: vips,
            routes,
        };
        (desired, claims)
    }

    /// Fills every peer's allowed IPs from `allowed` (the union of all owners' claims).
    pub fn compose(&mut self, allowed: &AllowedIps) {
        for (key, peer) in &mut self.peers {
            peer.allowed_ips = allowed.for_peer(key);
        }
    }
}

/// One peer as the device reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualPeer {
    /// Public key.
    pub public_key: Key,
    /// Current endpoint (configured or roamed to).
    pub endpoint: Option<SocketAddr>,
    /// Allowed IPs.
    pub allowed_ips: BTreeSet<IpNet>,
    /// Persistent keepalive.
    pub keepalive: Option<u16>,
    /// Last completed handshake.
    pub last_handshake: Option<SystemTime>,
    /// Bytes received from the peer.
    pub rx_bytes: u64,
    /// Bytes sent to the peer.
    pub tx_bytes: u64,
}

/// The device as it is (or as it was after the last successful apply, when cached).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActualDevice {
    /// Private key, if set.
    pub private_key: Option<Key>,
    /// Listen port, if set.
    pub listen_port: Option<u16>,
    /// Peers by key.
    pub peers: BTreeMap<KeyBytes, ActualPeer>,
}

/// The kernel's view of the interface (what [`plan_net`] diffs against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActualNet {
    /// Admin state up.
    pub up: bool,
    /// MTU.
    pub mtu: u32,
    /// Global IPv6 addresses on the interface.
    pub addresses: BTreeSet<Ipv6Net>,
    /// Routes through the interface that sdwand installed (marked with its route protocol).
    pub owned_routes: BTreeSet<Ipv6Net>,
}
