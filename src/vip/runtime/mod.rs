//! The failover runtime: drives one [`Machine`] per configured VIP and per floating prefix from a UDP
//! socket, timers and health checks, and hands the data-plane effects (address, allowed-IP route) to the
//! daemon through [`DataPlane`], in the order the machines asked for them (a peer acknowledges a claim
//! only after it has re-routed the VIP).
//!
//! A floating prefix is a VIP to the machines: its machine is keyed by [`crate::vocab::floating_key`]
//! (one key space with the VIPs, which never overlap a floating prefix). Only the effects differ
//! ([`Kind`]): `Route(peer)` routes the whole prefix through that peer (allowed IPs and a kernel route),
//! `Route(me)` routes it through no peer (the holder delivers it on its LAN), and the address actions put
//! the prefix's gateway address on its LAN interface when one is configured (and its kernel lifetime in
//! quorum mode). Metrics and logs label a
//! floating prefix with the prefix itself (`vip="203.0.113.0/24"`).
//!
//! The socket ([`crate::net::failover`]) is bound to this node's overlay /128 and receives only what
//! arrived through the WireGuard interface (not what a local process loops back); WireGuard's cryptokey
//! routing has then authenticated the source address. A datagram is accepted only when its source port
//! is the failover port (so it came from a member's sdwand, not from any process on that member: the
//! port is privileged by default), its source is not this node, and that source is the sender it names.
//!
//! The machines are told whether the socket is bound ([`LocalEvent::Transport`]): a node that cannot
//! hear the others must not claim. The runtime logs the socket's state once per change and publishes it
//! (`sdwand_vip_socket_bound`, [`VipRuntime::transport`]). This module decides nothing about the protocol.
//!
//! Layout: this file is the driver ([`VipRuntime`]: machines, inputs, health tasks, reload and `flush`,
//! which executes the machines' actions); `socket.rs` binds the socket, keeps its state and checks each
//! received datagram; `observe.rs` turns notes into metrics and rate-limited log lines;
//! `incarnation.rs` hands out incarnations and keeps the last one in the state directory.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use ipnet::IpNet;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::health;
use super::wire::MAX_DATAGRAM;
use super::{Action, Adopt, LocalEvent, Machine, MoveError, Params, Quorum, VipStatus};
use crate::config::{Config, FloatingConfig, HealthConfig};
use crate::metrics::{VipGauges, VipMetrics};

mod incarnation;
mod observe;
mod socket;
#[cfg(test)]
mod tests;

pub(crate) use incarnation::Incarnations;
use observe::{observe, LogLimit};

/// The data-plane effects of the machines, implemented by the daemon.
pub(crate) trait DataPlane {
    /// Puts the VIP /128 on the interface.
    async fn add_address(&mut self, vip: Ipv6Addr);
    /// Takes the VIP /128 off the interface.
    async fn remove_address(&mut self, vip: Ipv6Addr);
    /// Gives the VIP /128 this kernel lifetime from now (`None`: forever; see [`Action::AddressLifetime`]).
    async fn address_lifetime(&mut self, vip: Ipv6Addr, lifetime: Option<Duration>);
    /// Routes the VIP through the member with this overlay address; `None` routes it through no peer (this
    /// node holds it, or the VIP is gone). The data plane finds the member's key in its desired state.
    fn route(&mut self, vip: Ipv6Addr, via: Option<Ipv6Addr>);
    /// Routes the floating prefix `prefix` (failover key `key`) through the member with this overlay
    /// address, in its allowed IPs and with a kernel route through the interface; `None` through no peer
    /// and no kernel route (this node holds it, or the prefix is gone).
    async fn route_floating(&mut self, key: Ipv6Addr, prefix: IpNet, via: Option<Ipv6Addr>);
    /// Puts the gateway address `gateway` (with its prefix's length) of the floating prefix with key
    /// `key` on the LAN interface `ifname`, and announces it on that LAN.
    async fn add_gateway(&mut self, key: Ipv6Addr, gateway: IpNet, ifname: &str);
    /// Takes the gateway address of the floating prefix with key `key` off its LAN interface, if this
    /// node put one there.
    async fn remove_gateway(&mut self, key: Ipv6Addr);
    /// Gives the gateway address of the floating prefix with key `key`, if this node put one on its LAN,
    /// this kernel lifetime from now (`None`: forever).
    async fn gateway_lifetime(&mut self, key: Ipv6Addr, lifetime: Option<Duration>);
}

