//! Quorum mode (see "Quorum mode" in `docs/protocol.md`): whom this node votes for and the promise
//! that binds it, the votes a candidate counts, the lease they make, the holder's release (stepping
//! down when the lease runs out, or handing over), and the kernel lifetime of its address (the backstop
//! for a holder that stops running). It must not change the claim rule itself: `claim.rs`
//! asks [`Machine::has_quorum`], `tick.rs` applies [`Machine::check_lease`], `liveness.rs` carries the
//! votes on heartbeats.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use super::{Machine, Promise};
use crate::vip::{Action, Body, HandoverReason, Heartbeat, Note, PeerState};

/// How many of its latest heartbeat rounds a candidate accepts echoes of: a vote echoes the newest
/// heartbeat its voter received, and one older than the lease counts for nothing anyway.
pub(super) const RING: usize = 16;

impl Machine {
    /// Whether this node votes: quorum mode, and a candidate or a witness.
    pub(super) fn voter(&self) -> bool {
        self.p.quorum.is_some() && (self.rank().is_some() || self.witnesses.contains(&self.p.me))
    }

    /// Votes needed: more than half of all voters (candidates and witnesses, dead ones included).
    pub(super) fn majority(&self) -> usize {
        (self.p.candidates.len() + self.witnesses.len()) / 2 + 1
    }

    /// Whether this node is handing the VIP over (quorum mode): it stands aside for its successor.
    pub(super) fn yielding(&self, now: Instant) -> bool {
        self.yield_until.is_some_and(|t| now < t)
    }

    /// The health this node reports and votes on: a stopping or yielding node does not want the VIP.
    pub(super) fn fit(&self, now: Instant) -> bool {
        self.healthy && !self.shutting_down && !self.yielding(now)
    }

    /// The candidate this voter wants to hold: the holder of the highest claim while it is live and its
    /// newest heartbeat says it holds (this node: while it holds), else the best-placed live healthy
    /// candidate (this node itself, if that is it and it is fit to hold and its transport works). A
    /// holder that says otherwise (it restarted, say, and does not know the claim) is not waited for:
    /// the promises bridge the moment between a claim and its holder's first heartbeat saying so.
    pub(super) fn choice(&self, now: Instant) -> Option<Ipv6Addr> {
        let me = self.p.me;
        let holding = |h: Ipv6Addr| {
            if h == me {
                self.hold.is_some()
            } else {
                self.cands
                    .get(&h)
                    .is_some_and(|c| self.live(c, now) && c.state == Some(PeerState::Holding))
            }
        };
        if let Some(b) = self.best.filter(|b| holding(b.holder)) {
            return Some(b.holder);
        }
        self.p.candidates.iter().copied().find(|&a| {
            if a == me {
                self.fit(now) && self.transport_up
            } else {
                self.cands.get(&a).is_some_and(|c| self.live(c, now) && c.healthy)
            }
        })
    }

    /// Whom this voter may vote for now: its choice, unless it is bound by a promise to another.
    pub(super) fn vote_target(&self, now: Instant) -> Option<Ipv6Addr> {
        if !self.voter() || now < self.vote_after {
            return None;
        }
        let to = self.choice(now)?;
        match self.promise {
            Some(p) if p.to != to && now < p.until => None,
            _ => Some(to),
        }
    }

    /// A candidate whose vote goes to itself renews its promise to itself for a lease time (it counts
    /// its own vote exactly while that promise lasts).
    pub(super) fn vote_for_self(&mut self, now: Instant) {
        if self.rank().is_none() || self.vote_target(now) != Some(self.p.me) {
            return;
        }
        let until = now + self.p.timers.vote_lease();
        self.bind(self.p.me, until);
    }

    /// Promises not to vote for another candidate than `to` before `until` (extending a promise to `to`).
    fn bind(&mut self, to: Ipv6Addr, until: Instant) {
        let until = match self.promise {
            Some(p) if p.to == to => p.until.max(until),
            _ => until,
        };
        self.promise = Some(Promise { to, until });
    }

    /// The vote to put on a heartbeat to the candidate `to`: `Some(its incarnation)` when this voter votes
    /// for it and has a heartbeat of it to echo; the promise then runs to a promise time after that
    /// heartbeat arrived.
    pub(super) fn vote_for(&mut self, now: Instant, to: Ipv6Addr) -> Option<u64> {
        if self.vote_target(now) != Some(to) {
            return None;
        }
        let echo = self.cands.get(&to)?.echo?;
        let until = echo.received + self.p.timers.vote_promise();
        if until <= now {
            return None;
        }
        self.bind(to, until);
        Some(echo.incarnation)
    }

    /// A heartbeat round went out at `sent_at_us`: a candidate in quorum mode accepts echoes of it.
    pub(super) fn record_round(&mut self, sent_at_us: u64) {
        if self.p.quorum.is_some() && self.rank().is_some() {
            if self.sent.len() == RING {
                self.sent.pop_front();
            }
            self.sent.push_back(sent_at_us);
        }
    }

    /// Counts the vote a heartbeat from `from` carries, if it is one: for this candidate, from a voter,
    /// echoing a heartbeat of this very run that it sent since it last stopped holding. It counts until
    /// a lease time after that heartbeat was sent.
    pub(super) fn take_vote(&mut self, from: Ipv6Addr, hb: &Heartbeat) {
        let Some(incarnation) = hb.vote else { return };
        let voter = self.cands.contains_key(&from) || self.witnesses.contains(&from);
        if self.p.quorum.is_none() || self.rank().is_none() || !voter {
            self.note(Note::Rejected("bad_vote"));
            return;
        }
        if incarnation != self.incarnation || !self.sent.contains(&hb.echo_at_us) {
            self.note(Note::Rejected("stale_vote"));
            return;
        }
        let until = self.origin + Duration::from_micros(hb.echo_at_us) + self.p.timers.vote_lease();
        let v = self.votes.entry(from).or_insert(until);
        *v = (*v).max(until);
    }

