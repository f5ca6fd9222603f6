//! The failover runtime: drives one [`Machine`] per configured VIP from a UDP socket, timers and health
//! checks, and hands the data-plane effects (address, allowed-IP route) to the daemon through
//! [`DataPlane`], in the order the machines asked for them (a peer acknowledges a claim only after it
//! has re-routed the VIP).
//!
//! The socket is bound to this node's overlay /128 and to the WireGuard interface (`SO_BINDTODEVICE`),
//! so only datagrams that arrived through WireGuard reach it; WireGuard's cryptokey routing has then
//! authenticated the source address, and a datagram is accepted only when that source is the sender it
//! names. This module decides nothing about the protocol.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::health;
use super::wire::{Message, MAX_DATAGRAM};
use super::{Action, Adopt, LocalEvent, Machine, MoveError, Note, Params, VipStatus};
use crate::config::{Config, HealthConfig};
use crate::mesh::KeyBytes;
use crate::metrics::{VipGauges, VipMetrics};

/// The data-plane effects of the machines, implemented by the daemon.
pub(crate) trait DataPlane {
    /// Puts the VIP /128 on the interface.
    async fn add_address(&mut self, vip: Ipv6Addr);
    /// Takes the VIP /128 off the interface.
    async fn remove_address(&mut self, vip: Ipv6Addr);
    /// Routes the VIP through the peer with this key; `None` routes it through no peer (this node holds
    /// it, or the VIP is gone).
    fn route(&mut self, vip: Ipv6Addr, via: Option<KeyBytes>);
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

/// A member as the runtime needs it.
#[derive(Debug, Clone)]
struct Member {
    name: String,
    key: KeyBytes,
}

/// One VIP.
struct Slot {
    machine: Machine,
    label: String,
    holder_label: Option<String>,
    health: Option<HealthTask>,
    single_candidate: bool,
    stopped: bool,
}

/// A running health check and the task that forwards its changes.
struct HealthTask {
    config: HealthConfig,
    generation: u64,
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
pub(crate) struct VipRuntime {
    me: Ipv6Addr,
    port: u16,
    ifname: String,
    incarnation: u64,
    socket: Option<UdpSocket>,
    bound_ifindex: Option<u32>,
    members: HashMap<Ipv6Addr, Member>,
    slots: BTreeMap<Ipv6Addr, Slot>,
    health_tx: mpsc::Sender<(Ipv6Addr, u64, bool)>,
    health_rx: mpsc::Receiver<(Ipv6Addr, u64, bool)>,
    next_generation: u64,
    metrics: VipMetrics,
    buf: Vec<u8>,
}

impl VipRuntime {
    /// A runtime for the VIPs of `config`. `adopt` tells what the data plane shows for each VIP (a
    /// restarted daemon finds the address or the route it left).
    pub(crate) fn new(
        config: &Config,
        incarnation: u64,
        adopt: impl Fn(Ipv6Addr) -> Adopt,
        metrics: VipMetrics,
    ) -> VipRuntime {
        let (health_tx, health_rx) = mpsc::channel(64);
        let mut rt = VipRuntime {
            me: config.interface.address,
            port: config.failover.port,
            ifname: config.interface.name.clone(),
            incarnation,
            socket: None,
            bound_ifindex: None,
            members: members_of(config),
            slots: BTreeMap::new(),
            health_tx,
            health_rx,
            next_generation: 0,
            metrics,
            buf: vec![0; MAX_DATAGRAM + 1],
        };
        let now = Instant::now();
        for v in &config.vips {
            let params = rt.params(config, v.address, &v.candidates);
            let healthy = v.health.is_none();
            let machine = Machine::new(params, now, incarnation, healthy, adopt(v.address));
            rt.insert_slot(machine, v.health.clone());
        }
        rt
    }

    /// Where each VIP is routed, by the key of the peer (for the daemon's first composition).
    pub(crate) fn routes(&self) -> BTreeMap<Ipv6Addr, KeyBytes> {
        self.slots
            .iter()
            .filter_map(|(vip, s)| {
                let to = s.machine.routed_to()?;
                Some((*vip, self.members.get(&to)?.key)).filter(|_| to != self.me)
            })
            .collect()
    }

