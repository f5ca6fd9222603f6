//! The simulated world: nodes running [`Machine`]s, their interfaces, a lossy network, a fake clock and
//! the per-step safety checks. Time is microseconds since `base`; the world jumps from event to event.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use sdwand::vip::{
    Action, Adopt, Claim, Epoch, LocalEvent, Machine, Message, Note, Params, PeerState, Quorum, CATCH_UP_TERM, MAX_TERM,
};

use super::model::{addr, ClaimRec, Link, Op, Rng, Setup, MS, T};

/// How far above [`CATCH_UP_TERM`] honest claims may go in a run: a rogue's steps raise the terms by at
/// most `MAX_TERM_STEP` per datagram, a few thousand datagrams in a run. Beyond it, the terms ran away.
const RUNAWAY: u64 = 1 << 40;

#[path = "faults.rs"]
mod faults;
#[path = "rogue.rs"]
mod rogue;

pub use rogue::Rogue;

/// Most events one schedule may process (a runaway loop fails the schedule instead of hanging).
const STEP_CAP: u64 = 3_000_000;
/// How many sent datagrams the replayer remembers.
const REPLAY_RING: usize = 64;
/// How long a candidate that adopted the address is assumed healthy at most before its check tells the
/// truth: `fall` (3) failed checks at the default 1 s period, the first at start (`runtime::starts_healthy`).
const ASSUMED_HEALTHY_FOR: T = 2_000 * MS;

/// One simulated node.
struct Node {
    addr: Ipv6Addr,
    machine: Option<Machine>,
    /// The host runs (false: dead, interface empty).
    up: bool,
    /// The VIP /128 is on the interface.
    has_addr: bool,
    /// Quorum mode: when the address's kernel lifetime runs out (`None`: never), as the last
    /// `AddressLifetime` set it.
    addr_until: Option<T>,
    /// Where the interface routes the VIP.
    route: Option<Ipv6Addr>,
    incarnation: u64,
    healthy: bool,
    /// Health changed while frozen: tell the machine when it thaws.
    health_pending: bool,
    frozen_until: Option<T>,
    /// Datagrams that arrived while frozen, with their senders.
    inbox: Vec<(usize, Vec<u8>)>,
    timer_gen: u64,
    timer_at: Option<T>,
    /// When the daemon was told to shut down, until it reports `Stopped`.
    stopping: Option<T>,
}

enum Ev {
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        gen: u64,
    },
    Thaw(usize),
    /// The health check of this incarnation of the node has run long enough to give the truth.
    Recheck {
        node: usize,
        incarnation: u64,
    },
    Op(Op),
}

struct Entry {
    t: T,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.t, self.seq) == (other.t, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    /// Reversed, so the `BinaryHeap` pops the earliest event (ties in scheduling order).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.t, other.seq).cmp(&(self.t, self.seq))
    }
}

/// The world of one schedule.
pub struct World {
    base: Instant,
    now: T,
    setup: Setup,
    vip: Ipv6Addr,
    nodes: Vec<Node>,
    links: Vec<Link>,
    nominal: Vec<Link>,
    queue: BinaryHeap<Entry>,
    seq: u64,
    rng: Rng,
    steps: u64,
    /// After the faults end a stopped daemon is restarted at once (like systemd's `Restart=always`).
    auto_restart: bool,
    /// Which node held each epoch (invariant 1).
    holders: HashMap<Epoch, usize>,
    /// Every claim, in order.
    pub claims: Vec<ClaimRec>,
    /// Datagrams dropped by the machines, by reason.
    pub rejected: HashMap<&'static str, u64>,
    /// Datagrams delivered to a machine.
    pub delivered: u64,
    /// Operator moves that were accepted.
    pub moves: u64,
    /// When a daemon last started after the faults ended (a planned stop that was still under way).
    pub last_restart: T,
    recent: Vec<(usize, usize, Vec<u8>)>,
    /// The misbehaving member, if any (see `rogue.rs`).
    rogue: Option<Rogue>,
    trace: bool,
}

