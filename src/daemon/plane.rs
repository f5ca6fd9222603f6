//! The daemon's data plane: I/O only. [`Plane`] applies the [`Desired`] state to the WireGuard device and
//! the kernel; the desired state itself (peers, allowed-IP owners, VIP routes, held VIPs) is owned by
//! [`crate::mesh::Desired`], whose methods say which peers a change touched. VIP failover changes it
//! through [`DataPlane`], one address or route at a time, so a move costs one small device update and
//! never waits for a full pass. At start, [`adopt`] reads what a previous run left for each VIP straight
//! into the desired state. This module must not keep a copy of the desired state or decide anything.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;
use std::time::{Duration, Instant, SystemTime};

use ipnet::{IpNet, Ipv6Net};
use wireguard_control::Key;

use crate::config::{host_net, Config};
use crate::mesh::{firewall, ChangedPeers, Desired, Families, Lifetime};
use crate::metrics::Metrics;
use crate::net::{forwarding, nft, Netlink};
use crate::reconcile::{reconcile_net, DeviceOutcome, DeviceReconciler, NetPass};
use crate::vip::runtime::DataPlane;
use crate::vip::Adopt;
use crate::wg::{self, WgError};

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
    /// The MTU derived from the underlay at start when the file sets none; it replaces the configured
    /// default in every configuration the plane takes.
    derived_mtu: Option<u32>,
    /// The nftables table as last applied: `Some(None)` removed, `None` not known (nothing applied yet,
    /// or the last attempt failed).
    firewall: Option<Option<String>>,
    /// The families whose forwarding this run turned on or found on.
    forwarding: Families,
    /// The last nftables error, as logged (the same one again is logged at debug, not at every resync).
    firewall_error: Option<String>,
}

impl Plane {
    /// A plane that applies `desired` (with what a restarted daemon adopted already in it).
    /// With `derived_mtu`, the MTU derived from the underlay replaces the configured one (now and on
    /// every reload).
    pub(super) fn new(
        netlink: Netlink,
        device: DeviceReconciler,
        metrics: Metrics,
        mut desired: Desired,
        derived_mtu: Option<u32>,
    ) -> Plane {
        if let Some(mtu) = derived_mtu {
            desired.mtu = mtu;
        }
        metrics.observe_desired(&desired);
        Plane {
            netlink,
            device,
            desired,
            metrics,
            ifindex: None,
            net_failures: Vec::new(),
            derived_mtu,
            firewall: None,
            forwarding: Families::default(),
            firewall_error: None,
        }
    }

    /// Takes a reloaded configuration; the desired state keeps its VIP routes and held VIPs. Returns what
    /// the next device pass must plan (see [`Desired::reload`]): the peers that changed, or `None` for
    /// the whole device.
    pub(super) fn set_config(&mut self, config: &Config, private_key: &Key) -> Option<ChangedPeers> {
        let changed = self.desired.reload(config, private_key);
        // A file that sets interface.mtu wins over the derived value (also when a reload adds it).
        if let Some(mtu) = self.derived_mtu.filter(|_| !config.interface.mtu_from_file) {
            self.desired.mtu = mtu;
        }
        self.metrics.observe_desired(&self.desired);
        changed
    }