/// What a slot's machine moves: a VIP, or a floating prefix with its optional gateway address.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A VIP: its /128 on the WireGuard interface, routed as a /128.
    Vip,
    /// A floating prefix, routed whole; the holder puts `gateway` (address with the prefix's length,
    /// LAN interface) on its LAN when configured.
    Floating {
        prefix: IpNet,
        gateway: Option<(IpNet, String)>,
    },
}

impl Kind {
    /// The kind of a configured floating prefix.
    fn floating(f: &FloatingConfig) -> Kind {
        Kind::Floating {
            prefix: f.prefix,
            gateway: f.gateway_net().map(|(net, ifname)| (net, ifname.to_owned())),
        }
    }

    /// The metrics and log label of the slot with key `key`: the VIP's address, or the prefix.
    fn label(&self, key: Ipv6Addr) -> String {
        match self {
            Kind::Vip => key.to_string(),
            Kind::Floating { prefix, .. } => prefix.to_string(),
        }
    }
}

/// The effect of one address or route action of the machine with key `key` and kind `kind`.
async fn apply<P: DataPlane>(plane: &mut P, key: Ipv6Addr, kind: &Kind, action: &Action, me: Ipv6Addr) {
    match (action, kind) {
        (Action::AddAddress, Kind::Vip) => plane.add_address(key).await,
        (Action::RemoveAddress, Kind::Vip) => plane.remove_address(key).await,
        (Action::AddressLifetime(l), Kind::Vip) => plane.address_lifetime(key, *l).await,
        (Action::AddressLifetime(l), Kind::Floating { .. }) => plane.gateway_lifetime(key, *l).await,
        (Action::Route(to), Kind::Vip) => plane.route(key, (*to != me).then_some(*to)),
        (
            Action::AddAddress,
            Kind::Floating {
                gateway: Some((net, ifname)),
                ..
            },
        ) => plane.add_gateway(key, *net, ifname).await,
        (Action::RemoveAddress, Kind::Floating { .. }) => plane.remove_gateway(key).await,
        (Action::Route(to), Kind::Floating { prefix, .. }) => {
            plane.route_floating(key, *prefix, (*to != me).then_some(*to)).await;
        }
        _ => {}
    }
}

/// Takes everything of the slot with key `key` off the data plane (its machine is gone).
async fn remove<P: DataPlane>(plane: &mut P, key: Ipv6Addr, kind: &Kind, held: bool) {
    match kind {
        Kind::Vip => {
            if held {
                plane.remove_address(key).await;
            }
            plane.route(key, None);
        }
        Kind::Floating { prefix, .. } => {
            plane.remove_gateway(key).await;
            plane.route_floating(key, *prefix, None).await;
        }
    }
}

/// One input for the machines.
pub(crate) enum Input {
    /// A datagram of `len` bytes in the receive buffer.
    Datagram { len: usize, from: SocketAddr },
    /// The earliest machine deadline passed.
    Timer,
    /// A health check changed state.
    Health {
        vip: Ipv6Addr,
        generation: u64,
        healthy: bool,
    },
    /// The socket failed; it is rebound on the next network pass.
    SocketError(io::Error),
}

/// One VIP: its machine and what the runtime keeps beside it. Created by `insert_slot` (at start and for
/// a VIP a reload adds), removed by `reload` when the VIP leaves the configuration.
/// What the configuration asks for, by key: the kind, the candidates, the witnesses in quorum mode and the
/// health check.
type Wanted<'a> = BTreeMap<Ipv6Addr, (Kind, &'a [String], Option<&'a [String]>, Option<&'a HealthConfig>)>;