impl World {
    /// A world for `setup`; every node boots at its offset from `start`, with nominal links from `rng`.
    pub fn new(setup: &Setup, rng: &mut Rng, start: &[T], trace: bool) -> World {
        let n = setup.nodes();
        let mut links = Vec::with_capacity(n * n);
        for _ in 0..n * n {
            links.push(Link {
                loss: 0.0,
                delay: rng.range(500, 10 * MS),
                jitter: rng.range(0, 2 * MS),
                dup: 0.0,
                cut: 0,
            });
        }
        let nodes = (0..n)
            .map(|i| Node {
                addr: addr(i),
                machine: None,
                up: false,
                has_addr: false,
                addr_until: None,
                route: None,
                incarnation: 0,
                healthy: true,
                health_pending: false,
                frozen_until: None,
                inbox: Vec::new(),
                timer_gen: 0,
                timer_at: None,
                stopping: None,
            })
            .collect();
        let mut w = World {
            base: Instant::now(),
            now: 0,
            setup: setup.clone(),
            vip: Ipv6Addr::new(0xfd00, 0x5d, 0, 0, 0, 0, 0, 0xffff),
            nodes,
            nominal: links.clone(),
            links,
            queue: BinaryHeap::new(),
            seq: 0,
            rng: Rng::new(rng.next()),
            steps: 0,
            auto_restart: false,
            holders: HashMap::new(),
            claims: Vec::new(),
            rejected: HashMap::new(),
            delivered: 0,
            moves: 0,
            last_restart: 0,
            recent: Vec::new(),
            rogue: None,
            trace,
        };
        for (i, &t) in start.iter().enumerate() {
            w.push(t, Ev::Op(Op::Revive(i)));
        }
        w
    }

    /// Sets every link's loss to `0..=loss` and jitter to `0..=jitter` (drawn per link), for the whole run.
    pub fn set_nominal_weather(&mut self, loss: f64, jitter: T) {
        for l in self.nominal.iter_mut() {
            l.loss = loss * self.rng.unit();
            l.jitter = self.rng.range(0, jitter);
        }
        self.links.clone_from(&self.nominal);
    }

    /// Schedules `op` at `t` (never, when `t` is `T::MAX`).
    pub fn at(&mut self, t: T, op: Op) {
        if t != T::MAX {
            self.push(t, Ev::Op(op));
        }
    }

    /// From now on `rogue` misbehaves.
    pub fn set_rogue(&mut self, rogue: Rogue) {
        self.log(|| format!("n{} is a rogue", rogue.node));
        self.rogue = Some(rogue);
    }

    /// Node `i`'s role, if its daemon runs.
    pub fn role(&self, i: usize) -> Option<PeerState> {
        self.nodes[i].machine.as_ref().map(Machine::role)
    }

