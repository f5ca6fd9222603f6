//! Diffs: desired against actual, producing the minimal change.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use wireguard_control::Key;

use super::{ActualDevice, ActualNet, ActualPeer, Desired, KeyBytes, PeerSpec, FRESH_HANDSHAKE};

/// A change to one existing peer; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerUpdate {
    /// The peer.
    pub public_key: Key,
    /// New endpoint.
    pub endpoint: Option<SocketAddr>,
    /// New allowed IPs (replace the peer's whole set, atomically per peer).
    pub allowed_ips: Option<BTreeSet<IpNet>>,
    /// New keepalive; `Some(0)` turns it off.
    pub keepalive: Option<u16>,
}

/// The minimal change to a WireGuard device. Peers are added, removed and updated one by one: the
/// plan never replaces the whole peer list, which would reset every session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct DevicePlan {
    /// Set the private key.
    pub private_key: Option<Key>,
    /// Set the listen port.
    pub listen_port: Option<u16>,
    /// Peers to add, fully specified.
    pub add: Vec<PeerSpec>,
    /// Peers to change.
    pub update: Vec<PeerUpdate>,
    /// Peers to remove.
    pub remove: Vec<Key>,
}

impl DevicePlan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.add.is_empty()
            && self.update.is_empty()
            && self.remove.is_empty()
    }

    /// Brings a cached snapshot to the state the device has after this plan was applied successfully.
    pub fn apply_to(&self, cache: &mut ActualDevice) {
        if let Some(k) = &self.private_key {
            cache.private_key = Some(k.clone());
        }
        if let Some(p) = self.listen_port {
            cache.listen_port = Some(p);
        }
        for key in &self.remove {
            cache.peers.remove(&key.0);
        }
        for spec in &self.add {
            cache.peers.insert(
                spec.public_key.0,
                ActualPeer {
                    public_key: spec.public_key.clone(),
                    endpoint: spec.endpoint,
                    allowed_ips: spec.allowed_ips.clone(),
                    keepalive: spec.keepalive,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                },
            );
        }
        for u in &self.update {
            if let Some(peer) = cache.peers.get_mut(&u.public_key.0) {
                if let Some(e) = u.endpoint {
                    peer.endpoint = Some(e);
                }
                if let Some(ips) = &u.allowed_ips {
                    peer.allowed_ips = ips.clone();
                }
                if let Some(k) = u.keepalive {
                    peer.keepalive = (k > 0).then_some(k);
                }
            }
        }
    }
}

/// Diffs the desired device against `actual` at wall-clock time `now` (handshake ages are wall-clock).
///
/// A configured endpoint replaces the device's endpoint only while the peer has no fresh handshake: a
/// peer with a live session may have roamed, and WireGuard already tracks where it is.
pub fn plan_device(desired: &Desired, actual: &ActualDevice, now: SystemTime) -> DevicePlan {
    let mut plan = DevicePlan {
        private_key: (actual.private_key.as_ref() != Some(&desired.private_key)).then(|| desired.private_key.clone()),
        listen_port: (actual.listen_port != Some(desired.listen_port)).then_some(desired.listen_port),
        ..DevicePlan::default()
    };
    // Both maps are sorted by key: walk them together (a merge join), one comparison per peer instead of a
    // lookup per peer in the other map.
    let mut actual_peers = actual.peers.iter().peekable();
    for (key, spec) in &desired.peers {
        while let Some((_, gone)) = actual_peers.next_if(|(k, _)| *k < key) {
            plan.remove.push(gone.public_key.clone());
        }
        let Some((_, have)) = actual_peers.next_if(|(k, _)| *k == key) else {
            plan.add.push(spec.clone());
            continue;
        };
        plan.update.extend(peer_update(spec, have, now));
    }
    plan.remove.extend(actual_peers.map(|(_, p)| p.public_key.clone()));
    plan
}