    /// A heartbeat from the candidate `c` says it no longer holds, where its previous newest said it
    /// did: it forgot every vote it had when it stopped (`release_votes`), so a promise to it is void.
    pub(super) fn released_by(&mut self, from: Ipv6Addr) {
        if self.promise.is_some_and(|p| p.to == from) {
            self.promise = None;
        }
    }

    /// When this candidate's majority of votes runs out (its own vote included): the instant the count
    /// drops below a majority, `None` if it is below already.
    pub(super) fn lease_end(&self, now: Instant) -> Option<Instant> {
        let own = self.promise.filter(|p| p.to == self.p.me).map(|p| p.until);
        let mut ends: Vec<Instant> = own
            .into_iter()
            .chain(self.votes.values().copied())
            .filter(|t| *t > now)
            .collect();
        let m = self.majority();
        if ends.len() < m {
            return None;
        }
        ends.sort_unstable_by(|a, b| b.cmp(a));
        Some(ends[m - 1])
    }

    /// The instant this holder must be off the interface by: its lease end less the execution margin.
    pub(super) fn step_down_at(&self, now: Instant) -> Option<Instant> {
        self.lease_end(now).map(|t| t - self.p.timers.lease_margin())
    }

    /// Quorum mode: whether a majority of voters backs this candidate for longer than the margin; always
    /// true otherwise.
    pub(super) fn has_quorum(&self, now: Instant) -> bool {
        self.p.quorum.is_none() || self.step_down_at(now).is_some_and(|t| now < t)
    }

    /// A holder whose lease is running out steps down (removes the address) before it does.
    pub(super) fn check_lease(&mut self, now: Instant) {
        if self.hold.is_some() && !self.has_quorum(now) {
            if let Some(h) = &self.hold {
                let (epoch, held) = (h.epoch, now.saturating_duration_since(h.since));
                self.note(Note::LeaseLost { epoch, held });
            }
            self.release_hold(now, "lost the votes of a majority");
        }
    }

    /// Stops holding at once (quorum mode): the address goes, the role becomes standby (which forgets
    /// every vote), and a heartbeat round tells the voters now, so they are free to vote for another.
    pub(super) fn release_hold(&mut self, now: Instant, why: &'static str) {
        self.hold = None;
        self.handover = None;
        self.remove_address();
        self.set_role(PeerState::Standby, why);
        if self.rank().is_some() {
            self.send_heartbeats(now);
            self.next_heartbeat = Some(now + self.p.timers.interval / 2);
        }
    }

    /// Quorum mode: hands over by stepping down first, standing aside (reporting itself unhealthy) for a
    /// handover timeout and asking `to` to claim; the voters released by its heartbeats vote for `to`.
    pub(super) fn quorum_handover(&mut self, now: Instant, to: Ipv6Addr, reason: HandoverReason) {
        let Some(epoch) = self.hold.as_ref().map(|h| h.epoch) else {
            return;
        };
        self.yield_until = Some(now + self.p.timers.handover_timeout());
        self.send(to, Body::Handover { epoch, reason });
        self.release_hold(now, "handing over");
    }

    /// A holder in quorum mode renews its address's kernel lifetime when it is due (when its hold begins,
    /// then every [`crate::vip::Timers::lifetime_renewal`]): should this node stop running, the kernel removes
    /// the address by itself at most [`crate::vip::Timers::address_lifetime`] after the last renewal.
    pub(super) fn renew_lifetime(&mut self, now: Instant) {
        if self.p.quorum.is_none() || self.hold.is_none() {
            self.renew_at = None;
            return;
        }
        if self.renew_at.is_none_or(|t| now >= t) {
            self.actions
                .push_back(Action::AddressLifetime(Some(self.p.timers.address_lifetime())));
            self.renew_at = Some(now + self.p.timers.lifetime_renewal());
        }
    }

    /// Forgets every vote this node counted and the heartbeat rounds they may echo, and its vote for
    /// itself: run whenever it stops holding, before it sends another heartbeat.
    pub(super) fn release_votes(&mut self) {
        self.votes.clear();
        self.sent.clear();
        if self.promise.is_some_and(|p| p.to == self.p.me) {
            self.promise = None;
        }
    }

    /// The voters' instants that can change what this node does: its promise running out (it may vote
    /// for another, or for itself and claim), the end of its yield, the first moment it may vote, and a
    /// holder's step-down.
    pub(super) fn quorum_wakes(&self, now: Instant) -> [Option<Instant>; 5] {
        if self.p.quorum.is_none() {
            return [None; 5];
        }
        let step_down = self.hold.as_ref().and_then(|_| self.step_down_at(now));
        [
            self.promise.map(|p| p.until),
            self.yield_until,
            Some(self.vote_after),
            step_down,
            self.renew_at,
        ]
    }

    /// Keeps the voters' state in step with the members (after an update): votes only from voters. Quorum
    /// mode turned off under a holder (`was_quorum`) makes its address permanent again.
    pub(super) fn prune_votes(&mut self, was_quorum: bool) {
        if was_quorum && self.p.quorum.is_none() && self.has_address {
            self.renew_at = None;
            self.actions.push_back(Action::AddressLifetime(None));
        }
        let (cands, witnesses) = (&self.cands, &self.witnesses);
        self.votes.retain(|a, _| cands.contains_key(a) || witnesses.contains(a));
        if self.p.quorum.is_none() {
            self.promise = None;
            self.votes.clear();
            self.sent.clear();
        }
    }
}
