//! The machine's clock: [`Machine::evaluate`] runs after every input and timer, detects a stall, ends
//! the listening period and a drain, applies the claim rule and the holder's duties, sends the heartbeats
//! that are due, and computes the next wake-up. It decides nothing of its own: the rules it applies live
//! in `claim.rs`, `hold.rs`, `liveness.rs` and `trust.rs`.

use std::time::Instant;

use super::{Machine, STALL};
use crate::vip::{ClaimReason, PeerState};

impl Machine {
    /// Decides, sends heartbeats and re-sends, and computes the next wake-up.
    pub(super) fn evaluate(&mut self, now: Instant) {
        if self.stopped {
            self.wake = None;
            self.debug_check();
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
        if self.yield_until.is_some_and(|t| now >= t) {
            self.yield_until = None;
        }
        // Quorum mode: a holder whose majority of votes is about to run out steps down first of all.
        self.vote_for_self(now);
        self.check_lease(now);
        if self.deaf_for_dead_time(now) {
            self.step_down_deaf();
        }
        if self.role == PeerState::Listening && self.listen_until.is_some_and(|t| now >= t) {
            self.listen_until = None;
            // A listener that adopted the address (and did not resume its claim) claims afresh at once if
            // the claim rule picks it, so the address never leaves; otherwise it drops the address.
            if self.has_address && self.should_claim(now) {
                self.claim_now(now, ClaimReason::Restart);
            }
            if self.hold.is_none() {
                self.set_role(PeerState::Standby, "listened for the others");
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
            let reason = match (self.best, self.handed) {
                (None, _) => ClaimReason::Initial,
                (Some(b), Some((c, why))) if b == c => ClaimReason::Handover(why),
                _ => ClaimReason::HolderDead,
            };
            self.claim_now(now, reason);
        }
        self.holding_duties(now);
        self.renew_lifetime(now);
        if self.drain.is_some_and(|(_, deadline)| now >= deadline) {
            self.finish_drain();
        }
        // A stop waits only for a handover in progress or a drain; stepping down also ends it.
        if self.shutting_down && self.hold.is_none() && self.drain.is_none() && !self.stopped {
            self.stop();
        }
        if self.stopped {
            self.wake = None;
            self.debug_check();
            return;
        }
        if self.next_heartbeat.is_some_and(|t| now >= t) {
            self.send_heartbeats(now);
            self.next_heartbeat = Some(now + self.p.timers.interval / 2);
        }
        self.wake = self.next_wake(now);
        self.debug_check();
    }

    /// The earliest future instant at which something is due.
    pub(super) fn next_wake(&self, now: Instant) -> Option<Instant> {
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
        t.extend(self.quorum_wakes(now));
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
