//! The node's desired state and the pure plans that bring the actual state to it.
//!
//! Nothing here does I/O. [`Desired`] is built from the configuration ([`Desired::from_config`]) and is
//! the one owner of what the node should look like: the peers, each peer's allowed IPs as the union of
//! every owner's claims ([`AllowedIps`]), where each VIP is routed and which VIPs this node holds. Its
//! methods change one owner's part and say which peers changed ([`Desired::route_vip`],
//! [`Desired::hold_vip`], [`Desired::set_config`] and [`Desired::reload`], [`Desired::set_membership`]), so
//! a caller can apply only those. [`plan_device`] (every peer), [`plan_peers`] (only the peers a change named) and
//! [`plan_net`] diff it against a snapshot of the device and of the kernel and return the minimal change. Applying the change is the job of [`crate::wg`] and
//! [`crate::net`], driven by [`crate::reconcile`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use ipnet::{IpNet, Ipv6Net};
use wireguard_control::Key;

use crate::config::{host_net, Config};

mod plan;
#[cfg(test)]
mod tests;

pub use plan::{plan_device, plan_net, plan_peers, DevicePlan, NetPlan, PeerUpdate};

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

/// One owner's allowed-IP claims, by peer.
pub type Claims = BTreeMap<KeyBytes, BTreeSet<IpNet>>;

/// The peers a change touched (their composed spec differs), in key order.
pub type ChangedPeers = BTreeSet<KeyBytes>;

/// Allowed-IP claims by owner and peer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedIps {
    claims: BTreeMap<Owner, Claims>,
}

impl AllowedIps {
    /// Replaces everything `owner` claims.
    pub fn set_owner(&mut self, owner: Owner, claims: Claims) {
        self.claims.insert(owner, claims);
    }

    /// What `owner` claims (empty if nothing).
    pub fn owner(&self, owner: Owner) -> Option<&Claims> {
        self.claims.get(&owner)
    }

    /// Adds one claim of `owner` on `peer`.
    fn claim(&mut self, owner: Owner, peer: KeyBytes, net: IpNet) {
        self.claims
            .entry(owner)
            .or_default()
            .entry(peer)
            .or_default()
            .insert(net);
    }

    /// Drops one claim of `owner` on `peer`.
    fn release(&mut self, owner: Owner, peer: &KeyBytes, net: &IpNet) {
        let Some(by_peer) = self.claims.get_mut(&owner) else {
            return;
        };
        if let Some(set) = by_peer.get_mut(peer) {
            set.remove(net);
            if set.is_empty() {
                by_peer.remove(peer);
            }
        }
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
    /// Its overlay address (the member's /128).
    pub address: Ipv6Addr,
    /// Configured endpoint, if any.
    pub endpoint: Option<SocketAddr>,
    /// Composed allowed IPs (every owner's claims); [`Desired`] keeps it, change it through its owners.
    pub allowed_ips: BTreeSet<IpNet>,
    /// Persistent keepalive, seconds.
    pub keepalive: Option<u16>,
}

/// What the node should look like: the WireGuard device and the kernel state around it.
///
/// The one owner of the peers' allowed IPs (by owner), of where each VIP is routed and of the VIPs this
/// node holds (their /128s are in `addresses`). Change those through the methods, which keep the peers'
/// composed `allowed_ips` in step and return the peers that changed; the other fields are plain data.
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
    /// Allowed-IP claims by owner; `peers[k].allowed_ips` is always their union for `k`.
    allowed: AllowedIps,
    /// Each VIP routed through a peer, by that peer's key (the VIP owner's claims, by VIP).
    vip_routes: BTreeMap<Ipv6Addr, KeyBytes>,
    /// Peer keys by overlay address.
    by_address: HashMap<Ipv6Addr, KeyBytes>,
}