/// Diffs only the peers `keys` (those a [`Desired`] method said it changed) against `actual`: each is added,
/// updated or removed by the same rules as [`plan_device`], every other peer and the interface's key and
/// port are not looked at. The cost is per changed peer, not per peer on the device.
pub fn plan_peers<'a>(
    desired: &Desired,
    actual: &ActualDevice,
    keys: impl IntoIterator<Item = &'a KeyBytes>,
    now: SystemTime,
) -> DevicePlan {
    let mut plan = DevicePlan::default();
    for key in keys {
        match (desired.peers.get(key), actual.peers.get(key)) {
            (Some(spec), Some(have)) => plan.update.extend(peer_update(spec, have, now)),
            (Some(spec), None) => plan.add.push(spec.clone()),
            (None, Some(gone)) => plan.remove.push(gone.public_key.clone()),
            (None, None) => {}
        }
    }
    plan
}

/// The change that brings `have` to `spec`, if any.
fn peer_update(spec: &PeerSpec, have: &ActualPeer, now: SystemTime) -> Option<PeerUpdate> {
    let fresh = have
        .last_handshake
        .is_some_and(|t| now.duration_since(t).map_or(true, |age| age < FRESH_HANDSHAKE));
    let endpoint = spec.endpoint.filter(|e| have.endpoint != Some(*e) && !fresh);
    let allowed_ips = (have.allowed_ips != spec.allowed_ips).then(|| spec.allowed_ips.clone());
    let keepalive = (have.keepalive != spec.keepalive).then(|| spec.keepalive.unwrap_or(0));
    (endpoint.is_some() || allowed_ips.is_some() || keepalive.is_some()).then(|| PeerUpdate {
        public_key: spec.public_key.clone(),
        endpoint,
        allowed_ips,
        keepalive,
    })
}

/// The minimal change to the kernel state of the interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct NetPlan {
    /// Bring the link up.
    pub set_up: bool,
    /// Set the MTU.
    pub mtu: Option<u32>,
    /// Addresses to add (with no DAD).
    pub add_addresses: Vec<Ipv6Net>,
    /// Owned addresses to remove.
    pub del_addresses: Vec<Ipv6Net>,
    /// IPv4 addresses to add (this node's /32).
    pub add_addresses_v4: Vec<Ipv4Net>,
    /// Owned IPv4 addresses to remove.
    pub del_addresses_v4: Vec<Ipv4Net>,
    /// Routes to add.
    pub add_routes: Vec<IpNet>,
    /// Owned routes to remove.
    pub del_routes: Vec<IpNet>,
}

impl NetPlan {
    /// Whether the plan changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == NetPlan::default()
    }
}

/// Diffs the desired kernel state against `actual`. Only state sdwand owns is removed: /128s inside the
/// overlay prefix, /32s inside the IPv4 overlay prefix, configured VIPs, and routes carrying sdwand's
/// route protocol.
pub fn plan_net(desired: &Desired, actual: &ActualNet) -> NetPlan {
    NetPlan {
        set_up: !actual.up,
        mtu: (actual.mtu != desired.mtu).then_some(desired.mtu),
        add_addresses: desired.addresses.difference(&actual.addresses).copied().collect(),
        del_addresses: actual
            .addresses
            .iter()
            .filter(|a| {
                let owned = (a.prefix_len() == 128 && desired.owned_address_space.contains(*a))
                    || desired.owned_addresses.contains(a);
                owned && !desired.addresses.contains(a)
            })
            .copied()
            .collect(),
        add_addresses_v4: desired
            .address_v4
            .filter(|a| !actual.addresses_v4.contains(a))
            .into_iter()
            .collect(),
        del_addresses_v4: actual
            .addresses_v4
            .iter()
            .filter(|a| {
                let owned = a.prefix_len() == 32 && desired.owned_address_space_v4.is_some_and(|o| o.contains(*a));
                owned && desired.address_v4 != Some(**a)
            })
            .copied()
            .collect(),
        add_routes: desired.routes.difference(&actual.owned_routes).copied().collect(),
        del_routes: actual.owned_routes.difference(&desired.routes).copied().collect(),
    }
}
