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
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use wireguard_control::Key;

use crate::config::{host_net, Config};
use crate::vocab::{PrefixKind, RoutedPrefix};

pub mod firewall;
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
    /// VIP failover: each VIP's /128, and each floating prefix, on the peer that holds it.
    Vip,
    /// Workload prefixes: each member's /32 and its pod and site prefixes, IPv4 and IPv6.
    Workload,
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

/// The kernel lifetime an address gets when a pass puts it back ([`Desired::lifetime_left`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// None: the address stays until removed.
    Forever,
    /// This much, in whole seconds.
    Left(Duration),
    /// Its lifetime ran out (less than a second is left): it must not come back until renewed.
    Over,
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
    /// This node's /32 in the network's IPv4 overlay prefix, on the interface.
    pub address_v4: Option<Ipv4Net>,
    /// IPv4 addresses sdwand owns on the interface: /32s inside this prefix (the IPv4 overlay prefix).
    /// Those other than `address_v4` are removed; anything else is left alone.
    pub owned_address_space_v4: Option<Ipv4Net>,
    /// Routes through the interface, IPv6 and IPv4 (overlay prefixes, VIPs outside the overlay, routed
    /// and workload prefixes of the peers).
    pub routes: BTreeSet<IpNet>,
    /// What this node forwards and masquerades for its workload prefixes (plain data, from the
    /// configuration).
    pub workload: Workload,
    /// Allowed-IP claims by owner; `peers[k].allowed_ips` is always their union for `k`.
    allowed: AllowedIps,
    /// Each VIP or floating prefix routed through a peer, by its failover key: the prefix (a VIP's /128)
    /// and the peer's key (the VIP owner's claims, by key).
    vip_routes: BTreeMap<Ipv6Addr, (IpNet, KeyBytes)>,
    /// The floating prefixes routed through a peer: in `routes` too, installed with
    /// [`FLOATING_ROUTE_METRIC`] so a candidate's connected route to its own LAN wins over them.
    floating_routes: BTreeSet<IpNet>,
    /// The gateway addresses of the floating prefixes this node holds, by failover key: the address
    /// with the prefix's length and the LAN interface it goes on.
    gateways: BTreeMap<Ipv6Addr, (IpNet, String)>,
    /// When the kernel lifetime of each held address that has one runs out (quorum mode: a VIP's /128 or
    /// a gateway address, given at every renewal): an address put back by a pass gets only what is left,
    /// and is not put back once it ran out ([`Desired::lifetime_left`]).
    lifetime_ends: BTreeMap<IpNet, Instant>,
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
            address_v4: None,
            owned_address_space_v4: None,
            routes: BTreeSet::new(),
            workload: Workload::default(),
            allowed: AllowedIps::default(),
            vip_routes: BTreeMap::new(),
            floating_routes: BTreeSet::new(),
            gateways: BTreeMap::new(),
            lifetime_ends: BTreeMap::new(),
            by_address: HashMap::new(),
        }
    }

    /// The desired state for `config` with this node's `private_key`: every other member a peer whose
    /// allowed IPs are its membership claims (its /128 and routed prefixes) and its workload claims (its
    /// /32, pod and site prefixes), each of those prefixes routed through the interface; this node's /32
    /// on the interface and the IPv4 overlay prefix routed; no VIP routed or held.
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
        desired.routes = vips
            .iter()
            .filter(|v| !overlay.contains(*v))
            .map(|v| IpNet::V6(*v))
            .collect();
        desired.routes.insert(IpNet::V6(overlay));
        desired.owned_addresses = vips;
        desired.addresses.insert(host_net(config.interface.address));
        let overlay_v4 = config.prefixes.overlay_prefix_v4;
        desired.owned_address_space_v4 = overlay_v4;
        desired.routes.extend(overlay_v4.map(IpNet::V4));
        desired.workload = Workload::from_config(config, &own_public);
        let mut peers = Vec::with_capacity(config.members.len());
        let mut workload = Claims::new();
        for m in &config.members {
            if m.public_key == own_public {
                desired.address_v4 = m.address_v4.map(host_net_v4);
                continue;
            }
            desired.routes.extend(m.routed_prefixes.iter().map(|p| IpNet::V6(*p)));
            let slash32 = m.address_v4.map(|a| IpNet::V4(host_net_v4(a)));
            let claims: BTreeSet<IpNet> = slash32.into_iter().chain(m.workload.iter().map(|p| p.prefix)).collect();
            // A /32 outside the IPv4 overlay prefix (none after the view's checks) gets its own route.
            let uncovered = |net: &&IpNet| match (net, overlay_v4) {
                (IpNet::V4(n), Some(o)) => !o.contains(n),
                _ => true,
            };
            desired.routes.extend(claims.iter().filter(uncovered).copied());
            if !claims.is_empty() {
                workload.insert(m.public_key.0, claims);
            }
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
        desired.allowed.set_owner(Owner::Workload, workload);
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
        next.floating_routes = std::mem::take(&mut self.floating_routes);
        next.routes.extend(next.floating_routes.iter().copied());
        next.gateways = std::mem::take(&mut self.gateways);
        next.lifetime_ends = std::mem::take(&mut self.lifetime_ends);
        let held: BTreeSet<IpNet> = next
            .addresses
            .iter()
            .map(|a| IpNet::V6(*a))
            .chain(next.gateways.values().map(|(g, _)| *g))
            .collect();
        next.lifetime_ends.retain(|a, _| held.contains(a));
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

    /// What the workload owner claims, by peer (each peer's /32, pod and site prefixes).
    pub fn workload_claims(&self) -> &Claims {
        static EMPTY: Claims = BTreeMap::new();
        self.allowed.owner(Owner::Workload).unwrap_or(&EMPTY)
    }

    /// What the membership owner claims, by peer.
    pub fn membership(&self) -> &Claims {
        static EMPTY: Claims = BTreeMap::new();
        self.allowed.owner(Owner::Membership).unwrap_or(&EMPTY)
    }

    /// Routes `vip` through the peer `via` (`None`: through no peer, because this node holds it or the
    /// VIP is gone). Returns the peers whose allowed IPs changed: none, or the old and the new one.
    pub fn route_vip(&mut self, vip: Ipv6Addr, via: Option<KeyBytes>) -> ChangedPeers {
        self.route_key(vip, IpNet::V6(host_net(vip)), via)
    }

    /// Routes the floating prefix `net` (failover key `key`) through the peer `via`, in its allowed IPs
    /// and with a kernel route through the interface; `None` routes it through no peer and removes the
    /// kernel route (this node holds it and delivers locally, or the prefix is gone). Returns the peers
    /// whose allowed IPs changed; whether the kernel route changed is [`Desired::floating_routed`].
    pub fn route_floating(&mut self, key: Ipv6Addr, net: IpNet, via: Option<KeyBytes>) -> ChangedPeers {
        match via {
            Some(_) => {
                self.floating_routes.insert(net);
                self.routes.insert(net);
            }
            None => {
                self.floating_routes.remove(&net);
                self.routes.remove(&net);
            }
        }
        self.route_key(key, net, via)
    }

    /// Whether the floating prefix `net` has its kernel route through the interface.
    pub fn floating_routed(&self, net: &IpNet) -> bool {
        self.floating_routes.contains(net)
    }

    /// The metric of `route` when sdwand installs it: [`FLOATING_ROUTE_METRIC`] for a floating prefix,
    /// the kernel's default otherwise.
    pub fn route_metric(&self, route: &IpNet) -> Option<u32> {
        self.floating_routes.contains(route).then_some(FLOATING_ROUTE_METRIC)
    }

    fn route_key(&mut self, key: Ipv6Addr, net: IpNet, via: Option<KeyBytes>) -> ChangedPeers {
        let old = match via {
            Some(peer) => self.vip_routes.insert(key, (net, peer)),
            None => self.vip_routes.remove(&key),
        };
        if old.map(|(_, k)| k) == via && old.is_none_or(|(n, _)| n == net) {
            return ChangedPeers::new();
        }
        if let Some((old_net, old_peer)) = &old {
            self.allowed.release(Owner::Vip, old_peer, old_net);
        }
        if let Some(via) = via {
            self.allowed.claim(Owner::Vip, via, net);
        }
        [old.map(|(_, k)| k), via]
            .into_iter()
            .flatten()
            .filter(|k| self.recompose(k))
            .collect()
    }

    /// The peer `vip` (or a floating prefix's key) is routed through, if any.
    pub fn vip_route(&self, vip: Ipv6Addr) -> Option<KeyBytes> {
        self.vip_routes.get(&vip).map(|(_, k)| *k)
    }

    /// Records that this node holds the floating prefix with failover key `key` and puts its gateway
    /// address `gateway` on the LAN interface `ifname` (`None`: it does not, or no longer). Returns the
    /// gateway it replaced, if any.
    pub fn hold_gateway(&mut self, key: Ipv6Addr, gateway: Option<(IpNet, String)>) -> Option<(IpNet, String)> {
        let replaced = match gateway {
            Some(g) => self.gateways.insert(key, g),
            None => self.gateways.remove(&key),
        };
        if let Some((old, _)) = &replaced {
            self.lifetime_ends.remove(old);
        }
        replaced
    }

    /// The gateway address, with its LAN interface, of the floating prefix with key `key`, if this node
    /// holds it.
    pub fn gateway(&self, key: Ipv6Addr) -> Option<&(IpNet, String)> {
        self.gateways.get(&key)
    }

    /// The gateway addresses this node holds, with their LAN interfaces.
    pub fn gateways(&self) -> impl Iterator<Item = &(IpNet, String)> + '_ {
        self.gateways.values()
    }

    /// Puts `vip` on (`true`) or takes it off this node's interface. Returns whether that changed
    /// `addresses`.
    pub fn hold_vip(&mut self, vip: Ipv6Addr, hold: bool) -> bool {
        let net = host_net(vip);
        if hold {
            self.addresses.insert(net)
        } else {
            self.lifetime_ends.remove(&IpNet::V6(net));
            self.addresses.remove(&net)
        }
    }

    /// Records when the kernel lifetime just given to the held address `address` runs out (`None`: it
    /// has none, it stays until removed).
    pub fn set_lifetime_end(&mut self, address: IpNet, end: Option<Instant>) {
        match end {
            Some(end) => self.lifetime_ends.insert(address, end),
            None => self.lifetime_ends.remove(&address),
        };
    }

    /// What a pass that puts `address` back on its interface at `now` gives it: [`Lifetime::Left`] is
    /// the rest of the lifetime its last renewal gave it, in whole seconds rounded down (the kernel's
    /// unit: never past that renewal's end).
    pub fn lifetime_left(&self, address: IpNet, now: Instant) -> Lifetime {
        match self.lifetime_ends.get(&address) {
            None => Lifetime::Forever,
            Some(end) => match end.saturating_duration_since(now).as_secs() {
                0 => Lifetime::Over,
                secs => Lifetime::Left(Duration::from_secs(secs)),
            },
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

/// The metric of a floating prefix's route through the interface: above a connected route's (0 for
/// IPv4, 256 for IPv6), so a candidate whose LAN is the prefix keeps reaching it directly while routing it
/// to the holder for everything the tunnel delivers; at the IPv6 default for static routes.
pub const FLOATING_ROUTE_METRIC: u32 = 1024;

/// WireGuard's overhead over an IPv6 underlay: IPv6 header 40, UDP 8, WireGuard header 16, tag 16.
pub const WG_OVERHEAD_V6: u32 = 80;
/// WireGuard's overhead over an IPv4 underlay: IPv4 header 20, then as over IPv6.
pub const WG_OVERHEAD_V4: u32 = 60;
/// The smallest interface MTU: IPv6's minimum link MTU (the overlay carries IPv6).
pub const MIN_MTU: u32 = 1280;

/// The interface MTU over an underlay path of MTU `underlay` whose outer family is IPv6 (`outer_v6`) or
/// IPv4: `underlay` less WireGuard's overhead, at least [`MIN_MTU`] (below that the underlay fragments).
pub fn tunnel_mtu(underlay: u32, outer_v6: bool) -> u32 {
    let overhead = if outer_v6 { WG_OVERHEAD_V6 } else { WG_OVERHEAD_V4 };
    underlay.saturating_sub(overhead).max(MIN_MTU)
}

/// `addr/32`.
pub fn host_net_v4(addr: Ipv4Addr) -> Ipv4Net {
    Ipv4Net::new(addr, 32).expect("32 is a valid IPv4 prefix length")
}

/// The address families a node forwards for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Families {
    /// IPv4 (`net.ipv4.ip_forward`).
    pub v4: bool,
    /// IPv6 (`net.ipv6.conf.all.forwarding`).
    pub v6: bool,
}

/// This node's workload routing: the prefixes behind it (its pods and sites), and the destinations its
/// pods reach without masquerade. What [`firewall::ruleset`] and the forwarding switches are made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    /// This node's own workload prefixes (pod shares and site prefixes behind it), as the registry gives them.
    pub own: Vec<RoutedPrefix>,
    /// Destinations inside the network: its pod pools, its overlay prefixes (IPv6 and IPv4), every
    /// member's workload prefixes and the floating prefixes. Traffic from this node's pods to them is never
    /// masqueraded.
    pub internal: BTreeSet<IpNet>,
    /// The floating prefixes this node is a candidate of: it forwards for them whenever it holds one.
    pub floating: Vec<IpNet>,
}

