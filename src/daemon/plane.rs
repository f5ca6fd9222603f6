//! The daemon's data plane: the desired state, its owners, and the passes that apply it to the WireGuard
//! device and the kernel. VIP failover changes it through [`DataPlane`], one address or route at a time,
//! so a move costs one small device update and never waits for a full pass. At start, [`adopt`] reads
//! what a previous run left for each VIP.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv6Addr;
use std::time::SystemTime;

use ipnet::{IpNet, Ipv6Net};

use crate::config::{host_net, Config};
use crate::mesh::{AllowedIps, Desired, KeyBytes, Owner};
use crate::metrics::Metrics;
use crate::net::Netlink;
use crate::reconcile::{reconcile_net, DeviceReconciler, NetPass};
use crate::vip::runtime::DataPlane;
use crate::vip::Adopt;
use crate::wg;

/// The desired state and the means to apply it.
pub(super) struct Plane {
    pub(super) netlink: Netlink,
    pub(super) device: DeviceReconciler,
    pub(super) desired: Desired,
    pub(super) metrics: Metrics,
    /// The interface index after the last kernel pass that reached the interface.
    pub(super) ifindex: Option<u32>,
    /// The failures of the last kernel pass, as logged (the same ones again are not logged at error).
    net_failures: Vec<String>,
    /// Allowed-IP claims by owner; the membership owner is replaced on reload, the VIP owner on moves.
    allowed: AllowedIps,
    /// Each VIP routed through a peer, by that peer's key.
    vip_routes: BTreeMap<Ipv6Addr, KeyBytes>,
    /// VIPs this node holds (their /128 belongs on the interface).
    held: BTreeSet<Ipv6Net>,
}

impl Plane {
    /// A plane whose desired state is `desired` with membership claims `membership`, and whose VIP owner
    /// starts from `vip_routes` and `held` (what a restarted daemon adopted).
    pub(super) fn new(
        netlink: Netlink,
        device: DeviceReconciler,
        metrics: Metrics,
        (desired, membership): (Desired, BTreeMap<KeyBytes, BTreeSet<IpNet>>),
        vip_routes: BTreeMap<Ipv6Addr, KeyBytes>,
        held: BTreeSet<Ipv6Net>,
    ) -> Plane {
        let mut plane = Plane {
            netlink,
            device,
            desired,
            metrics,
            ifindex: None,
            net_failures: Vec::new(),
            allowed: AllowedIps::default(),
            vip_routes,
            held,
        };
        plane.set_desired(plane.desired.clone(), membership);
        plane
    }

    /// Replaces the desired state (after a reload), keeping the VIP owner's state.
    pub(super) fn set_desired(&mut self, mut desired: Desired, membership: BTreeMap<KeyBytes, BTreeSet<IpNet>>) {
        self.allowed.set_owner(Owner::Membership, membership);
        self.allowed.set_owner(Owner::Vip, self.vip_claims());
        desired
            .addresses
            .extend(self.held.iter().filter(|v| desired.owned_addresses.contains(*v)));
        desired.compose(&self.allowed);
        self.metrics.observe_desired(&desired);
        self.desired = desired;
    }

    fn vip_claims(&self) -> BTreeMap<KeyBytes, BTreeSet<IpNet>> {
        let mut claims: BTreeMap<KeyBytes, BTreeSet<IpNet>> = BTreeMap::new();
        for (vip, key) in &self.vip_routes {
            claims.entry(*key).or_default().insert(IpNet::V6(host_net(*vip)));
        }
        claims
    }

    /// One device pass (blocking I/O, run in place on this worker). Returns whether it succeeded.
    pub(super) fn pass_device(&mut self, full: bool) -> bool {
        let timer = self.metrics.reconcile_timer("device");
        let now = SystemTime::now();
        let (device, desired) = (&mut self.device, &self.desired);
        let result = tokio::task::block_in_place(|| {
            if full {
                device.resync(desired, now)
            } else {
                device.update(desired, now)
            }
        });
        timer.observe_duration();
        match result {
            Ok(outcome) => {
                if outcome.changed() {
                    for (kind, n) in [
                        ("peer_added", outcome.added),
                        ("peer_updated", outcome.updated),
                        ("peer_removed", outcome.removed),
                    ] {
                        self.metrics.changes_applied.with_label_values(&[kind]).inc_by(n as u64);
                    }
                    tracing::info!(
                        added = outcome.added,
                        updated = outcome.updated,
                        removed = outcome.removed,
                        interface_set = outcome.interface_set,
                        "WireGuard device changed"
                    );
                }
                true
            }
            Err(e) => {
                self.device.invalidate();
                self.metrics.reconcile_errors.with_label_values(&["wireguard"]).inc();
                tracing::error!(error = %e, "WireGuard reconcile failed; will retry");
                false
            }
        }
    }