struct Slot {
    /// The VIP's machine; `machine.params().vip` is the slot's key in [`VipRuntime::slots`].
    machine: Machine,
    /// What the machine moves (a floating prefix's gateway may change on reload).
    kind: Kind,
    /// The VIP as a metrics and log label (its address, or the floating prefix; fixed for the slot's life).
    label: String,
    /// The holder's name as last published in the holder gauge (`flush` moves it), so the old series
    /// can be cleared when the holder changes or the VIP goes.
    holder_label: Option<String>,
    /// The VIP's health check, when one is configured; `reload` replaces it when its configuration
    /// changes. A health input counts only when it carries this task's generation.
    health: Option<HealthTask>,
    /// The machine returned [`Action::Stopped`] (set by `flush`, never cleared): its shutdown is done.
    stopped: bool,
    /// An input reached the machine since its gauges were last published (set by every input, cleared
    /// by `flush` once it has published them).
    dirty: bool,
}

/// A running health check and the task that forwards its changes.
struct HealthTask {
    /// The configuration it runs (compared on reload).
    config: HealthConfig,
    /// Taken from [`VipRuntime::next_generation`] when spawned: unique per task, so a change a replaced
    /// task had already queued is recognised and dropped.
    generation: u64,
    /// The checker and the forwarder; both are aborted when the task is dropped.
    tasks: [JoinHandle<()>; 2],
}

impl Drop for HealthTask {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The failover runtime of one node.
///
/// Invariants (the socket's fields change only in `socket.rs`: `ensure_bound`, `unbind`, `set_transport`):
/// `socket.is_some() == bound_ifindex.is_some() == transport`, every machine was last told
/// [`LocalEvent::Transport`]`(transport)`, and `unbound_reason` is `None` while the socket is bound.
pub(crate) struct VipRuntime {
    /// This node's overlay address (fixed: a change of `interface.address` needs a restart).
    me: Ipv6Addr,
    /// The failover port, the socket's and every peer's (fixed for the runtime's life).
    port: u16,
    /// The WireGuard interface the socket is bound to (fixed for the runtime's life).
    ifname: String,
    /// Every new machine takes a fresh incarnation, greater than any an earlier run of this node used.
    incarnations: Incarnations,
    /// The failover socket, when bound.
    socket: Option<UdpSocket>,
    /// The interface index the socket is bound to (`Some` exactly while `socket` is): a new index (the
    /// interface was recreated) makes `ensure_bound` bind again.
    bound_ifindex: Option<u32>,
    /// What the machines were last told about the socket ([`LocalEvent::Transport`]); a new machine is
    /// told it at start.
    transport: bool,
    /// Why the socket is not bound, as last logged (a repeat of the same reason is not logged again);
    /// `None` while bound and before the first attempt.
    unbound_reason: Option<String>,
    /// Member names by address (logs, metrics, status); replaced on every reload.
    members: HashMap<Ipv6Addr, String>,
    /// Member addresses by name (operator moves name their target): always the inverse of `members`.
    by_name: HashMap<String, Ipv6Addr>,
    /// One slot per configured VIP, by VIP address (each slot's machine is for that VIP).
    slots: BTreeMap<Ipv6Addr, Slot>,
    /// Given to each health task's forwarder: `(vip, generation, healthy)`.
    health_tx: mpsc::Sender<(Ipv6Addr, u64, bool)>,
    /// Health changes for `next_input`; those of a replaced task (an older generation) are dropped.
    health_rx: mpsc::Receiver<(Ipv6Addr, u64, bool)>,
    /// The last generation handed to a health task (only grows), so generations are never reused.
    next_generation: u64,
    /// The failover metrics.
    metrics: VipMetrics,
    /// Rate limits of the notes' log lines, by VIP label (a removed VIP's are forgotten).
    log_limit: LogLimit,
    /// The receive buffer: one byte longer than the largest valid datagram, so a longer one is seen
    /// as too long rather than silently truncated.
    buf: Vec<u8>,
}

impl VipRuntime {
    /// A runtime for the VIPs and floating prefixes of `config`, its socket not bound yet. `adopt` tells
    /// what the data plane shows for each, by key (a restarted daemon finds the address, gateway address or
    /// route it left).
    pub(crate) fn new(
        config: &Config,
        incarnations: Incarnations,
        adopt: impl Fn(Ipv6Addr) -> Adopt,
        metrics: VipMetrics,
    ) -> VipRuntime {
        let (health_tx, health_rx) = mpsc::channel(64);
        let (members, by_name) = members_of(config);
        metrics.set_socket_bound(false);
        let mut rt = VipRuntime {
            me: config.interface.address,
            port: config.failover.port,
            ifname: config.interface.name.clone(),
            incarnations,
            socket: None,
            bound_ifindex: None,
            transport: false,
            unbound_reason: None,
            members,
            by_name,
            slots: BTreeMap::new(),
            health_tx,
            health_rx,
            next_generation: 0,
            metrics,
            log_limit: LogLimit::default(),
            buf: vec![0; MAX_DATAGRAM + 1],
        };
        let now = Instant::now();
        for v in &config.vips {
            let params = rt.params(config, v.address, &v.candidates, v.quorum.as_deref());
            rt.start_machine(params, Kind::Vip, now, v.health.clone(), adopt(v.address));
        }
        for f in &config.floating {
            let params = rt.params(config, f.key(), &f.candidates, f.quorum.as_deref());
            rt.start_machine(params, Kind::floating(f), now, f.health.clone(), adopt(f.key()));
        }
        rt
    }