    /// The workload pass: IP forwarding on for the families of this node's workload prefixes, and the
    /// nftables table ([`firewall::ruleset`]) applied when it changed, or on every `full` pass (so a table
    /// someone flushed or deleted comes back within a resync interval), or removed when this node has no
    /// workload prefixes. Failures are logged and counted (`reconcile_errors{kind="nftables"|"forwarding"}`),
    /// never fatal: the mesh runs on without them.
    pub(super) async fn pass_workload(&mut self, full: bool) {
        let want = self.desired.workload.forwarding();
        for (on, ipv6, done) in [
            (want.v4, false, self.forwarding.v4),
            (want.v6, true, self.forwarding.v6),
        ] {
            if !on || (done && !full) {
                continue;
            }
            let family = if ipv6 { "IPv6" } else { "IPv4" };
            match forwarding::enable(ipv6) {
                Ok(changed) => {
                    if changed {
                        tracing::info!(
                            family,
                            "turned IP forwarding on (this node routes workload prefixes); sdwand never turns it off"
                        );
                    }
                    if ipv6 {
                        self.forwarding.v6 = true;
                    } else {
                        self.forwarding.v4 = true;
                    }
                }
                Err(e) => {
                    self.metrics.reconcile_errors.with_label_values(&["forwarding"]).inc();
                    tracing::error!(family, error = %e, "cannot turn IP forwarding on: the workload prefixes behind this node are unreachable from other nodes; will retry");
                }
            }
        }
        let ruleset = firewall::ruleset(&self.desired.ifname, &self.desired.workload);
        let unchanged = self.firewall.as_ref() == Some(&ruleset);
        if unchanged && !(full && ruleset.is_some()) {
            return;
        }
        let script = match &ruleset {
            Some(r) => firewall::script(r),
            None => firewall::REMOVE.to_owned(),
        };
        let result = match nft::apply(&script).await {
            // Without nft there is no table of ours to remove: a node without workload prefixes does not
            // need nftables installed.
            Err(nft::NftError::Spawn(e)) if ruleset.is_none() && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        match result {
            Ok(()) => {
                if !unchanged {
                    match &ruleset {
                        Some(_) => tracing::info!(table = firewall::TABLE, "nftables table applied (no NAT inside the network, masquerade of pod traffic leaving it, MSS clamping into the tunnel)"),
                        None => tracing::debug!(table = firewall::TABLE, "nftables table absent (no workload prefixes on this node)"),
                    }
                }
                if self.firewall_error.take().is_some() {
                    tracing::info!(table = firewall::TABLE, "nftables table applied again");
                }
                self.firewall = Some(ruleset);
            }
            Err(e) => {
                self.metrics.reconcile_errors.with_label_values(&["nftables"]).inc();
                let error = e.to_string();
                if self.firewall_error.as_ref() == Some(&error) {
                    tracing::debug!(table = firewall::TABLE, %error, "applying the nftables table failed again");
                } else {
                    tracing::error!(table = firewall::TABLE, %error, "applying the nftables table failed; the mesh runs on without it, the next pass retries");
                }
                self.firewall_error = Some(error);
                self.firewall = None;
            }
        }
    }

    /// Removes the nftables table (teardown); a failure is logged.
    pub(super) async fn remove_firewall(&mut self) {
        match nft::apply(firewall::REMOVE).await {
            Ok(()) => {}
            // No nft, no table of ours.
            Err(nft::NftError::Spawn(e)) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::error!(table = firewall::TABLE, error = %e, "teardown: removing the nftables table failed")
            }
        }
        self.firewall = Some(None);
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
        self.device_outcome(result)
    }

    /// A device pass over only the peers `changed` (what a [`Desired`] method returned), against the
    /// snapshot. Returns whether it succeeded.
    pub(super) fn pass_peers(&mut self, changed: &ChangedPeers) -> bool {
        let timer = self.metrics.reconcile_timer("device");
        let now = SystemTime::now();
        let (device, desired) = (&mut self.device, &self.desired);
        let result = tokio::task::block_in_place(|| device.update_peers(desired, changed, now));
        timer.observe_duration();
        self.device_outcome(result)
    }

    /// Counts and logs a device pass's outcome; a failure drops the snapshot.
    fn device_outcome(&mut self, result: Result<DeviceOutcome, WgError>) -> bool {
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

    /// One kernel pass (the held floating gateway addresses included). Returns the interface index when the pass reached the interface (and remembers
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
                        ("address_added", plan.add_addresses_v4.len()),
                        ("address_removed", plan.del_addresses_v4.len()),
                        ("route_added", plan.add_routes.len()),
                        ("route_removed", plan.del_routes.len()),
                    ];
                    for (kind, n) in counts {
                        self.metrics.changes_applied.with_label_values(&[kind]).inc_by(n as u64);
                    }
                    tracing::info!(
                        set_up = plan.set_up, mtu = ?plan.mtu,
                        add_addresses = ?plan.add_addresses, del_addresses = ?plan.del_addresses,
                        add_addresses_v4 = ?plan.add_addresses_v4, del_addresses_v4 = ?plan.del_addresses_v4,
                        add_routes = ?plan.add_routes, del_routes = ?plan.del_routes,
                        "interface state changed"
                    );
                }
                self.ifindex = Some(index);
                self.pass_gateways().await;
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
        self.desired.hold_vip(vip, true);
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
        self.desired.hold_vip(vip, false);
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

    async fn address_lifetime(&mut self, vip: Ipv6Addr, lifetime: Option<Duration>) {
        let net = IpNet::V6(host_net(vip));
        self.desired.set_lifetime_end(net, lifetime.map(|l| Instant::now() + l));
        let Some(index) = self.ifindex else { return };
        if let Err(e) = self.netlink.set_address_lifetime(index, net, lifetime).await {
            tracing::error!(%vip, error = %e, "setting the VIP address's lifetime failed; the next renewal retries");
        }
    }

    async fn gateway_lifetime(&mut self, key: Ipv6Addr, lifetime: Option<Duration>) {
        let Some((gateway, ifname)) = self.desired.gateway(key).cloned() else {
            return;
        };
        self.desired
            .set_lifetime_end(gateway, lifetime.map(|l| Instant::now() + l));
        let index = match self.netlink.link_by_name(&ifname).await {
            Ok(Some(link)) => link.index,
            _ => return,
        };
        if let Err(e) = self.netlink.set_address_lifetime(index, gateway, lifetime).await {
            tracing::error!(%gateway, interface = ifname, error = %e, "setting the gateway address's lifetime failed; the next renewal retries");
        }
    }

    fn route(&mut self, vip: Ipv6Addr, via: Option<Ipv6Addr>) {
        let key = via.and_then(|a| self.desired.key_of(a));
        let changed = self.desired.route_vip(vip, key);
        if changed.is_empty() {
            return;
        }
        self.pass_peers(&changed);
    }

    async fn route_floating(&mut self, key: Ipv6Addr, prefix: IpNet, via: Option<Ipv6Addr>) {
        let peer = via.and_then(|a| self.desired.key_of(a));
        let was = self.desired.floating_routed(&prefix);
        let changed = self.desired.route_floating(key, prefix, peer);
        if !changed.is_empty() {
            self.pass_peers(&changed);
        }
        let now = self.desired.floating_routed(&prefix);
        let Some(index) = self.ifindex.filter(|_| was != now) else {
            return;
        };
        let result = if now {
            self.netlink
                .add_route(index, prefix, self.desired.route_metric(&prefix))
                .await
        } else {
            self.netlink.del_route(index, prefix).await
        };
        match result {
            Ok(_) => {
                let kind = if now { "route_added" } else { "route_removed" };
                self.metrics.changes_applied.with_label_values(&[kind]).inc();
                tracing::info!(%prefix, through_tunnel = now, "floating prefix re-routed");
            }
            Err(e) => {
                tracing::error!(%prefix, error = %e, "changing the floating prefix's route failed; the next pass retries")
            }
        }
    }

    async fn add_gateway(&mut self, key: Ipv6Addr, gateway: IpNet, ifname: &str) {
        if let Some((old, old_if)) = self.desired.hold_gateway(key, Some((gateway, ifname.to_owned()))) {
            if (old, old_if.as_str()) != (gateway, ifname) {
                self.del_gateway(old, &old_if).await;
            }
        }
        self.put_gateway(gateway, ifname, true).await;
    }

    async fn remove_gateway(&mut self, key: Ipv6Addr) {
        if let Some((net, ifname)) = self.desired.hold_gateway(key, None) {
            self.del_gateway(net, &ifname).await;
        }
    }
}