impl Workload {
    /// This node's part of `config`: its own prefixes (the member carrying `own_public`) and the network's
    /// internal destinations.
    pub fn from_config(config: &Config, own_public: &Key) -> Workload {
        let own = config
            .members
            .iter()
            .find(|m| m.public_key == *own_public)
            .map(|m| m.workload.clone())
            .unwrap_or_default();
        let mut internal: BTreeSet<IpNet> = config.prefixes.pod_pools.iter().map(|p| p.prefix).collect();
        internal.insert(IpNet::V6(config.interface.overlay_prefix));
        internal.extend(config.prefixes.overlay_prefix_v4.map(IpNet::V4));
        internal.extend(config.members.iter().flat_map(|m| m.workload.iter().map(|p| p.prefix)));
        internal.extend(config.floating.iter().map(|f| f.prefix));
        let name = config
            .members
            .iter()
            .find(|m| m.public_key == *own_public)
            .map(|m| &m.name);
        let floating = config
            .floating
            .iter()
            .filter(|f| name.is_some_and(|n| f.candidates.contains(n)))
            .map(|f| f.prefix)
            .collect();
        Workload {
            own,
            internal,
            floating,
        }
    }

    /// The families this node forwards for: those of its own workload prefixes and of the floating
    /// prefixes it is a candidate of (nothing without any).
    pub fn forwarding(&self) -> Families {
        let prefixes = || self.own.iter().map(|p| p.prefix).chain(self.floating.iter().copied());
        Families {
            v4: prefixes().any(|p| matches!(p, IpNet::V4(_))),
            v6: prefixes().any(|p| matches!(p, IpNet::V6(_))),
        }
    }

    /// This node's pod prefixes (masqueraded when they leave the network through the underlay).
    pub fn own_pods(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.own.iter().filter(|p| p.kind == PrefixKind::Pod).map(|p| p.prefix)
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
    /// Global IPv4 addresses on the interface.
    pub addresses_v4: BTreeSet<Ipv4Net>,
    /// Routes through the interface that sdwand installed (marked with its route protocol), both families.
    pub owned_routes: BTreeSet<IpNet>,
}