    /// Starts the machine of one VIP with a fresh incarnation and tells it the socket's state.
    ///
    /// Its health starts as [`starts_healthy`] says, and so does its health check's debounced state (so
    /// `fall` failures in a row make an assumed-healthy node unhealthy, as for any healthy one).
    fn start_machine(&mut self, params: Params, kind: Kind, now: Instant, health: Option<HealthConfig>, adopt: Adopt) {
        let candidate = params.candidates.contains(&params.me);
        let healthy = starts_healthy(health.is_some(), candidate, adopt);
        if health.is_some() && healthy {
            tracing::info!(vip = %params.vip, "adopted the VIP address: its health check is assumed to pass until it fails `fall` times in a row");
        }
        let mut machine = Machine::new(params, now, self.incarnations.next(), healthy, adopt);
        machine.handle_local(now, LocalEvent::Transport(self.transport));
        self.insert_slot(machine, kind, health, healthy);
    }

    /// The parameters of the machine for `key` (a VIP, or a floating prefix's key): `candidates` and, in
    /// quorum mode, `witnesses` are member names.
    fn params(&self, config: &Config, key: Ipv6Addr, candidates: &[String], witnesses: Option<&[String]>) -> Params {
        let addresses = |names: &[String]| names.iter().filter_map(|n| config.member_address(n)).collect();
        Params {
            vip: key,
            me: self.me,
            candidates: addresses(candidates),
            peers: config
                .members
                .iter()
                .map(|m| m.address)
                .filter(|a| *a != self.me)
                .collect(),
            timers: config.failover.timers(),
            quorum: witnesses.map(|w| Quorum {
                witnesses: addresses(w),
            }),
        }
    }

    fn insert_slot(&mut self, machine: Machine, kind: Kind, health: Option<HealthConfig>, healthy: bool) {
        let vip = machine.params().vip;
        let label = kind.label(vip);
        if warns_single_candidate(machine.params()) {
            tracing::warn!(vip = %label, "VIP has a single candidate, this node: it cannot fail over (add a second candidate)");
        }
        let mut slot = Slot {
            machine,
            kind,
            label,
            holder_label: None,
            health: None,
            stopped: false,
            dirty: true,
        };
        slot.health = health.map(|cfg| self.spawn_health(vip, cfg, healthy));
        self.slots.insert(vip, slot);
    }