    fn push(&mut self, t: T, ev: Ev) {
        self.seq += 1;
        self.queue.push(Entry { t, seq: self.seq, ev });
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    /// Writes `what` to the trace (only when tracing a single seed).
    pub fn log(&self, what: impl FnOnce() -> String) {
        if self.trace {
            eprintln!("{:>9.3} ms  {}", self.now as f64 / 1e3, what());
        }
    }

    /// Processes every event up to and including `t`, then sets the clock to `t`.
    pub fn run_until(&mut self, t: T) -> Result<(), String> {
        while self.queue.peek().is_some_and(|e| e.t <= t) {
            let Some(e) = self.queue.pop() else { break };
            self.now = e.t;
            self.steps += 1;
            if self.steps > STEP_CAP {
                return Err(format!("more than {STEP_CAP} events: runaway schedule"));
            }
            match e.ev {
                Ev::Deliver { from, to, bytes } => self.deliver(from, to, bytes)?,
                Ev::Timer { node, gen } => {
                    let n = &self.nodes[node];
                    if n.timer_gen == gen && n.frozen_until.is_none() {
                        self.nodes[node].timer_at = None;
                        self.input(node, |m, now| m.handle_timeout(now))?;
                    }
                }
                Ev::Thaw(i) => self.thaw(i)?,
                Ev::Recheck { node, incarnation } => self.recheck(node, incarnation)?,
                Ev::Op(op) => self.apply(op)?,
            }
        }
        self.now = t;
        Ok(())
    }

    fn deliver(&mut self, from: usize, to: usize, bytes: Vec<u8>) -> Result<(), String> {
        let n = &mut self.nodes[to];
        if !n.up || n.machine.is_none() {
            return Ok(());
        }
        if n.frozen_until.is_some() {
            n.inbox.push((from, bytes));
            return Ok(());
        }
        let msg =
            Message::decode(&bytes).map_err(|e| format!("node {to} cannot decode a datagram from {from}: {e}"))?;
        if msg.header.sender != self.nodes[from].addr {
            return Err(format!("datagram from node {from} names sender {}", msg.header.sender));
        }
        self.delivered += 1;
        self.log(|| format!("n{to} <- n{from} {:?}", msg.body));
        self.input(to, |m, now| m.handle_datagram(now, msg))
    }

    fn thaw(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].frozen_until.is_none_or(|t| t > self.now) {
            return Ok(());
        }
        self.nodes[i].frozen_until = None;
        self.log(|| format!("n{i} thaws with {} queued", self.nodes[i].inbox.len()));
        let timer_first = self.rng.chance(0.5);
        if timer_first {
            self.input(i, |m, now| m.handle_timeout(now))?;
        }
        for (from, bytes) in std::mem::take(&mut self.nodes[i].inbox) {
            self.deliver(from, i, bytes)?;
        }
        if self.nodes[i].health_pending {
            self.nodes[i].health_pending = false;
            let h = self.nodes[i].healthy;
            self.input(i, |m, now| m.handle_local(now, LocalEvent::Health(h)))?;
        }
        self.input(i, |m, now| m.handle_timeout(now))
    }

    /// Starts node `i`'s daemon, adopting what its interface holds.
    fn start(&mut self, i: usize) -> Result<(), String> {
        let now = self.instant();
        if self.auto_restart {
            self.last_restart = self.now;
        }
        let n = &mut self.nodes[i];
        n.incarnation += 1;
        n.stopping = None;
        let adopt = match (n.has_addr, n.route) {
            (true, _) => Adopt::HeldHere,
            (false, Some(to)) => Adopt::RoutedTo(to),
            (false, None) => Adopt::Nothing,
        };
        let params = Params {
            vip: self.vip,
            me: n.addr,
            candidates: (0..self.setup.candidates).map(addr).collect(),
            peers: (0..self.setup.nodes()).filter(|&j| j != i).map(addr).collect(),
            timers: self.setup.timers,
            quorum: self.setup.quorum.map(|w| Quorum {
                witnesses: (self.setup.candidates..self.setup.candidates + w).map(addr).collect(),
            }),
        };
        // Like the runtime, a candidate that adopted the address is assumed healthy until its check has
        // failed `fall` times; whatever the service's state, the check reports it after that.
        let assumed = i < self.setup.candidates && adopt == Adopt::HeldHere;
        let m = Machine::new(params, now, n.incarnation, n.healthy || assumed, adopt);
        n.machine = Some(m);
        if assumed && !n.healthy {
            let incarnation = n.incarnation;
            self.push(self.now + ASSUMED_HEALTHY_FOR, Ev::Recheck { node: i, incarnation });
        }
        self.log(|| format!("n{i} starts (incarnation {}, {adopt:?})", self.nodes[i].incarnation));
        self.after_input(i, None)
    }

    /// The health check of node `i`'s daemon (if it is still incarnation `incarnation`) reports the
    /// service's state after an assumed-healthy start.
    fn recheck(&mut self, i: usize, incarnation: u64) -> Result<(), String> {
        let n = &mut self.nodes[i];
        if n.incarnation != incarnation || n.machine.is_none() {
            return Ok(());
        }
        if n.frozen_until.is_some() {
            n.health_pending = true;
            return Ok(());
        }
        let h = n.healthy;
        self.input(i, |m, now| m.handle_local(now, LocalEvent::Health(h)))
    }