    /// One kernel pass. Returns the interface index when the pass reached the interface (and remembers
    /// it), even if some of its items failed: those are logged (at error when they differ from the last
    /// pass's) and counted as one netlink reconcile error.
    pub(super) async fn pass_net(&mut self) -> Option<u32> {
        let timer = self.metrics.reconcile_timer("net");
        let result = reconcile_net(&self.netlink, &self.desired).await;
        timer.observe_duration();
        match result {
            Ok(NetPass { index, plan, failures }) => {
                let failures: Vec<String> = failures.iter().map(ToString::to_string).collect();
                if !failures.is_empty() {
                    self.metrics.reconcile_errors.with_label_values(&["netlink"]).inc();
                    if failures == self.net_failures {
                        tracing::debug!(?failures, "kernel pass: the same items failed again");
                    } else {
                        for f in &failures {
                            tracing::error!(failure = %f, "kernel pass: an item could not be applied; everything else was, and the next pass retries it");
                        }
                    }
                } else if !self.net_failures.is_empty() {
                    tracing::info!("kernel pass: every item applied again");
                }
                self.net_failures = failures;
                if !plan.is_empty() {
                    let counts = [
                        ("address_added", plan.add_addresses.len()),
                        ("address_removed", plan.del_addresses.len()),
                        ("route_added", plan.add_routes.len()),
                        ("route_removed", plan.del_routes.len()),
                    ];
                    for (kind, n) in counts {
                        self.metrics.changes_applied.with_label_values(&[kind]).inc_by(n as u64);
                    }
                    tracing::info!(
                        set_up = plan.set_up, mtu = ?plan.mtu,
                        add_addresses = ?plan.add_addresses, del_addresses = ?plan.del_addresses,
                        add_routes = ?plan.add_routes, del_routes = ?plan.del_routes,
                        "interface state changed"
                    );
                }
                self.ifindex = Some(index);
                Some(index)
            }
            Err(e) => {
                self.metrics.reconcile_errors.with_label_values(&["netlink"]).inc();
                tracing::error!(error = %e, "netlink reconcile failed; will retry");
                self.ifindex = None;
                None
            }
        }
    }
}

impl DataPlane for Plane {
    async fn add_address(&mut self, vip: Ipv6Addr) {
        let net = host_net(vip);
        self.held.insert(net);
        self.desired.addresses.insert(net);
        let Some(index) = self.ifindex else { return };
        match self.netlink.add_ipv6_address(index, net).await {
            Ok(_) => {
                self.metrics.changes_applied.with_label_values(&["address_added"]).inc();
                tracing::info!(%vip, "VIP address added");
            }
            Err(e) => tracing::error!(%vip, error = %e, "adding the VIP address failed; the next pass retries"),
        }
    }

    async fn remove_address(&mut self, vip: Ipv6Addr) {
        let net = host_net(vip);
        self.held.remove(&net);
        self.desired.addresses.remove(&net);
        let Some(index) = self.ifindex else { return };
        match self.netlink.del_ipv6_address(index, net).await {
            Ok(_) => {
                self.metrics
                    .changes_applied
                    .with_label_values(&["address_removed"])
                    .inc();
                tracing::info!(%vip, "VIP address removed");
            }
            Err(e) => tracing::error!(%vip, error = %e, "removing the VIP address failed; the next pass retries"),
        }
    }

    fn route(&mut self, vip: Ipv6Addr, via: Option<KeyBytes>) {
        let old = match via {
            Some(key) => self.vip_routes.insert(vip, key),
            None => self.vip_routes.remove(&vip),
        };
        if old == via {
            return;
        }
        self.allowed.set_owner(Owner::Vip, self.vip_claims());
        for key in [old, via].into_iter().flatten() {
            if let Some(peer) = self.desired.peers.get_mut(&key) {
                peer.allowed_ips = self.allowed.for_peer(&key);
            }
        }
        self.pass_device(false);
    }
}

/// What the data plane shows for each VIP at start: its address on this node's interface, or a peer the
/// device routes it to.
pub(super) async fn adopt(cfg: &Config, device: &wg::Device, netlink: &Netlink) -> BTreeMap<Ipv6Addr, Adopt> {
    let mut found = BTreeMap::new();
    if cfg.vips.is_empty() {
        return found;
    }
    let local: Vec<Ipv6Net> = match netlink.link_by_name(&cfg.interface.name).await {
        Ok(Some(link)) => netlink.ipv6_addresses(link.index).await.unwrap_or_default(),
        _ => Vec::new(),
    };
    let actual = tokio::task::block_in_place(|| device.read()).ok();
    for v in &cfg.vips {
        let net = host_net(v.address);
        let adopt = if local.contains(&net) {
            Adopt::HeldHere
        } else {
            let via = actual.as_ref().and_then(|d| {
                d.peers
                    .iter()
                    .find(|(_, p)| p.allowed_ips.contains(&IpNet::V6(net)))
                    .and_then(|(key, _)| cfg.members.iter().find(|m| m.public_key.0 == *key))
                    .map(|m| m.address)
            });
            via.map_or(Adopt::Nothing, Adopt::RoutedTo)
        };
        if adopt != Adopt::Nothing {
            tracing::info!(vip = %v.address, adopted = ?adopt, "adopted the VIP state left by the previous run");
        }
        found.insert(v.address, adopt);
    }
    found
}
