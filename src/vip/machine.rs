//! The per-VIP failover state machine (sans-IO).
//!
//! Call order: after [`Machine::new`], feed inputs with [`Machine::handle_datagram`],
//! [`Machine::handle_timeout`] (when [`Machine::poll_timeout`] has passed), [`Machine::handle_local`] and
//! [`Machine::request_move`], always with a monotonic `now`; after each input drain
//! [`Machine::poll_action`] until it returns `None` and execute the actions in order, then sleep until
//! [`Machine::poll_timeout`]. See `docs/protocol.md` for the protocol and its invariants.
//!
//! This file holds the state and its invariants, the inputs (each dispatches and then runs
//! `Machine::evaluate`) and the action queue; it must not hold a rule of the protocol. The rules live
//! beside it: the claim rule and what a learned claim changes in `machine/claim.rs`, the holder's side
//! (claim fan-out, handovers, drain) in `machine/hold.rs`, heartbeats and liveness in
//! `machine/liveness.rs`, the member and candidate lists and the admission of datagrams in
//! `machine/members.rs`, quorum mode (votes, promises, the holder's lease and release) in
//! `machine/quorum.rs`, the timers and the per-run evaluation in `machine/tick.rs`, and who may say what
//! (the checks on claims, followers' reports, the transport state) in `machine/trust.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::replay::Window;
use super::MAX_TERM;
use super::{Action, Adopt, Claim, ClaimReason, Epoch, HandoverReason, LocalEvent, Note, Params, PeerState};
use super::{Body, Header, Message};

mod claim;
mod hold;
mod liveness;
mod members;
mod quorum;
mod tick;
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
    /// The target is not live, not healthy, or holding or draining a claim itself; in quorum mode, also
    /// when it is not the best-placed such candidate (the one the voters turn to).
    #[error("{0} is not a live, healthy standby (in quorum mode: the best-placed one), so it cannot take the VIP")]
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
    /// Its newest heartbeat: `sent_at_us`, when it arrived and the sender's incarnation (echoed back
    /// for RTT, and named by a vote in quorum mode).
    echo: Option<Echo>,
    rtt: Option<Duration>,
}

/// The newest heartbeat of a candidate, as echoed back to it.
#[derive(Debug, Clone, Copy)]
struct Echo {
    /// Its `sent_at_us`.
    at: u64,
    /// When it arrived here.
    received: Instant,
    /// The sender's incarnation.
    incarnation: u64,
}

/// Quorum mode: this voter's promise not to vote for any candidate but `to` before `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Promise {
    /// The candidate voted for (this node itself included).
    to: Ipv6Addr,
    /// Until when (this node's clock).
    until: Instant,
}

impl Cand {
    fn last_heard(&self) -> Option<Instant> {
        self.direct.max(self.indirect)
    }
}

/// This node's claim while it holds the VIP (`Machine::hold`).
#[derive(Debug, Clone)]
struct Hold {
    /// The claim's epoch; the machine's `best` is this node's claim at this epoch while it holds.
    epoch: Epoch,
    /// When the hold began (its claim or its resumption).
    since: Instant,
    /// Peers that were live at the claim and have not acknowledged yet; [`Note::LiveConfirmed`] when it
    /// empties.
    live: BTreeSet<Ipv6Addr>,
    /// Members that acknowledged this claim (only members of `p.peers`: `update` prunes the rest).
    acked: BTreeSet<Ipv6Addr>,
    /// Peers that have not acknowledged: next re-send and current backoff (doubling up to the
    /// retransmit maximum). A member is in `acked` or `pending`, never both.
    pending: BTreeMap<Ipv6Addr, (Instant, Duration)>,
    /// When every member had acknowledged (at once when there are none); `None` until then.
    confirmed_at: Option<Instant>,
    /// The next time the claim is sent to every member again, acknowledged or not.
    next_refresh: Instant,
}

/// The wait of a holder that renewed its claim on a follower's report (`Machine::rival`, see
/// `Machine::follower_view`) before it renews again once a rival it cannot hear has answered.
#[derive(Debug, Clone, Copy)]
struct Rival {
    /// The next wait; doubles after each renewal that follows one, up to `trust::HOLD_OFF_MAX` refresh
    /// periods.
    hold_off: Duration,
    /// While waiting: no renewal on a follower's report before this instant.
    not_before: Option<Instant>,
}

/// A handover this node (the holder) started; only while it holds (`Machine::hold` is `Some`).
#[derive(Debug, Clone, Copy)]
struct Handover {
    /// The successor, a candidate that was ready when the handover started.
    to: Ipv6Addr,
    /// Why (manual, shutdown, health, preemption).
    reason: HandoverReason,
    /// When the handover is given up (and a shutdown stops without it).
    deadline: Instant,
    /// When the handover message is sent again (once per interval until the successor claims).
    next_send: Instant,
}