    /// Runs one input on node `i`'s machine (if its daemon runs and it is not frozen), then executes the
    /// actions and checks the safety invariants.
    fn input(&mut self, i: usize, f: impl FnOnce(&mut Machine, Instant)) -> Result<(), String> {
        let now = self.instant();
        let n = &mut self.nodes[i];
        if n.frozen_until.is_some() {
            return Ok(());
        }
        let Some(m) = n.machine.as_mut() else { return Ok(()) };
        let before = m.claim();
        f(m, now);
        self.after_input(i, before)
    }

    fn after_input(&mut self, i: usize, before: Option<Claim>) -> Result<(), String> {
        let me = self.nodes[i].addr;
        let mut stopped = false;
        while let Some(action) = self.nodes[i].machine.as_mut().and_then(Machine::poll_action) {
            match action {
                Action::Send { to, msg } => {
                    let msg = self.tamper(i, to, msg);
                    self.send(i, to, &msg)?;
                }
                Action::AddAddress => {
                    self.nodes[i].has_addr = true;
                    self.nodes[i].addr_until = None;
                }
                Action::RemoveAddress => self.nodes[i].has_addr = false,
                Action::AddressLifetime(l) => {
                    self.nodes[i].addr_until = l.map(|l| self.now + l.as_micros() as T);
                }
                Action::Route(to) => self.nodes[i].route = Some(to),
                Action::Stopped => stopped = true,
                Action::Note(note) => self.note(i, before, note)?,
            }
        }
        let Some(m) = self.nodes[i].machine.as_ref() else {
            return Ok(());
        };
        let (claim, role, routed) = (m.claim(), m.role(), m.routed_to());
        let wake = m
            .poll_timeout()
            .map(|t| t.saturating_duration_since(self.base).as_micros() as T);
        // Only a candidate can be where a node routes the VIP, whatever the rogue said, and no term
        // passes MAX_TERM.
        let candidate = |a: Ipv6Addr| (0..self.setup.candidates).any(|j| addr(j) == a);
        if let Some(c) = claim.filter(|c| !candidate(c.holder) || c.epoch.term > MAX_TERM) {
            return Err(format!(
                "node {i}: claim in force {c:?} names a non-candidate or passes MAX_TERM"
            ));
        }
        if let Some(r) = routed.filter(|r| !candidate(*r)) {
            return Err(format!("node {i}: routes the VIP to the non-candidate {r}"));
        }
        if claim < before {
            return Err(format!(
                "node {i}: claim in force went back from {before:?} to {claim:?}"
            ));
        }
        if routed.is_some() && routed != self.nodes[i].route {
            return Err(format!(
                "node {i}: machine routes to {routed:?}, interface to {:?}",
                self.nodes[i].route
            ));
        }
        if role == PeerState::Holding {
            let Some(c) = claim.filter(|c| c.holder == me) else {
                return Err(format!("node {i} holds but its claim in force is {claim:?}"));
            };
            if !self.nodes[i].has_addr {
                return Err(format!("node {i} holds {c:?} without the address"));
            }
            // Quorum mode: a running holder renews its address's lifetime before the kernel drops it.
            if let Some(until) = self.nodes[i].addr_until.filter(|u| *u <= self.now) {
                return Err(format!(
                    "node {i} holds {c:?} but its address's lifetime ran out at {until} µs (now {})",
                    self.now
                ));
            }
            self.record_holder(i, c.epoch)?;
        }
        if self.setup.quorum.is_some() {
            self.one_running_holder()?;
        }
        if stopped {
            self.log(|| format!("n{i} stopped"));
            let n = &mut self.nodes[i];
            n.machine = None;
            n.stopping = None;
            n.timer_at = None;
            n.timer_gen += 1;
            if self.auto_restart && n.up {
                return self.start(i);
            }
            return Ok(());
        }
        let n = &mut self.nodes[i];
        if wake != n.timer_at {
            n.timer_at = wake;
            n.timer_gen += 1;
            if let Some(t) = wake {
                let gen = n.timer_gen;
                self.push(t.max(self.now), Ev::Timer { node: i, gen });
            }
        }
        Ok(())
    }

