//! The per-VIP failover state machine (sans-IO).
//!
//! Call order: after [`Machine::new`], feed inputs with [`Machine::handle_datagram`],
//! [`Machine::handle_timeout`] (when [`Machine::poll_timeout`] has passed), [`Machine::handle_local`] and
//! [`Machine::request_move`], always with a monotonic `now`; after each input drain
//! [`Machine::poll_action`] until it returns `None` and execute the actions in order, then sleep until
//! [`Machine::poll_timeout`]. See `docs/protocol.md` for the protocol and its invariants.

//!
//! The holder's side (claim fan-out, handovers, drain) lives in `machine/hold.rs`, heartbeats and liveness
//! in `machine/liveness.rs`, who may say what (the checks on claims, followers' reports, the transport
//! state) in `machine/trust.rs`; this file holds the state, the inputs and the claim rule.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::replay::{Verdict, Window};
use super::MAX_TERM;
use super::{Action, Adopt, Claim, ClaimReason, Epoch, HandoverReason, LocalEvent, Note, Params, PeerState};
use super::{Body, Header, Message};

mod hold;
mod liveness;
mod trust;

/// A gap between two runs of a candidate's machine longer than this many intervals is a stall.
const STALL: u32 = 2;

/// Why an operator's move was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoveError {
    /// Only the holder can move the VIP.
    #[error("this node does not hold the VIP (holder: {})", .0.map_or("unknown".to_owned(), |h| h.to_string()))]
    NotHolder(Option<Ipv6Addr>),
    /// A handover is already under way.
    #[error("a handover to {0} is already under way")]
    InProgress(Ipv6Addr),
    /// The target is not a candidate of the VIP.
    #[error("{0} is not a candidate of this VIP")]
    NotCandidate(Ipv6Addr),
    /// The target is this node.
    #[error("{0} is this node, which already holds the VIP")]
    SelfTarget(Ipv6Addr),
    /// The target is not live, not healthy, or holding or draining a claim itself.
    #[error("{0} is not a live, healthy standby, so it cannot take the VIP")]
    NotReady(Ipv6Addr),
    /// No other candidate is live and healthy.
    #[error("no other candidate is live and healthy")]
    NoSuccessor,
}

/// What this node knows of another candidate.
#[derive(Debug, Clone)]
struct Cand {
    /// Its rank in the candidate list (a claim it makes or that names it must carry this rank).
    rank: usize,
    /// When this node started tracking it: until it is heard directly, reports of it count only for
    /// twice its dead time from here.
    since: Instant,
    /// Last heartbeat received from it.
    direct: Option<Instant>,
    /// Latest time another candidate reported hearing it.
    indirect: Option<Instant>,
    /// Its heartbeat interval (from its heartbeats; ours until it has sent one).
    interval: Duration,
    /// Its last reported state and health, and the claim it had seen when it reported them (from its
    /// newest heartbeat: a reordered older one does not overwrite them).
    state: Option<PeerState>,
    healthy: bool,
    view: Option<Claim>,
    /// `(incarnation, seq)` of that newest heartbeat.
    newest: (u64, u64),
    /// Its last heartbeat's `sent_at_us` and when it arrived (echoed back for RTT).
    echo: Option<(u64, Instant)>,
    rtt: Option<Duration>,
}

impl Cand {
    fn last_heard(&self) -> Option<Instant> {
        self.direct.max(self.indirect)
    }
}

/// This node's claim while it holds the VIP.
#[derive(Debug, Clone)]
struct Hold {
    epoch: Epoch,
    since: Instant,
    acked: BTreeSet<Ipv6Addr>,
    /// Peers that have not acknowledged: next re-send and current backoff.
    pending: BTreeMap<Ipv6Addr, (Instant, Duration)>,
    confirmed_at: Option<Instant>,
    next_refresh: Instant,
}

/// A handover this node (the holder) started.
#[derive(Debug, Clone, Copy)]
struct Handover {
    to: Ipv6Addr,
    reason: HandoverReason,
    deadline: Instant,
    next_send: Instant,
}