/// The failover state machine of one VIP on one node.
///
/// Every field is private and changed only by the machine's inputs. What always holds after an input
/// (checked by `debug_check` in debug builds): `role` is `Holding` exactly while `hold` is `Some`, and
/// then `best` is this node's claim at `hold`'s epoch and the address is on the interface; `role` is
/// `Draining` exactly while `drain` is `Some`, and then too the address is on; a `handover` exists only
/// while holding; and `max_term` is at least the term of `best`, so a claim this node makes is above
/// every claim it has accepted.
#[derive(Debug)]
pub struct Machine {
    /// The VIP, this node, the candidates, the members and the timers; replaced only by
    /// [`LocalEvent::Update`] (`members.rs`).
    p: Params,
    /// This run's incarnation (fixed): it grows with every start of the node, so peers' replay windows
    /// take this run's datagrams although `seq` starts again.
    incarnation: u64,
    /// Zero of this machine's `sent_at_us` clock (fixed).
    origin: Instant,
    /// The sequence number of the last datagram sent: `send` increments it before each one, so it only
    /// grows within an incarnation.
    seq: u64,
    /// This node's role; changed through `set_role`, which notes every change (except the first
    /// `Listening` of a candidate, set by [`Machine::new`]).
    role: PeerState,
    /// This node's health (the last [`LocalEvent::Health`]; at start what the driver passed).
    healthy: bool,
    /// The highest claim seen (including this node's own); only rises (`learn`, `claim_now`).
    best: Option<Claim>,
    /// The highest term seen in any claim, raised by claims learned, by [`Machine::raise_term`] and by
    /// `climb` (a term too far ahead of it to accept); a claim of this node takes `max_term + 1`. Never
    /// above [`MAX_TERM`], only rises.
    max_term: u64,
    /// Where the VIP is routed (the last `Route` action, or what was adopted); changed only by `route`,
    /// which emits the action when it changes.
    routed_to: Option<Ipv6Addr>,
    /// Whether the VIP address is on this node's interface (as far as the actions asked for): set by a
    /// claim or an adoption, cleared by `remove_address`, which emits the action.
    has_address: bool,
    /// The other candidates (`p.candidates` without this node), by address, with what is known of each;
    /// kept in step with `p` by `sync_candidates`.
    cands: BTreeMap<Ipv6Addr, Cand>,
    /// `p.peers` as a set: membership checks per datagram must not scan the member list. Always equal to
    /// `p.peers` (set together in `new` and `update`).
    peer_set: HashSet<Ipv6Addr>,
    /// Replay windows of the members heard from (pruned to the members and candidates on every update).
    windows: HashMap<Ipv6Addr, Window>,
    /// Actions not yet taken by [`Machine::poll_action`], in order.
    actions: VecDeque<Action>,
    /// While `Listening`: when the listening period ends; `None` otherwise.
    listen_until: Option<Instant>,
    /// When the next heartbeats are due; `None` while this node is not a candidate.
    next_heartbeat: Option<Instant>,
    /// When the holder was first seen gone (for the detection-to-claim figure); `None` while it is not.
    holder_gone_since: Option<Instant>,
    /// This node's claim while it holds the VIP (see [`Hold`]).
    hold: Option<Hold>,
    /// A handover this holder started, until the successor claims or the deadline passes.
    handover: Option<Handover>,
    /// While draining: the successor's claim (or a higher one learned since) and the drain deadline.
    drain: Option<(Claim, Instant)>,
    /// Since when a live healthy candidate ranked above this holder has been seen (preemption delay).
    preempt_since: Option<Instant>,
    /// The last time the machine ran; a longer gap than [`STALL`] intervals means this node was frozen.
    last_run: Option<Instant>,
    /// After a stall, no claim before this: the datagrams queued meanwhile must be heard first.
    settle_until: Option<Instant>,
    /// A shutdown was asked for ([`LocalEvent::Shutdown`]); never cleared. No claim is made after it.
    shutting_down: bool,
    /// The machine has stopped (the `Stopped` action was emitted, once); every input is ignored after.
    stopped: bool,
    /// When [`Machine::handle_timeout`] is due next (computed by `evaluate`); `None` once stopped.
    wake: Option<Instant>,
    /// Whether the failover transport works (the last [`LocalEvent::Transport`]).
    transport_up: bool,
    /// Since when it has been down; `Some` exactly while `transport_up` is false after it went down.
    transport_down_since: Option<Instant>,
    /// The last time a follower's report made this holder renew its claim (at most once per interval).
    last_renew: Option<Instant>,
    /// Set when this holder renews its claim on a follower's report (cleared by any claim that is not a
    /// renewal): a live rival it cannot hear out-claims such a renewal, and is then topped again only
    /// after a growing wait (`trust.rs`).
    rival: Option<Rival>,
    /// [`Note::TermExhausted`] was given (it is given once).
    exhausted_noted: bool,
    /// Quorum mode: the witnesses (voters that are not candidates, this node included if it is one);
    /// empty otherwise. Kept in step with `p` by `sync_candidates`.
    witnesses: BTreeSet<Ipv6Addr>,
    /// Quorum mode: this voter's promise (see [`Promise`]); a candidate's vote for itself is a promise to
    /// itself. Cleared when the candidate it names stops holding (`quorum.rs`).
    promise: Option<Promise>,
    /// Quorum mode, a candidate: the votes it received, by voter, with the instant each stops counting.
    /// Emptied whenever this node stops holding.
    votes: BTreeMap<Ipv6Addr, Instant>,
    /// Quorum mode, a candidate: `sent_at_us` of its latest heartbeat rounds since it last stopped holding
    /// (at most `quorum::RING`): only a vote echoing one of them counts.
    sent: VecDeque<u64>,
    /// Quorum mode: this node casts no vote before this instant (one promise time after it started, so a
    /// promise made by an earlier run of this node has run out).
    vote_after: Instant,
    /// Quorum mode, a holder that handed over: until then it reports itself unhealthy, neither votes for
    /// itself nor claims, so the voters pick its successor.
    yield_until: Option<Instant>,
    /// Quorum mode, a successor: the holder's claim it was asked to take over, and why (it claims through
    /// the claim rule once a majority votes for it).
    handed: Option<(Claim, HandoverReason)>,
    /// Quorum mode, while holding: when the address's kernel lifetime is renewed next
    /// ([`Action::AddressLifetime`]); `None` while not holding and at a claim, which renews it at once
    /// (`renew_lifetime` sets and clears it).
    renew_at: Option<Instant>,
}