    /// Quorum mode: at no instant do two running nodes (daemon up, not frozen) have the address.
    fn one_running_holder(&self) -> Result<(), String> {
        let running = |n: &Node| n.up && n.machine.is_some() && n.frozen_until.is_none();
        let holders: Vec<usize> = (0..self.nodes.len())
            .filter(|&j| running(&self.nodes[j]) && self.nodes[j].has_addr)
            .collect();
        if holders.len() > 1 {
            return Err(format!("invariant Q: running nodes {holders:?} all have the address"));
        }
        Ok(())
    }

    fn record_holder(&mut self, i: usize, epoch: Epoch) -> Result<(), String> {
        match self.holders.insert(epoch, i) {
            Some(j) if j != i => Err(format!("invariant 1: epoch {epoch} held by node {j} and node {i}")),
            _ => Ok(()),
        }
    }

    fn note(&mut self, i: usize, before: Option<Claim>, note: Note) -> Result<(), String> {
        match note {
            Note::Claimed { reason, epoch, .. } => {
                self.log(|| format!("n{i} CLAIMS {epoch} ({})", reason.as_str()));
                if usize::from(epoch.rank) != i {
                    return Err(format!("node {i} claimed {epoch} with another rank"));
                }
                if before.is_some_and(|b| epoch <= b.epoch) {
                    return Err(format!(
                        "node {i} claimed {epoch}, not above the claim it had seen: {before:?}"
                    ));
                }
                if epoch.term > CATCH_UP_TERM + RUNAWAY {
                    return Err(format!(
                        "node {i} claimed {epoch}: the terms ran away (no room left to grow)"
                    ));
                }
                self.record_holder(i, epoch)?;
                self.claims.push(ClaimRec {
                    t: self.now,
                    node: i,
                    reason,
                    epoch,
                });
            }
            Note::TermExhausted { term } => return Err(format!("node {i} can no longer claim: term {term}")),
            Note::Rejected(why) => *self.rejected.entry(why).or_default() += 1,
            Note::Role { from, to, why, claim } => {
                self.log(|| format!("n{i} {} -> {} ({why}) {claim:?}", from.as_str(), to.as_str()));
            }
            _ => {}
        }
        Ok(())
    }

    fn send(&mut self, from: usize, to: Ipv6Addr, msg: &Message) -> Result<(), String> {
        let bytes = msg.to_bytes();
        match Message::decode(&bytes) {
            Ok(back) if back == *msg => {}
            other => return Err(format!("wire round trip of {msg:?} gave {other:?}")),
        }
        let n = self.nodes.len();
        let Some(j) = (0..n).find(|&j| self.nodes[j].addr == to) else {
            return Err(format!("node {from} sends to unknown address {to}"));
        };
        if self.recent.len() < REPLAY_RING {
            self.recent.push((from, j, bytes.clone()));
        } else {
            let k = self.rng.pick(REPLAY_RING);
            self.recent[k] = (from, j, bytes.clone());
        }
        let link = self.links[from * n + j];
        if link.cut > 0 || self.rng.chance(link.loss) {
            return Ok(());
        }
        if self.rng.chance(link.dup) {
            let t = self.now + link.delay + self.rng.range(0, link.jitter);
            self.push(
                t,
                Ev::Deliver {
                    from,
                    to: j,
                    bytes: bytes.clone(),
                },
            );
        }
        let t = self.now + link.delay + self.rng.range(0, link.jitter);
        self.push(t, Ev::Deliver { from, to: j, bytes });
        Ok(())
    }
}