    /// Starts `config`'s check for `vip` in the debounced state `healthy` (see [`health::spawn`]).
    fn spawn_health(&mut self, vip: Ipv6Addr, config: HealthConfig, healthy: bool) -> HealthTask {
        self.next_generation += 1;
        let generation = self.next_generation;
        let (mut rx, checker) = health::spawn(config.clone(), healthy);
        let tx = self.health_tx.clone();
        let forward = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let healthy = *rx.borrow_and_update();
                if tx.send((vip, generation, healthy)).await.is_err() {
                    break;
                }
            }
        });
        HealthTask {
            config,
            generation,
            tasks: [checker, forward],
        }
    }

    /// Waits for the next input. Cancel-safe.
    pub(crate) async fn next_input(&mut self) -> Input {
        let wake = self.slots.values().filter_map(|s| s.machine.poll_timeout()).min();
        let sleep = async {
            match wake {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        let recv = async {
            match &self.socket {
                Some(s) => s.recv_from(&mut self.buf).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = recv => match r {
                Ok((len, from)) => Input::Datagram { len, from },
                Err(e) => Input::SocketError(e),
            },
            _ = sleep => Input::Timer,
            Some((vip, generation, healthy)) = self.health_rx.recv() => Input::Health { vip, generation, healthy },
        }
    }

    /// Feeds one input to the machines.
    pub(crate) fn handle(&mut self, input: Input, now: Instant) {
        match input {
            Input::Datagram { len, from } => self.on_datagram(len, from, now),
            Input::Timer => {
                for s in self.slots.values_mut() {
                    if s.machine.poll_timeout().is_some_and(|t| t <= now) {
                        s.machine.handle_timeout(now);
                        s.dirty = true;
                    }
                }
            }
            Input::Health {
                vip,
                generation,
                healthy,
            } => {
                if let Some(s) = self.slots.get_mut(&vip) {
                    if s.health.as_ref().is_some_and(|h| h.generation == generation) {
                        tracing::info!(vip = %s.label, healthy, "VIP health changed");
                        s.machine.handle_local(now, LocalEvent::Health(healthy));
                        s.dirty = true;
                    }
                }
            }
            Input::SocketError(e) => self.unbind(now, format!("receiving failed: {e}")),
        }
    }

    /// Executes every pending action of every machine, in order, and publishes the gauges of the
    /// machines an input reached (only those: a datagram for one VIP costs nothing for the others).
    pub(crate) async fn flush<P: DataPlane>(&mut self, plane: &mut P) {
        let VipRuntime {
            me,
            port,
            socket,
            members,
            slots,
            metrics,
            log_limit,
            ..
        } = self;
        let name_of = |a: Ipv6Addr| members.get(&a).map_or_else(|| a.to_string(), Clone::clone);
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        let now = Instant::now();
        for (vip, slot) in slots.iter_mut() {
            let vip = *vip;
            while let Some(action) = slot.machine.poll_action() {
                slot.dirty = true;
                match action {
                    Action::Send { to, msg } => {
                        out.clear();
                        msg.encode(&mut out);
                        let dest = SocketAddr::V6(SocketAddrV6::new(to, *port, 0, 0));
                        let sent = socket.as_ref().map(|s| s.try_send_to(&out, dest));
                        match sent {
                            Some(Ok(_)) => metrics.datagrams.with_label_values(&["sent", msg.body.name()]).inc(),
                            Some(Err(e)) => {
                                metrics.rejected.with_label_values(&["send_failed"]).inc();
                                tracing::debug!(%vip, to = %to, error = %e, "sending a failover datagram failed");
                            }
                            None => metrics.rejected.with_label_values(&["send_failed"]).inc(),
                        }
                    }
                    Action::AddAddress | Action::RemoveAddress | Action::AddressLifetime(_) | Action::Route(_) => {
                        apply(plane, vip, &slot.kind, &action, *me).await;
                    }
                    Action::Note(note) => observe(metrics, log_limit, now, &slot.label, note, &name_of),
                    Action::Stopped => slot.stopped = true,
                }
            }
            if !std::mem::take(&mut slot.dirty) {
                continue;
            }
            let status_holder = slot.machine.claim().map(|c| name_of(c.holder));
            if status_holder != slot.holder_label {
                metrics.set_holder(&slot.label, slot.holder_label.as_deref(), status_holder.as_deref());
                slot.holder_label = status_holder;
            }
            let status = slot.machine.status(now);
            metrics.set_vip(
                &slot.label,
                &VipGauges {
                    role: status.role,
                    term: status.claim.map_or(0, |c| c.epoch.term),
                    confirmed: status.confirmed.map_or(0, |c| c.0),
                    peers: slot.machine.params().peers.len(),
                    healthy: status.healthy,
                    single_candidate: cannot_fail_over(slot.machine.params()),
                },
            );
        }
    }

    /// Every VIP and floating prefix as this node sees it.
    pub(crate) fn statuses(&self, now: Instant) -> Vec<VipStatus> {
        self.slots.values().map(|s| s.machine.status(now)).collect()
    }

    /// The floating prefix whose failover key is `key`; `None` for a VIP or an unknown key.
    pub(crate) fn prefix_of(&self, key: Ipv6Addr) -> Option<IpNet> {
        match self.slots.get(&key)?.kind {
            Kind::Floating { prefix, .. } => Some(prefix),
            Kind::Vip => None,
        }
    }

    /// The member name of an overlay address.
    pub(crate) fn name_of(&self, addr: Ipv6Addr) -> Option<String> {
        self.members.get(&addr).cloned()
    }

    /// The overlay address of the member called `name`.
    pub(crate) fn member_by_name(&self, name: &str) -> Option<Ipv6Addr> {
        self.by_name.get(name).copied()
    }

    /// An operator's move of `vip` to `to` (`None` = the next live candidate by rank). `None` when `vip`
    /// is not configured.
    pub(crate) fn request_move(
        &mut self,
        vip: Ipv6Addr,
        to: Option<Ipv6Addr>,
        now: Instant,
    ) -> Option<Result<Ipv6Addr, MoveError>> {
        let slot = self.slots.get_mut(&vip)?;
        slot.dirty = true;
        Some(slot.machine.request_move(now, to))
    }

    /// Never claim `vip` at a term at or below `floor` (the registry's highest epoch). Unknown VIPs are
    /// ignored; a floor the machine refuses (above [`crate::vip::MAX_TERM`]) is logged and changes nothing.
    pub(crate) fn raise_term(&mut self, vip: Ipv6Addr, floor: u64) {
        if let Some(slot) = self.slots.get_mut(&vip) {
            if !slot.machine.raise_term(floor) {
                tracing::warn!(%vip, floor, "term floor refused: above the highest term any claim may carry");
            }
            slot.dirty = true;
        }
    }

    /// Starts the shutdown sequence (holders hand over first).
    pub(crate) fn shutdown(&mut self, now: Instant) {
        for s in self.slots.values_mut() {
            s.machine.handle_local(now, LocalEvent::Shutdown);
            s.dirty = true;
        }
    }

    /// Whether every machine finished its shutdown sequence.
    pub(crate) fn all_stopped(&self) -> bool {
        self.slots.values().all(|s| s.stopped)
    }

    /// Applies a reloaded configuration: updates candidates, peers, timers and health checks (and a
    /// floating prefix's gateway); starts machines for new VIPs and floating prefixes and removes those
    /// that are gone (address and route included).
    pub(crate) async fn reload<P: DataPlane>(&mut self, config: &Config, plane: &mut P, now: Instant) {
        (self.members, self.by_name) = members_of(config);
        let mut wanted: Wanted<'_> = config
            .vips
            .iter()
            .map(|v| {
                let entry = (
                    Kind::Vip,
                    v.candidates.as_slice(),
                    v.quorum.as_deref(),
                    v.health.as_ref(),
                );
                (v.address, entry)
            })
            .collect();
        for f in &config.floating {
            wanted.entry(f.key()).or_insert((
                Kind::floating(f),
                f.candidates.as_slice(),
                f.quorum.as_deref(),
                f.health.as_ref(),
            ));
        }
        let gone: Vec<Ipv6Addr> = self
            .slots
            .iter()
            .filter(|(k, s)| wanted.get(k).is_none_or(|(kind, ..)| !same_target(kind, &s.kind)))
            .map(|(k, _)| *k)
            .collect();
        for vip in gone {
            if let Some(slot) = self.slots.remove(&vip) {
                tracing::info!(vip = %slot.label, "VIP removed from the configuration");
                remove(plane, vip, &slot.kind, holds(&slot.machine)).await;
                self.metrics.forget_vip(&slot.label, slot.holder_label.as_deref());
                self.log_limit.forget(&slot.label);
            }
        }
        for (vip, (kind, candidates, quorum, health)) in wanted {
            let params = self.params(config, vip, candidates, quorum);
            match self.slots.get_mut(&vip) {
                Some(slot) => {
                    slot.dirty = true;
                    if slot.kind != kind {
                        // The same prefix with another gateway: move the address if this node holds it.
                        if holds(&slot.machine) {
                            apply(plane, vip, &slot.kind, &Action::RemoveAddress, self.me).await;
                            apply(plane, vip, &kind, &Action::AddAddress, self.me).await;
                            if params.quorum.is_some() {
                                let lifetime = Action::AddressLifetime(Some(params.timers.address_lifetime()));
                                apply(plane, vip, &kind, &lifetime, self.me).await;
                            }
                        }
                        slot.kind = kind;
                    }
                    if *slot.machine.params() != params {
                        slot.machine.handle_local(now, LocalEvent::Update(params));
                    }
                    if slot.health.as_ref().map(|h| &h.config) != health {
                        slot.health = None;
                        slot.machine.handle_local(now, LocalEvent::Health(health.is_none()));
                        if let Some(cfg) = health.cloned() {
                            let task = self.spawn_health(vip, cfg, false);
                            if let Some(slot) = self.slots.get_mut(&vip) {
                                slot.health = Some(task);
                            }
                        }
                    }
                }
                None => self.start_machine(params, kind, now, health.cloned(), Adopt::Nothing),
            }
        }
        self.flush(plane).await;
    }
}

/// Whether `machine`'s node holds its VIP or prefix (holding, or draining it in a handover).
fn holds(machine: &Machine) -> bool {
    matches!(machine.role(), super::PeerState::Holding | super::PeerState::Draining)
}

/// Whether two kinds move the same thing (a VIP, or the same prefix whatever its gateway): a slot whose
/// target changed is removed and started again.
fn same_target(a: &Kind, b: &Kind) -> bool {
    match (a, b) {
        (Kind::Vip, Kind::Vip) => true,
        (Kind::Floating { prefix: p, .. }, Kind::Floating { prefix: q, .. }) => p == q,
        _ => false,
    }
}

/// The health a VIP's machine starts with: healthy without a health check; with one, unhealthy until
/// the check has passed `rise` times, except for a candidate that adopted the VIP address
/// ([`Adopt::HeldHere`]: it was serving the VIP when its daemon stopped). Such a node is assumed healthy
/// until its check fails `fall` times in a row, so a restart does not take the VIP down for a rise
/// (see "Restart and adoption" in `docs/protocol.md`: this changes when it may claim, never whether a
/// claim is fenced).
pub(crate) fn starts_healthy(checked: bool, candidate: bool, adopt: Adopt) -> bool {
    !checked || (candidate && adopt == Adopt::HeldHere)
}

/// Whether a VIP with `params` has fewer than two candidates (read from the machine's parameters, which a
/// reload updates, so the gauge follows candidates joining and leaving).
fn cannot_fail_over(params: &Params) -> bool {
    params.candidates.len() < 2
}

/// Whether starting `params` logs that the VIP cannot fail over: only on its one candidate. Every node
/// exports `sdwand_vip_single_candidate`; a warning on the others is noise, and on a server that joins it is
/// false: the view that names the first server alone arrives before the one with its own candidacy.
fn warns_single_candidate(params: &Params) -> bool {
    cannot_fail_over(params) && params.candidates.contains(&params.me)
}

/// The members by address, and their addresses by name.
fn members_of(config: &Config) -> (HashMap<Ipv6Addr, String>, HashMap<String, Ipv6Addr>) {
    let by_address = config.members.iter().map(|m| (m.address, m.name.clone())).collect();
    let by_name = config.members.iter().map(|m| (m.name.clone(), m.address)).collect();
    (by_address, by_name)
}