impl Plane {
    /// Puts a floating prefix's gateway address on its LAN interface; `announce`: also when it was there
    /// already, tell the LAN (a gratuitous ARP for IPv4, so the hosts' caches point at this node at once).
    /// A failure is logged; the next kernel pass retries.
    async fn put_gateway(&mut self, gateway: IpNet, ifname: &str, announce: bool) {
        let index = match self.netlink.link_by_name(ifname).await {
            Ok(Some(link)) => link.index,
            Ok(None) => {
                tracing::error!(%gateway, interface = ifname, "the floating prefix's LAN interface does not exist; the gateway address is not served");
                return;
            }
            Err(e) => {
                tracing::error!(%gateway, interface = ifname, error = %e, "cannot find the floating prefix's LAN interface");
                return;
            }
        };
        // With a kernel lifetime (quorum mode), an absent address comes back with what is left of it.
        let lifetime = match self.desired.lifetime_left(gateway, Instant::now()) {
            Lifetime::Forever => None,
            Lifetime::Left(left) => Some(left),
            Lifetime::Over => return,
        };
        match self.netlink.add_address_lasting(index, gateway, lifetime).await {
            Ok(change) => {
                if change == crate::net::Change::Applied {
                    self.metrics.changes_applied.with_label_values(&["address_added"]).inc();
                    tracing::info!(%gateway, interface = ifname, "floating gateway address added");
                } else if !announce {
                    return;
                }
                let announced = match gateway {
                    IpNet::V4(net) => crate::net::garp::announce(ifname, net.addr()),
                    IpNet::V6(net) => crate::net::ndisc::announce(ifname, net.addr()),
                };
                if let Err(e) = announced {
                    tracing::warn!(%gateway, interface = ifname, error = %e, "announcing the gateway address (gratuitous ARP, unsolicited neighbour advertisement) failed; hosts learn it when their neighbour entry expires");
                }
            }
            Err(e) => {
                tracing::error!(%gateway, interface = ifname, error = %e, "adding the floating gateway address failed; the next pass retries")
            }
        }
    }

    /// Takes a floating prefix's gateway address off its LAN interface; a failure is logged.
    async fn del_gateway(&mut self, gateway: IpNet, ifname: &str) {
        let Ok(Some(link)) = self.netlink.link_by_name(ifname).await else {
            return;
        };
        match self.netlink.del_address(link.index, gateway).await {
            Ok(_) => {
                self.metrics
                    .changes_applied
                    .with_label_values(&["address_removed"])
                    .inc();
                tracing::info!(%gateway, interface = ifname, "floating gateway address removed");
            }
            Err(e) => {
                tracing::error!(%gateway, interface = ifname, error = %e, "removing the floating gateway address failed")
            }
        }
    }