    fn params(&self, config: &Config, vip: Ipv6Addr, candidates: &[String]) -> Params {
        Params {
            vip,
            me: self.me,
            candidates: candidates.iter().filter_map(|n| config.member_address(n)).collect(),
            peers: config
                .members
                .iter()
                .map(|m| m.address)
                .filter(|a| *a != self.me)
                .collect(),
            timers: config.failover.timers(),
        }
    }

    fn insert_slot(&mut self, machine: Machine, health: Option<HealthConfig>) {
        let vip = machine.params().vip;
        let single_candidate = machine.params().candidates.len() == 1;
        if single_candidate {
            tracing::warn!(%vip, "VIP has a single candidate: it cannot fail over (add a second k3s server)");
        }
        let mut slot = Slot {
            machine,
            label: vip.to_string(),
            holder_label: None,
            health: None,
            single_candidate,
            stopped: false,
        };
        slot.health = health.map(|cfg| self.spawn_health(vip, cfg));
        self.slots.insert(vip, slot);
    }

    fn spawn_health(&mut self, vip: Ipv6Addr, config: HealthConfig) -> HealthTask {
        self.next_generation += 1;
        let generation = self.next_generation;
        let (mut rx, checker) = health::spawn(config.clone());
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

    /// (Re)binds the socket when the interface is new or was recreated (a new index). Returns an error
    /// only for logging; the next network pass retries.
    pub(crate) fn ensure_bound(&mut self, ifindex: u32) -> io::Result<()> {
        if self.slots.is_empty() || self.bound_ifindex == Some(ifindex) {
            return Ok(());
        }
        self.socket = None;
        self.bound_ifindex = None;
        let socket = bind(self.me, self.port, &self.ifname)?;
        tracing::info!(address = %self.me, port = self.port, iface = %self.ifname, "failover socket bound");
        self.socket = Some(socket);
        self.bound_ifindex = Some(ifindex);
        Ok(())
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
                        tracing::info!(%vip, healthy, "VIP health changed");
                        s.machine.handle_local(now, LocalEvent::Health(healthy));
                    }
                }
            }
            Input::SocketError(e) => {
                tracing::warn!(error = %e, "failover socket failed; rebinding on the next pass");
                self.socket = None;
                self.bound_ifindex = None;
            }
        }
    }

    fn on_datagram(&mut self, len: usize, from: SocketAddr, now: Instant) {
        let reject = |m: &VipMetrics, reason: &'static str| {
            m.rejected.with_label_values(&[reason]).inc();
            tracing::debug!(%from, reason, "failover datagram rejected");
        };
        if len > MAX_DATAGRAM {
            return reject(&self.metrics, "oversized");
        }
        let msg = match Message::decode(&self.buf[..len]) {
            Ok(msg) => msg,
            Err(e) => return reject(&self.metrics, e.reason()),
        };
        let source = match from {
            SocketAddr::V6(a) => *a.ip(),
            SocketAddr::V4(_) => return reject(&self.metrics, "forged_sender"),
        };
        if source != msg.header.sender {
            return reject(&self.metrics, "forged_sender");
        }
        let Some(slot) = self.slots.get_mut(&msg.header.vip) else {
            return reject(&self.metrics, "unknown_vip");
        };
        self.metrics
            .datagrams
            .with_label_values(&["received", msg.body.name()])
            .inc();
        slot.machine.handle_datagram(now, msg);
    }

    /// Executes every pending action of every machine, in order.
    pub(crate) async fn flush<P: DataPlane>(&mut self, plane: &mut P) {
        let VipRuntime {
            me,
            port,
            socket,
            members,
            slots,
            metrics,
            ..
        } = self;
        let name_of = |a: Ipv6Addr| members.get(&a).map_or_else(|| a.to_string(), |m| m.name.clone());
        let mut out = Vec::with_capacity(MAX_DATAGRAM);
        for (vip, slot) in slots.iter_mut() {
            let vip = *vip;
            while let Some(action) = slot.machine.poll_action() {
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
                    Action::AddAddress => plane.add_address(vip).await,
                    Action::RemoveAddress => plane.remove_address(vip).await,
                    Action::Route(to) => {
                        let via = (to != *me).then(|| members.get(&to).map(|m| m.key)).flatten();
                        plane.route(vip, via);
                    }
                    Action::Note(note) => observe(metrics, &slot.label, note, &name_of),
                    Action::Stopped => slot.stopped = true,
                }
            }
            let status_holder = slot.machine.claim().map(|c| name_of(c.holder));
            if status_holder != slot.holder_label {
                metrics.set_holder(&slot.label, slot.holder_label.as_deref(), status_holder.as_deref());
                slot.holder_label = status_holder;
            }
            let status = slot.machine.status(Instant::now());
            metrics.set_vip(
                &slot.label,
                &VipGauges {
                    role: status.role,
                    term: status.claim.map_or(0, |c| c.epoch.term),
                    confirmed: status.confirmed.map_or(0, |c| c.0),
                    peers: slot.machine.params().peers.len(),
                    healthy: status.healthy,
                    single_candidate: slot.single_candidate,
                },
            );
        }
    }

    /// Every VIP as this node sees it.
    pub(crate) fn statuses(&self, now: Instant) -> Vec<VipStatus> {
        self.slots.values().map(|s| s.machine.status(now)).collect()
    }

    /// The member name of an overlay address.
    pub(crate) fn name_of(&self, addr: Ipv6Addr) -> Option<String> {
        self.members.get(&addr).map(|m| m.name.clone())
    }

    /// The overlay address of the member called `name`.
    pub(crate) fn member_by_name(&self, name: &str) -> Option<Ipv6Addr> {
        self.members.iter().find(|(_, m)| m.name == name).map(|(a, _)| *a)
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
        Some(slot.machine.request_move(now, to))
    }

    /// Never claim `vip` at a term at or below `floor` (the registry's highest epoch). Unknown VIPs are
    /// ignored.
    pub(crate) fn raise_term(&mut self, vip: Ipv6Addr, floor: u64) {
        if let Some(slot) = self.slots.get_mut(&vip) {
            slot.machine.raise_term(floor);
        }
    }

    /// Starts the shutdown sequence (holders hand over first).
    pub(crate) fn shutdown(&mut self, now: Instant) {
        for s in self.slots.values_mut() {
            s.machine.handle_local(now, LocalEvent::Shutdown);
        }
    }

    /// Whether every machine finished its shutdown sequence.
    pub(crate) fn all_stopped(&self) -> bool {
        self.slots.values().all(|s| s.stopped)
    }

    /// Applies a reloaded configuration: updates candidates, peers, timers and health checks; starts
    /// machines for new VIPs and removes the VIPs that are gone (address and route included).
    pub(crate) async fn reload<P: DataPlane>(&mut self, config: &Config, plane: &mut P, now: Instant) {
        self.members = members_of(config);
        let wanted: BTreeMap<Ipv6Addr, _> = config.vips.iter().map(|v| (v.address, v)).collect();
        let gone: Vec<Ipv6Addr> = self.slots.keys().filter(|v| !wanted.contains_key(v)).copied().collect();
        for vip in gone {
            if let Some(slot) = self.slots.remove(&vip) {
                tracing::info!(%vip, "VIP removed from the configuration");
                if matches!(
                    slot.machine.role(),
                    super::PeerState::Holding | super::PeerState::Draining
                ) {
                    plane.remove_address(vip).await;
                }
                plane.route(vip, None);
                self.metrics.forget_vip(&slot.label, slot.holder_label.as_deref());
            }
        }
        for (vip, v) in wanted {
            let params = self.params(config, vip, &v.candidates);
            match self.slots.get_mut(&vip) {
                Some(slot) => {
                    if *slot.machine.params() != params {
                        slot.machine.handle_local(now, LocalEvent::Update(params));
                    }
                    if slot.health.as_ref().map(|h| &h.config) != v.health.as_ref() {
                        slot.health = None;
                        slot.machine.handle_local(now, LocalEvent::Health(v.health.is_none()));
                        if let Some(cfg) = v.health.clone() {
                            let task = self.spawn_health(vip, cfg);
                            if let Some(slot) = self.slots.get_mut(&vip) {
                                slot.health = Some(task);
                            }
                        }
                    }
                }
                None => {
                    let machine = Machine::new(params, now, self.incarnation, v.health.is_none(), Adopt::Nothing);
                    self.insert_slot(machine, v.health.clone());
                }
            }
        }
        self.flush(plane).await;
    }
}