/// The failover state machine of one VIP on one node.
#[derive(Debug)]
pub struct Machine {
    p: Params,
    incarnation: u64,
    /// Zero of this machine's `sent_at_us` clock.
    origin: Instant,
    seq: u64,
    role: PeerState,
    healthy: bool,
    /// The highest claim seen (including this node's own).
    best: Option<Claim>,
    /// The highest term seen in any claim.
    max_term: u64,
    /// Where the VIP is routed (the last `Route` action, or what was adopted).
    routed_to: Option<Ipv6Addr>,
    /// Whether the VIP address is on this node's interface (as far as the actions asked for).
    has_address: bool,
    cands: BTreeMap<Ipv6Addr, Cand>,
    /// `p.peers` as a set: membership checks per datagram must not scan the member list.
    peer_set: HashSet<Ipv6Addr>,
    /// Replay windows of the members heard from (pruned to the members on every update).
    windows: HashMap<Ipv6Addr, Window>,
    actions: VecDeque<Action>,
    listen_until: Option<Instant>,
    next_heartbeat: Option<Instant>,
    /// When the holder was first seen gone (for the detection-to-claim figure).
    holder_gone_since: Option<Instant>,
    hold: Option<Hold>,
    handover: Option<Handover>,
    /// While draining: the successor's claim and the drain deadline.
    drain: Option<(Claim, Instant)>,
    preempt_since: Option<Instant>,
    /// The last time the machine ran; a longer gap than [`STALL`] intervals means this node was frozen.
    last_run: Option<Instant>,
    /// After a stall, no claim before this: the datagrams queued meanwhile must be heard first.
    settle_until: Option<Instant>,
    shutting_down: bool,
    stopped: bool,
    wake: Option<Instant>,
    /// Whether the failover transport works (the last [`LocalEvent::Transport`]).
    transport_up: bool,
    /// Since when it has been down.
    transport_down_since: Option<Instant>,
    /// The last time a follower's report made this holder renew its claim (at most once per interval).
    last_renew: Option<Instant>,
    /// [`Note::TermExhausted`] was given (it is given once).
    exhausted_noted: bool,
}

impl Machine {
    /// A machine for `params`. `incarnation` must grow with every start of this node (it fences replays
    /// of an earlier run's datagrams); `healthy` is the health to start with (false when a health check is
    /// configured and has not passed yet).
    pub fn new(params: Params, now: Instant, incarnation: u64, healthy: bool, adopt: Adopt) -> Machine {
        let mut m = Machine {
            incarnation,
            origin: now,
            seq: 0,
            role: PeerState::Follower,
            healthy,
            best: None,
            max_term: 0,
            routed_to: None,
            has_address: false,
            cands: BTreeMap::new(),
            peer_set: params.peers.iter().copied().collect(),
            windows: HashMap::new(),
            actions: VecDeque::new(),
            listen_until: None,
            next_heartbeat: None,
            holder_gone_since: None,
            hold: None,
            handover: None,
            drain: None,
            preempt_since: None,
            last_run: None,
            settle_until: None,
            shutting_down: false,
            stopped: false,
            wake: None,
            transport_up: true,
            transport_down_since: None,
            last_renew: None,
            exhausted_noted: false,
            p: params,
        };
        m.sync_candidates(now);
        let candidate = m.rank().is_some();
        match adopt {
            Adopt::Nothing => {}
            // The device may still route the VIP to a successor (a crash while draining): say where it goes.
            Adopt::HeldHere if candidate => {
                m.has_address = true;
                m.route(m.p.me);
            }
            Adopt::HeldHere => m.actions.push_back(Action::RemoveAddress),
            Adopt::RoutedTo(peer) => m.routed_to = Some(peer),
        }
        if candidate {
            m.role = PeerState::Listening;
            m.listen_until = Some(now + m.p.timers.listen());
            m.next_heartbeat = Some(now);
        }
        m.evaluate(now);
        m
    }

    /// Raises the term floor: this node's next claim takes a term above `floor` (the registry's highest
    /// epoch for the VIP, so terms keep growing across a restart of every node). A floor above
    /// [`MAX_TERM`] is refused (nothing could be claimed above it); returns whether it was accepted.
    pub fn raise_term(&mut self, floor: u64) -> bool {
        if floor > MAX_TERM {
            return false;
        }
        self.max_term = self.max_term.max(floor);
        true
    }