impl Desired {
    /// A desired state with no peers, addresses, routes or VIPs.
    pub fn new(ifname: &str, private_key: &Key, listen_port: u16, mtu: u32, overlay: Ipv6Net) -> Desired {
        Desired {
            ifname: ifname.to_owned(),
            private_key: private_key.clone(),
            listen_port,
            mtu,
            peers: BTreeMap::new(),
            addresses: BTreeSet::new(),
            owned_address_space: overlay,
            owned_addresses: BTreeSet::new(),
            routes: BTreeSet::new(),
            allowed: AllowedIps::default(),
            vip_routes: BTreeMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// The desired state for `config` with this node's `private_key`: every other member a peer whose
    /// allowed IPs are its membership claims (its /128 and routed prefixes); no VIP routed or held.
    pub fn from_config(config: &Config, private_key: &Key) -> Desired {
        let own_public = private_key.get_public();
        let overlay = config.interface.overlay_prefix;
        let mut desired = Desired::new(
            &config.interface.name,
            private_key,
            config.interface.listen_port,
            config.interface.mtu,
            overlay,
        );
        let vips: BTreeSet<Ipv6Net> = config.vips.iter().map(|v| host_net(v.address)).collect();
        // A VIP outside the overlay prefix needs its own route (the holder's local address wins over it).
        desired.routes = vips.iter().filter(|v| !overlay.contains(*v)).copied().collect();
        desired.routes.insert(overlay);
        desired.owned_addresses = vips;
        desired.addresses.insert(host_net(config.interface.address));
        let mut peers = Vec::with_capacity(config.members.len());
        for m in config.members.iter().filter(|m| m.public_key != own_public) {
            desired.routes.extend(m.routed_prefixes.iter().copied());
            let spec = PeerSpec {
                name: m.name.clone(),
                public_key: m.public_key.clone(),
                address: m.address,
                endpoint: m.endpoint,
                allowed_ips: BTreeSet::new(),
                keepalive: config.interface.persistent_keepalive,
            };
            peers.push((spec, m.prefixes().map(IpNet::V6).collect()));
        }
        desired.set_peers(peers);
        desired
    }

    /// Replaces the peers and the membership owner's claims (each peer with its claims; the given
    /// `allowed_ips` are ignored: they are composed from every owner). Returns the peers that changed.
    pub fn set_peers(&mut self, peers: Vec<(PeerSpec, BTreeSet<IpNet>)>) -> ChangedPeers {
        let mut claims = Claims::new();
        let mut next = BTreeMap::new();
        self.by_address.clear();
        for (spec, own) in peers {
            let key = spec.public_key.0;
            self.by_address.insert(spec.address, key);
            claims.insert(key, own);
            next.insert(key, spec);
        }
        self.allowed.set_owner(Owner::Membership, claims);
        for (key, spec) in &mut next {
            spec.allowed_ips = self.allowed.for_peer(key);
        }
        let old = std::mem::replace(&mut self.peers, next);
        changed_between(&old, &self.peers)
    }

    /// Takes a reloaded configuration: everything the configuration says is replaced, while the VIP
    /// owner's routes and the VIPs this node holds (those still configured) are kept. Returns the peers
    /// that changed.
    pub fn set_config(&mut self, config: &Config, private_key: &Key) -> ChangedPeers {
        let mut next = Desired::from_config(config, private_key);
        let held: Vec<Ipv6Net> = self
            .addresses
            .iter()
            .filter(|a| next.owned_addresses.contains(*a))
            .copied()
            .collect();
        next.addresses.extend(held);
        if let Some(vip) = self.allowed.owner(Owner::Vip) {
            next.allowed.set_owner(Owner::Vip, vip.clone());
        }
        next.vip_routes = std::mem::take(&mut self.vip_routes);
        for (key, spec) in &mut next.peers {
            spec.allowed_ips = next.allowed.for_peer(key);
        }
        let changed = changed_between(&self.peers, &next.peers);
        *self = next;
        changed
    }

    /// Takes a reloaded configuration as [`Desired::set_config`] does and says what a device pass must
    /// plan: the peers that changed, or `None` when the interface's own settings (private key, listen
    /// port) changed too, which only a pass over the whole device applies.
    pub fn reload(&mut self, config: &Config, private_key: &Key) -> Option<ChangedPeers> {
        let before = (self.private_key.clone(), self.listen_port);
        let changed = self.set_config(config, private_key);
        (before == (self.private_key.clone(), self.listen_port)).then_some(changed)
    }

    /// Replaces the membership owner's claims (other owners' claims stay). Returns the peers whose
    /// allowed IPs changed.
    pub fn set_membership(&mut self, claims: Claims) -> ChangedPeers {
        let old = self.allowed.owner(Owner::Membership).cloned().unwrap_or_default();
        self.allowed.set_owner(Owner::Membership, claims);
        let new = self.allowed.owner(Owner::Membership).expect("just set");
        let touched: BTreeSet<KeyBytes> = old.keys().chain(new.keys()).copied().collect();
        touched.into_iter().filter(|k| self.recompose(k)).collect()
    }

    /// What the membership owner claims, by peer.
    pub fn membership(&self) -> &Claims {
        static EMPTY: Claims = BTreeMap::new();
        self.allowed.owner(Owner::Membership).unwrap_or(&EMPTY)
    }

    /// Routes `vip` through the peer `via` (`None`: through no peer, because this node holds it or the
    /// VIP is gone). Returns the peers whose allowed IPs changed: none, or the old and the new one.
    pub fn route_vip(&mut self, vip: Ipv6Addr, via: Option<KeyBytes>) -> ChangedPeers {
        let old = match via {
            Some(key) => self.vip_routes.insert(vip, key),
            None => self.vip_routes.remove(&vip),
        };
        if old == via {
            return ChangedPeers::new();
        }
        let net = IpNet::V6(host_net(vip));
        if let Some(old) = &old {
            self.allowed.release(Owner::Vip, old, &net);
        }
        if let Some(via) = via {
            self.allowed.claim(Owner::Vip, via, net);
        }
        [old, via].into_iter().flatten().filter(|k| self.recompose(k)).collect()
    }

    /// The peer `vip` is routed through, if any.
    pub fn vip_route(&self, vip: Ipv6Addr) -> Option<KeyBytes> {
        self.vip_routes.get(&vip).copied()
    }

    /// Puts `vip` on (`true`) or takes it off this node's interface. Returns whether that changed
    /// `addresses`.
    pub fn hold_vip(&mut self, vip: Ipv6Addr, hold: bool) -> bool {
        let net = host_net(vip);
        if hold {
            self.addresses.insert(net)
        } else {
            self.addresses.remove(&net)
        }
    }

    /// Whether this node holds `vip` (its /128 belongs on the interface).
    pub fn holds(&self, vip: Ipv6Addr) -> bool {
        self.addresses.contains(&host_net(vip))
    }

    /// The key of the peer whose overlay address is `address`.
    pub fn key_of(&self, address: Ipv6Addr) -> Option<KeyBytes> {
        self.by_address.get(&address).copied()
    }

    /// Recomposes one peer's allowed IPs; whether they changed (false for a key that is not a peer).
    fn recompose(&mut self, key: &KeyBytes) -> bool {
        let Some(peer) = self.peers.get_mut(key) else {
            return false;
        };
        let ips = self.allowed.for_peer(key);
        if peer.allowed_ips == ips {
            return false;
        }
        peer.allowed_ips = ips;
        true
    }
}

/// The keys whose spec differs between `old` and `new` (added, removed or changed).
fn changed_between(old: &BTreeMap<KeyBytes, PeerSpec>, new: &BTreeMap<KeyBytes, PeerSpec>) -> ChangedPeers {
    let mut changed: ChangedPeers = old.keys().filter(|k| !new.contains_key(*k)).copied().collect();
    changed.extend(
        new.iter()
            .filter(|(k, spec)| old.get(*k) != Some(*spec))
            .map(|(k, _)| *k),
    );
    changed
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
