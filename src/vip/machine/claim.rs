//! The claim rule and what a claim changes: taking in a claim another candidate made or reported
//! ([`Machine::learn`], after the checks of `trust.rs`), whether the holder is gone, whether this node
//! should claim, and making the claim. It must not send or schedule anything itself: fanning the claim
//! out is `hold.rs`'s job, deciding when to look again is `tick.rs`'s.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::Machine;
use crate::vip::{Action, Claim, ClaimReason, Epoch, Note, PeerState, MAX_TERM};

impl Machine {
    /// Takes in a claim seen from the candidate `from` (its claim, or its ack's or heartbeat's view) if
    /// [`Machine::vet`] passes it; returns whether it did.
    pub(super) fn learn(&mut self, now: Instant, from: Ipv6Addr, claim: Claim) -> bool {
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

    /// Whether the holder of the best claim is gone: unknown, dead, or no longer holding. A live holder
    /// counts as not holding only when its newest heartbeat says so *and* already names this very claim
    /// as the highest it has seen: a heartbeat sent before it claimed (it arrives after the claim itself,
    /// or reordered) still says "standby" and proves nothing.
    pub(super) fn holder_gone(&self, now: Instant) -> bool {
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

    /// The claim rule: healthy, the holder gone, and no live healthy candidate ranked above this node; in
    /// quorum mode also not handing over, and backed by a majority of voters.
    pub(super) fn should_claim(&self, now: Instant) -> bool {
        let Some(rank) = self.rank() else { return false };
        self.healthy
            && self.transport_up
            && !self.shutting_down
            && !self.yielding(now)
            && self.has_quorum(now)
            && self.settle_until.is_none()
            && self.hold.is_none()
            && self.drain.is_none()
            && self.holder_gone(now)
            && !self.p.candidates[..rank]
                .iter()
                .any(|a| self.cands.get(a).is_some_and(|c| self.live(c, now) && c.healthy))
    }

    /// Where the client-visible outage a claim for `reason` ends began: a dead holder's last heartbeat
    /// heard here (directly, else reported by another candidate), or the handover request. `None` when the
    /// claim replaces no holder, or nothing was ever heard from it.
    fn outage_start(&self, reason: ClaimReason) -> Option<Instant> {
        match reason {
            ClaimReason::HolderDead => {
                let holder = self.best.map(|c| c.holder).filter(|h| *h != self.p.me)?;
                let c = self.cands.get(&holder)?;
                c.direct.or(c.indirect)
            }
            ClaimReason::Handover(_) => self.holder_gone_since,
            ClaimReason::Initial | ClaimReason::Restart | ClaimReason::Renew => None,
        }
    }

    pub(super) fn claim_now(&mut self, now: Instant, reason: ClaimReason) {
        let Some(rank) = self.rank() else { return };
        if self.max_term >= MAX_TERM {
            if !self.exhausted_noted {
                self.exhausted_noted = true;
                self.note(Note::TermExhausted { term: self.max_term });
            }
            return;
        }
        self.max_term += 1;
        if reason != ClaimReason::Renew {
            self.rival = None;
        }
        let outage = self
            .outage_start(reason)
            .map(|start| now.saturating_duration_since(start));
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
        self.renew_at = None;
        self.renew_lifetime(now);
        self.handed = None;
        let since = self.holder_gone_since.take().unwrap_or(now);
        self.note(Note::Claimed {
            reason,
            epoch,
            detection_to_claim: now.saturating_duration_since(since),
            outage,
        });
        self.set_role(PeerState::Holding, reason.as_str());
    }
}