impl Machine {
    /// A machine for `params`. `incarnation` must grow with every start of this node (it fences replays
    /// of an earlier run's datagrams); `healthy` is the health to start with (false when a health check is
    /// configured and has not passed yet, except that the daemon assumes a candidate that adopted the
    /// address healthy: see "Restart and adoption" in `docs/protocol.md`). A candidate that adopted the
    /// address and still has it when listening ends claims at once if the claim rule picks it
    /// ([`ClaimReason::Restart`]), keeping the address; otherwise it drops it.
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
            rival: None,
            exhausted_noted: false,
            witnesses: BTreeSet::new(),
            promise: None,
            votes: BTreeMap::new(),
            sent: VecDeque::new(),
            vote_after: now + params.timers.vote_promise(),
            yield_until: None,
            handed: None,
            renew_at: None,
            p: params,
        };
        m.sync_candidates(now);
        let candidate = m.rank().is_some();
        match adopt {
            Adopt::Nothing => {}
            // Quorum mode: the lease of the run that left the address is gone; claim it afresh.
            Adopt::HeldHere if m.p.quorum.is_some() => m.actions.push_back(Action::RemoveAddress),
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
        } else if m.witnesses.contains(&m.p.me) {
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
                        // Quorum mode: nobody may serve the VIP without a lease, so it leaves with the daemon.
                        None if self.p.quorum.is_some() => self.release_hold(now, "stopping"),
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
                if !self.ready(c, now) || self.p.quorum.is_some() && self.successor(now) != Some(to) {
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
                    if self.p.quorum.is_some() {
                        // It claims through the claim rule once a majority votes for it (`tick.rs`).
                        self.handed = Some((Claim { epoch, holder: from }, reason));
                    } else {
                        self.claim_now(now, ClaimReason::Handover(reason));
                    }
                }
            }
        }
        self.evaluate(now);
    }

    fn rank(&self) -> Option<usize> {
        self.p.candidates.iter().position(|c| *c == self.p.me)
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.actions.push_back(Action::Stopped);
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
            if from == PeerState::Holding {
                // Before any heartbeat says so: the voters take "no longer holding" as a release.
                self.release_votes();
            }
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

    /// Checks the invariants documented on [`Machine`] (debug builds only; run after every input).
    fn debug_check(&self) {
        let mine = self.hold.as_ref().map(|h| Claim {
            epoch: h.epoch,
            holder: self.p.me,
        });
        debug_assert_eq!(self.hold.is_some(), self.role == PeerState::Holding);
        debug_assert!(mine.is_none() || self.best == mine);
        debug_assert_eq!(self.drain.is_some(), self.role == PeerState::Draining);
        debug_assert!(self.has_address || (self.hold.is_none() && self.drain.is_none()));
        debug_assert!(self.handover.is_none() || self.hold.is_some());
        debug_assert!(self.best.is_none_or(|b| b.epoch.term <= self.max_term));
    }
}