fn members_of(config: &Config) -> HashMap<Ipv6Addr, Member> {
    config
        .members
        .iter()
        .map(|m| {
            (
                m.address,
                Member {
                    name: m.name.clone(),
                    key: m.public_key.0,
                },
            )
        })
        .collect()
}

/// Metrics and log lines for a machine's note.
fn observe(m: &VipMetrics, vip: &str, note: Note, name_of: &dyn Fn(Ipv6Addr) -> String) {
    match note {
        Note::Role { from, to, why, claim } => tracing::info!(
            vip,
            old = from.as_str(),
            new = to.as_str(),
            reason = why,
            epoch = %claim.map_or("-".into(), |c| c.epoch.to_string()),
            holder = %claim.map_or("-".into(), |c| name_of(c.holder)),
            "VIP role changed"
        ),
        Note::Claimed {
            reason,
            epoch,
            detection_to_claim,
        } => {
            m.failovers.with_label_values(&[vip, reason.as_str()]).inc();
            // An initial claim follows the start-up listening period, not a detection.
            if reason != super::ClaimReason::Initial {
                m.detection_to_claim
                    .with_label_values(&[vip])
                    .observe(detection_to_claim.as_secs_f64());
            }
            tracing::info!(vip, reason = reason.as_str(), %epoch, detection_to_claim_ms = detection_to_claim.as_secs_f64() * 1e3, "claimed the VIP");
        }
        Note::Confirmed {
            epoch,
            claim_to_confirmed,
        } => {
            m.claim_to_confirmed
                .with_label_values(&[vip])
                .observe(claim_to_confirmed.as_secs_f64());
            tracing::info!(vip, %epoch, claim_to_confirmed_ms = claim_to_confirmed.as_secs_f64() * 1e3, "every peer routes the VIP here");
        }
        Note::Rtt { peer, rtt } => m
            .rtt
            .with_label_values(&[vip, &name_of(peer)])
            .observe(rtt.as_secs_f64()),
        Note::Rejected(reason) => {
            m.rejected.with_label_values(&[reason]).inc();
            tracing::debug!(vip, reason, "failover datagram rejected");
        }
        Note::HandoverFailed { to } => {
            m.handovers_failed.with_label_values(&[vip]).inc();
            tracing::warn!(vip, to = %name_of(to), "handover timed out; keeping the VIP");
        }
        Note::TermExhausted { term } => {
            tracing::error!(
                vip,
                term,
                "the claim rule picked this node, but terms are exhausted: not claiming"
            )
        }
    }
}

/// A UDP socket on `[me]:port`, bound to the interface so only datagrams that came through it arrive.
fn bind(me: Ipv6Addr, port: u16, ifname: &str) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_only_v6(true)?;
    socket.set_freebind_v6(true)?;
    socket.bind_device(Some(ifname.as_bytes()))?;
    socket.set_nonblocking(true)?;
    let addr = SocketAddr::V6(SocketAddrV6::new(me, port, 0, 0));
    socket.bind(&addr.into()).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("binding the failover socket to [{me}]:{port}: {e} (change failover.port)"),
        )
    })?;
    UdpSocket::from_std(socket.into())
}

/// This start's incarnation: greater than every earlier one, even if the clock went back. The last one
/// is kept in `state_dir/incarnation`; if that file cannot be written, the wall clock alone is used.
pub(crate) fn next_incarnation(state_dir: &Path) -> u64 {
    let path = state_dir.join("incarnation");
    let last = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let next = clock.max(last.saturating_add(1));
    let tmp = state_dir.join("incarnation.tmp");
    let written = std::fs::write(&tmp, format!("{next}\n")).and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not record the incarnation; using the clock alone");
    }
    next
}