    /// Takes every floating gateway address this node still holds off its LAN (teardown: the machines'
    /// shutdown removed those they handed over already).
    pub(super) async fn remove_gateways(&mut self) {
        let held: Vec<(IpNet, String)> = self.desired.gateways().cloned().collect();
        for (gateway, ifname) in held {
            self.del_gateway(gateway, &ifname).await;
        }
    }

    /// Puts back the gateway addresses this node holds that someone removed (part of every kernel pass).
    pub(super) async fn pass_gateways(&mut self) {
        let held: Vec<(IpNet, String)> = self.desired.gateways().cloned().collect();
        for (gateway, ifname) in held {
            self.put_gateway(gateway, &ifname, false).await;
        }
    }
}

/// What the data plane shows for each VIP at start (its address on this node's interface, or a peer the
/// device routes it to) and for each floating prefix (its gateway address on its LAN interface, or a peer
/// the device routes it to), put straight into `desired` (held, or routed through that peer) and returned
/// for the machines, by key. A route kept this way stays until a claim says otherwise: dropping it would
/// cut this node off the VIP or the site until the holder's next claim reached it.
pub(super) async fn adopt(
    cfg: &Config,
    device: &wg::Device,
    netlink: &Netlink,
    desired: &mut Desired,
) -> BTreeMap<Ipv6Addr, Adopt> {
    let mut found = adopt_gateways(cfg, netlink, desired).await;
    let routed_floating: Vec<_> = cfg.floating.iter().filter(|f| !found.contains_key(&f.key())).collect();
    if cfg.vips.is_empty() && routed_floating.is_empty() {
        return found;
    }
    let actual = tokio::task::block_in_place(|| device.read()).ok();
    // The peer (key and overlay address) the device routes `net` to, if it is a member.
    let routed_to = |net: IpNet, desired: &Desired| {
        actual.as_ref().and_then(|d| {
            d.peers
                .iter()
                .find(|(_, p)| p.allowed_ips.contains(&net))
                .and_then(|(key, _)| desired.peers.get(key))
                .map(|spec| (spec.public_key.0, spec.address))
        })
    };
    if !cfg.vips.is_empty() {
        let local: Vec<Ipv6Net> = match netlink.link_by_name(&cfg.interface.name).await {
            Ok(Some(link)) => netlink.ipv6_addresses(link.index).await.unwrap_or_default(),
            _ => Vec::new(),
        };
        for v in &cfg.vips {
            let net = host_net(v.address);
            let adopt = if local.contains(&net) {
                desired.hold_vip(v.address, true);
                Adopt::HeldHere
            } else {
                match routed_to(IpNet::V6(net), desired) {
                    Some((key, address)) => {
                        desired.route_vip(v.address, Some(key));
                        Adopt::RoutedTo(address)
                    }
                    None => Adopt::Nothing,
                }
            };
            if adopt != Adopt::Nothing {
                tracing::info!(vip = %v.address, adopted = ?adopt, "adopted the VIP state left by the previous run");
            }
            found.insert(v.address, adopt);
        }
    }
    for f in routed_floating {
        if let Some((key, address)) = routed_to(f.prefix, desired) {
            desired.route_floating(f.key(), f.prefix, Some(key));
            tracing::info!(prefix = %f.prefix, via = %address, "adopted the floating prefix's route left by the previous run");
            found.insert(f.key(), Adopt::RoutedTo(address));
        }
    }
    found
}

/// The floating prefixes whose gateway address a previous run left on its LAN interface: held in
/// `desired` and returned as [`Adopt::HeldHere`] by key, so the machine either resumes serving it or takes
/// it off (a successor holds it now) instead of leaving a second gateway on the LAN.
async fn adopt_gateways(cfg: &Config, netlink: &Netlink, desired: &mut Desired) -> BTreeMap<Ipv6Addr, Adopt> {
    let mut found = BTreeMap::new();
    for f in &cfg.floating {
        let Some((gateway, ifname)) = f.gateway_net() else {
            continue;
        };
        let Ok(Some(link)) = netlink.link_by_name(ifname).await else {
            continue;
        };
        let present = match gateway {
            IpNet::V4(net) => netlink.ipv4_addresses(link.index).await.is_ok_and(|a| a.contains(&net)),
            IpNet::V6(net) => netlink.ipv6_addresses(link.index).await.is_ok_and(|a| a.contains(&net)),
        };
        if present {
            desired.hold_gateway(f.key(), Some((gateway, ifname.to_owned())));
            tracing::info!(prefix = %f.prefix, %gateway, interface = ifname, "adopted the gateway address left by the previous run");
            found.insert(f.key(), Adopt::HeldHere);
        }
    }
    found
}