    /// The next action to execute, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`Machine::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.wake
    }

    /// Where the VIP is routed now (for the driver's allowed-IP composition).
    pub fn routed_to(&self) -> Option<Ipv6Addr> {
        self.routed_to
    }

    /// This node's role.
    pub fn role(&self) -> PeerState {
        self.role
    }

    /// The highest claim seen.
    pub fn claim(&self) -> Option<Claim> {
        self.best
    }

    /// The parameters in force.
    pub fn params(&self) -> &Params {
        &self.p
    }

    /// Timers have expired.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.evaluate(now);
    }

    /// A local event.
    pub fn handle_local(&mut self, now: Instant, event: LocalEvent) {
        if self.stopped {
            return;
        }
        match event {
            LocalEvent::Health(h) => self.healthy = h,
            LocalEvent::Shutdown => {
                self.shutting_down = true;
                // Not holding: `evaluate` stops at once, or when the drain ends.
                if self.hold.is_some() && self.handover.is_none() {
                    match self.successor(now) {
                        Some(to) => self.start_handover(now, to, HandoverReason::Shutdown),
                        None => self.stop(),
                    }
                }
            }
            LocalEvent::Update(params) => self.update(now, params),
            LocalEvent::Transport(up) => self.set_transport(now, up),
        }
        self.evaluate(now);
    }

    /// An operator asks to move the VIP to `to`, or to the next live candidate by rank.
    pub fn request_move(&mut self, now: Instant, to: Option<Ipv6Addr>) -> Result<Ipv6Addr, MoveError> {
        if self.hold.is_none() || self.stopped {
            return Err(MoveError::NotHolder(self.best.map(|c| c.holder)));
        }
        if let Some(h) = self.handover {
            return Err(MoveError::InProgress(h.to));
        }
        let to = match to {
            None => self.successor(now).ok_or(MoveError::NoSuccessor)?,
            Some(to) if to == self.p.me => return Err(MoveError::SelfTarget(to)),
            Some(to) => {
                let c = self.cands.get(&to).ok_or(MoveError::NotCandidate(to))?;
                if !self.ready(c, now) {
                    return Err(MoveError::NotReady(to));
                }
                to
            }
        };
        self.start_handover(now, to, HandoverReason::Manual);
        self.evaluate(now);
        Ok(to)
    }

    /// A decoded datagram whose source address the driver has checked against `msg.header.sender`.
    pub fn handle_datagram(&mut self, now: Instant, msg: Message) {
        if self.stopped {
            return;
        }
        if let Some(reason) = self.admit(now, &msg.header) {
            self.note(Note::Rejected(reason));
            return;
        }
        let from = msg.header.sender;
        match msg.body {
            Body::Heartbeat(hb) => self.on_heartbeat(now, &msg.header, hb),
            Body::Claim {
                epoch,
                confirmed,
                peers,
            } => {
                if !self.cands.contains_key(&from) {
                    self.note(Note::Rejected("not_candidate"));
                    return;
                }
                let claim = Claim { epoch, holder: from };
                // Only the successor's own claim, or a higher valid one (which `learn` made the claim the
                // drain waits for), ends a drain.
                let accepted = self.learn(now, from, claim);
                if accepted && confirmed >= peers && self.drain.is_some_and(|(succ, _)| succ == claim) {
                    self.finish_drain();
                }
                if let Some(view) = self.best {
                    self.send(from, Body::Ack { view });
                }
            }
            Body::Ack { view } => self.on_ack(now, from, view),
            Body::Handover { epoch, reason } => {
                if !self.cands.contains_key(&from) {
                    self.note(Note::Rejected("not_candidate"));
                    return;
                }
                let from_holder = self.best == Some(Claim { epoch, holder: from });
                let can_take = matches!(self.role, PeerState::Standby | PeerState::Listening);
                if from_holder && can_take && self.healthy && !self.shutting_down && self.transport_up {
                    self.holder_gone_since = Some(now);
                    self.claim_now(now, ClaimReason::Handover(reason));
                }
            }
        }
        self.evaluate(now);
    }

    fn rank(&self) -> Option<usize> {
        self.p.candidates.iter().position(|c| *c == self.p.me)
    }

    /// Replay, membership and VIP checks common to every datagram; `Some(label)` rejects it.
    fn admit(&mut self, now: Instant, h: &Header) -> Option<&'static str> {
        if h.vip != self.p.vip {
            return Some("unknown_vip");
        }
        if h.sender == self.p.me || !(self.peer_set.contains(&h.sender) || self.cands.contains_key(&h.sender)) {
            return Some("not_member");
        }
        let quiet = self.p.timers.listen();
        let verdict = self
            .windows
            .entry(h.sender)
            .or_default()
            .check(now, quiet, h.incarnation, h.seq);
        if verdict == Verdict::Restarted {
            // A candidate that started over: its heartbeats are its newest again.
            if let Some(c) = self.cands.get_mut(&h.sender) {
                c.newest = (0, 0);
            }
        }
        verdict.reason()
    }

    /// Takes in a claim seen from the candidate `from` (its claim, or its ack's or heartbeat's view) if
    /// [`Machine::vet`] passes it; returns whether it did.
    fn learn(&mut self, now: Instant, from: Ipv6Addr, claim: Claim) -> bool {
        if let Err(reason) = self.vet(claim, Some(from)) {
            self.note(Note::Rejected(reason));
            if reason == "bad_term" {
                self.climb(claim, false);
            }
            return false;
        }
        self.max_term = self.max_term.max(claim.epoch.term);
        if self.best.is_some_and(|b| claim <= b) {
            return true;
        }
        self.best = Some(claim);
        if claim.holder == self.p.me {
            // Others still name this node as holder of a claim it made before a restart: a listener that
            // kept the address resumes it, and a holder that has claimed afresh since (hearing no other
            // candidate) moves up to it, so every peer ends up with the same claim.
            let listening = self.has_address && self.role == PeerState::Listening;
            if self.hold.is_some() || listening {
                self.listen_until = None;
                self.begin_hold(now, claim.epoch);
                self.route(self.p.me);
                self.set_role(PeerState::Holding, "resumed the claim it held before restarting");
            }
            return true;
        }
        self.route(claim.holder);
        if self.hold.take().is_some() {
            match self.handover.take() {
                Some(h) if h.to == claim.holder => {
                    self.drain = Some((claim, now + self.p.timers.drain_timeout()));
                    self.set_role(PeerState::Draining, "successor claimed; serving until it is confirmed");
                }
                _ => {
                    self.remove_address();
                    self.set_role(PeerState::Standby, "saw a higher claim");
                }
            }
        } else if let Some((succ, deadline)) = self.drain {
            if claim > succ {
                self.drain = Some((claim, deadline));
            }
        } else if self.has_address {
            self.remove_address();
        }
        true
    }

    /// Decides, sends heartbeats and re-sends, and computes the next wake-up.
    fn evaluate(&mut self, now: Instant) {
        if self.stopped {
            self.wake = None;
            return;
        }
        // A candidate runs at least twice per interval (its heartbeats); a longer gap means the process was
        // frozen or starved, and what it believes about liveness is stale until it has caught up.
        if self
            .last_run
            .is_some_and(|last| now.saturating_duration_since(last) > STALL * self.p.timers.interval)
        {
            self.settle_until = Some(now + self.p.timers.dead_time(self.p.timers.interval));
        }
        self.last_run = Some(now);
        if self.settle_until.is_some_and(|t| now >= t) {
            self.settle_until = None;
        }
        if self.deaf_for_dead_time(now) {
            self.step_down_deaf();
        }
        if self.role == PeerState::Listening && self.listen_until.is_some_and(|t| now >= t) {
            self.listen_until = None;
            self.set_role(PeerState::Standby, "listened for the others");
            if self.has_address && !self.should_claim(now) {
                self.remove_address();
            }
        }
        // A successor that dies (or stops holding) while this node drains: stop draining now rather
        // than at the drain timeout, keeping the address if this node is the one to claim next.
        if self.drain.is_some() && self.holder_gone(now) {
            self.drain = None;
            self.set_role(PeerState::Standby, "successor gone while draining");
            if !self.should_claim(now) {
                self.remove_address();
            }
        }
        if self.holder_gone(now) {
            self.holder_gone_since.get_or_insert(now);
        } else {
            self.holder_gone_since = None;
        }
        if self.role == PeerState::Standby && self.should_claim(now) {
            let reason = if self.best.is_none() {
                ClaimReason::Initial
            } else {
                ClaimReason::HolderDead
            };
            self.claim_now(now, reason);
        }
        self.holding_duties(now);
        if self.drain.is_some_and(|(_, deadline)| now >= deadline) {
            self.finish_drain();
        }
        // A stop waits only for a handover in progress or a drain; stepping down also ends it.
        if self.shutting_down && self.hold.is_none() && self.drain.is_none() && !self.stopped {
            self.stop();
        }
        if self.stopped {
            self.wake = None;
            return;
        }
        if self.next_heartbeat.is_some_and(|t| now >= t) {
            self.send_heartbeats(now);
            self.next_heartbeat = Some(now + self.p.timers.interval / 2);
        }
        self.wake = self.next_wake(now);
    }

    /// Whether the holder of the best claim is gone: unknown, dead, or no longer holding. A live holder
    /// counts as not holding only when its newest heartbeat says so *and* already names this very claim
    /// as the highest it has seen: a heartbeat sent before it claimed (it arrives after the claim itself,
    /// or reordered) still says "standby" and proves nothing.
    fn holder_gone(&self, now: Instant) -> bool {
        match self.best {
            None => true,
            Some(c) if c.holder == self.p.me => self.hold.is_none() && self.drain.is_none(),
            Some(c) => match self.cands.get(&c.holder) {
                None => true,
                Some(k) => {
                    !self.live(k, now)
                        || (matches!(
                            k.state,
                            Some(PeerState::Standby | PeerState::Listening | PeerState::Follower)
                        ) && k.view == Some(c))
                }
            },
        }
    }

    /// The claim rule: healthy, the holder gone, and no live healthy candidate ranked above this node.
    fn should_claim(&self, now: Instant) -> bool {
        let Some(rank) = self.rank() else { return false };
        self.healthy
            && self.transport_up
            && !self.shutting_down
            && self.settle_until.is_none()
            && self.hold.is_none()
            && self.drain.is_none()
            && self.holder_gone(now)
            && !self.p.candidates[..rank]
                .iter()
                .any(|a| self.cands.get(a).is_some_and(|c| self.live(c, now) && c.healthy))
    }

    fn claim_now(&mut self, now: Instant, reason: ClaimReason) {
        let Some(rank) = self.rank() else { return };
        if self.max_term >= MAX_TERM {
            if !self.exhausted_noted {
                self.exhausted_noted = true;
                self.note(Note::TermExhausted { term: self.max_term });
            }
            return;
        }
        self.max_term += 1;
        let epoch = Epoch {
            term: self.max_term,
            rank: rank as u16,
        };
        self.best = Some(Claim {
            epoch,
            holder: self.p.me,
        });
        if !self.has_address {
            self.has_address = true;
            self.actions.push_back(Action::AddAddress);
        }
        self.route(self.p.me);
        self.begin_hold(now, epoch);
        let since = self.holder_gone_since.take().unwrap_or(now);
        self.note(Note::Claimed {
            reason,
            epoch,
            detection_to_claim: now.saturating_duration_since(since),
        });
        self.set_role(PeerState::Holding, reason.as_str());
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.actions.push_back(Action::Stopped);
    }

    fn update(&mut self, now: Instant, params: Params) {
        let was_candidate = self.rank().is_some();
        let old_peers = std::mem::take(&mut self.peer_set);
        self.peer_set = params.peers.iter().copied().collect();
        let new_peers: Vec<Ipv6Addr> = params
            .peers
            .iter()
            .filter(|p| !old_peers.contains(p))
            .copied()
            .collect();
        self.p = params;
        self.sync_candidates(now);
        let (peers, cands) = (&self.peer_set, &self.cands);
        self.windows.retain(|a, _| peers.contains(a) || cands.contains_key(a));
        let is_candidate = self.rank().is_some();
        if was_candidate && !is_candidate {
            self.hold = None;
            self.handover = None;
            self.drain = None;
            self.listen_until = None;
            self.next_heartbeat = None;
            self.remove_address();
            self.set_role(PeerState::Follower, "no longer a candidate");
        } else if !was_candidate && is_candidate {
            self.listen_until = Some(now + self.p.timers.listen());
            self.next_heartbeat = Some(now);
            self.set_role(PeerState::Listening, "became a candidate");
        }
        // A holder whose rank changed renews its claim: others check a claim's rank against its holder's.
        if let (Some(h), Some(rank)) = (&self.hold, self.rank()) {
            if usize::from(h.epoch.rank) != rank {
                self.claim_now(now, ClaimReason::Renew);
                return;
            }
        }
        let peers = &self.peer_set;
        if let Some(h) = self.hold.as_mut() {
            h.acked.retain(|a| peers.contains(a));
            h.pending.retain(|a, _| peers.contains(a));
            let first = self.p.timers.interval;
            for p in &new_peers {
                h.pending.insert(*p, (now + first, first));
            }
        }
        if self.hold.is_some() {
            for p in new_peers {
                self.send_claim(p);
            }
        }
    }

    /// Makes `cands` match the candidate list (keeping what is known of those that stay, with their
    /// new ranks).
    fn sync_candidates(&mut self, now: Instant) {
        let me = self.p.me;
        let interval = self.p.timers.interval;
        self.cands.retain(|a, _| self.p.candidates.contains(a));
        for (rank, a) in self.p.candidates.iter().enumerate().filter(|(_, a)| **a != me) {
            self.cands.entry(*a).and_modify(|c| c.rank = rank).or_insert(Cand {
                rank,
                since: now,
                direct: None,
                indirect: None,
                interval,
                state: None,
                healthy: false,
                view: None,
                newest: (0, 0),
                echo: None,
                rtt: None,
            });
        }
    }

    fn send(&mut self, to: Ipv6Addr, body: Body) {
        self.seq += 1;
        let msg = Message {
            header: Header {
                vip: self.p.vip,
                sender: self.p.me,
                incarnation: self.incarnation,
                seq: self.seq,
            },
            body,
        };
        self.actions.push_back(Action::Send { to, msg });
    }

    fn route(&mut self, to: Ipv6Addr) {
        if self.routed_to != Some(to) {
            self.routed_to = Some(to);
            self.actions.push_back(Action::Route(to));
        }
    }

    fn remove_address(&mut self) {
        if self.has_address {
            self.has_address = false;
            self.actions.push_back(Action::RemoveAddress);
        }
    }

    fn set_role(&mut self, to: PeerState, why: &'static str) {
        if self.role != to {
            let from = std::mem::replace(&mut self.role, to);
            self.note(Note::Role {
                from,
                to,
                why,
                claim: self.best,
            });
        }
    }

    fn note(&mut self, note: Note) {
        self.actions.push_back(Action::Note(note));
    }

    /// The earliest future instant at which something is due.
    fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut t: Vec<Option<Instant>> = vec![self.next_heartbeat, self.listen_until, self.settle_until];
        if self.has_address || self.hold.is_some() {
            t.push(
                self.transport_down_since
                    .map(|d| d + self.p.timers.dead_time(self.p.timers.interval)),
            );
        }
        t.push(self.drain.map(|(_, d)| d));
        if let Some(h) = self.handover {
            t.push(Some(h.deadline.min(h.next_send)));
        }
        if let Some(h) = &self.hold {
            t.push(Some(h.next_refresh));
            t.push(h.pending.values().map(|(n, _)| *n).min());
        }
        if let (Some(since), Some(delay)) = (self.preempt_since, self.p.timers.preempt) {
            t.push(Some(since + delay));
        }
        // Liveness deadlines that can change the claim rule: the holder's and those ranked above.
        if let Some(rank) = self.rank() {
            let holder = self.best.map(|c| c.holder);
            for (a, c) in &self.cands {
                let above = self.p.candidates[..rank].contains(a);
                if above || Some(*a) == holder {
                    t.push(self.live_until(c).filter(|d| *d > now));
                }
            }
        }
        t.into_iter().flatten().filter(|x| *x > now).min()
    }
}
