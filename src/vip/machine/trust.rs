//! Who may say what (see "Trust model" in `docs/protocol.md`): the checks every claim learned must pass,
//! what a follower's acknowledgement may still cause, and the failover transport's state (a deaf node
//! never claims). It must not learn anything itself: `Machine::learn` does, after `Machine::vet`.

use std::net::Ipv6Addr;
use std::time::Instant;

use super::{Machine, Rival};
use crate::vip::{Claim, ClaimReason, Note, PeerState, CATCH_UP_TERM, MAX_TERM, MAX_TERM_STEP};

/// The first wait before topping again a rival that answered this holder's renewal, in claim refresh
/// periods: more than one, or the wait would end before this holder's next refresh (when the followers'
/// acknowledgements tell it again) and change nothing.
pub(super) const HOLD_OFF_FIRST: u32 = 2;
/// The longest such wait, in claim refresh periods: how long followers may stay with a rival that died
/// after answering a renewal, while a partition keeps this holder from hearing it.
pub(super) const HOLD_OFF_MAX: u32 = 16;

impl Machine {
    /// Whether `claim` may be learned; `from` is the candidate that sent it (as a claim, or as the view
    /// of its heartbeat or ack), `None` for a follower's ack. The holder must be a candidate (this node
    /// included) and the epoch must carry its rank, and its term must be within [`Machine::term_bound`].
    pub(super) fn vet(&self, claim: Claim, from: Option<Ipv6Addr>) -> Result<(), &'static str> {
        let rank = if claim.holder == self.p.me {
            self.rank()
        } else {
            self.cands.get(&claim.holder).map(|c| c.rank)
        };
        let Some(rank) = rank else {
            return Err("not_candidate");
        };
        if usize::from(claim.epoch.rank) != rank {
            return Err("bad_rank");
        }
        if claim.epoch.term > self.term_bound(from.is_none()) {
            return Err("bad_term");
        }
        Ok(())
    }

    /// The highest term a claim learned now may carry: never above [`MAX_TERM`]; any term up to
    /// [`CATCH_UP_TERM`], so a node that restarted without a registry floor, or missed claims in a
    /// partition, catches up with whatever an honest network reaches (one per claim) in one message, from
    /// the holder or from anyone relaying it; above that, at most [`MAX_TERM_STEP`] above the highest
    /// term seen, so no message leaves too little room for the next claims. A follower's view is held
    /// one term lower: the holder renews one term above it, and that claim must pass everyone's bound.
    pub(super) fn term_bound(&self, follower: bool) -> u64 {
        ((self.max_term + MAX_TERM_STEP).max(CATCH_UP_TERM) - u64::from(follower)).min(MAX_TERM)
    }

    /// A claim (or view) was refused for its term alone: this node climbs to the bound it was refused
    /// by, so it learns the claim from a later message (the holder's next heartbeat, re-send or refresh;
    /// a follower's next ack) once it is within a step. A node left far behind (it missed a rogue's
    /// steps, or restarted without a floor after terms passed [`CATCH_UP_TERM`]) catches up a step per
    /// message, and refused claims raise terms no faster than the steps a rogue may take anyway.
    pub(super) fn climb(&mut self, claim: Claim, follower: bool) {
        if claim.epoch.term <= MAX_TERM {
            self.max_term = self.max_term.max(self.term_bound(follower));
        }
    }

    /// The follower `from` acknowledged this node's claim `mine` with a different claim `view`. A
    /// follower is not a candidate, so what it says never moves the VIP. But a follower that routes by a
    /// higher claim than this holder's would keep doing so for good if its holder is gone (it was made
    /// while this holder could not hear it, and no live candidate knows it). So when `view` is higher than
    /// `mine` and names this node or a candidate that is not live and holding here (a live holder's own
    /// heartbeats say what it holds), this holder renews its claim above it if it is valid
    /// ([`Machine::vet`]), or climbs towards it if only its term is too far ([`Machine::climb`]); at
    /// most once per interval either way. The follower moves to this holder, and a forger can only raise
    /// this holder's term to [`CATCH_UP_TERM`], then by at most [`MAX_TERM_STEP`] per interval.
    ///
    /// A renewal is answered only by a live rival: when a follower that acknowledged this holder's
    /// renewal later names another candidate's claim above it, that candidate claimed since, and the two
    /// cannot hear each other (a partition between candidates that followers bridge). Topping it again at
    /// once would start a duel that moves every follower at each refresh, so this holder waits
    /// [`HOLD_OFF_FIRST`] refresh periods, doubling after each renewal it follows up to
    /// [`HOLD_OFF_MAX`], and notes [`Note::RivalUnheard`]; it still renews in the end, in case the rival
    /// has died since.
    pub(super) fn follower_view(&mut self, now: Instant, from: Ipv6Addr, mine: Option<Claim>, view: Claim) {
        let vetted = self.vet(view, None);
        if let Err(reason) = vetted {
            self.note(Note::Rejected(reason));
        }
        let Some(mine) = mine else { return };
        let live_holder = self
            .cands
            .get(&view.holder)
            .is_some_and(|c| self.live(c, now) && c.state == Some(PeerState::Holding));
        let recent = self.last_renew.is_some_and(|t| now < t + self.p.timers.interval);
        if view <= mine || live_holder || recent || self.handover.is_some() {
            return;
        }
        match vetted {
            Ok(()) => {
                if self.holding_off(now, from, view) {
                    return;
                }
                self.last_renew = Some(now);
                self.max_term = self.max_term.max(view.epoch.term);
                self.claim_now(now, ClaimReason::Renew);
                let first = self.p.timers.refresh() * HOLD_OFF_FIRST;
                self.rival.get_or_insert(Rival {
                    hold_off: first,
                    not_before: None,
                });
            }
            Err("bad_term") => {
                self.last_renew = Some(now);
                self.climb(view, true);
            }
            Err(_) => {}
        }
    }

    /// Whether to wait before renewing above `view`, reported by the follower `from`: this holder renewed
    /// on a follower's report before, `from` acknowledged the claim this holder holds now (so `view`'s
    /// holder, another candidate, claimed after it), and this node does not hear that candidate (one it
    /// hears and that does not hold is gone as a holder); or the wait that such a proof started has not
    /// ended and this node still does not hear `view`'s holder. Starts the wait when the proof arrives, and doubles the next one when
    /// it ends.
    fn holding_off(&mut self, now: Instant, from: Ipv6Addr, view: Claim) -> bool {
        let refresh = self.p.timers.refresh();
        let acked = self.hold.as_ref().is_some_and(|h| h.acked.contains(&from));
        let unheard = self.cands.get(&view.holder).is_some_and(|c| !self.live(c, now));
        let max = refresh * HOLD_OFF_MAX;
        let Some(r) = self.rival.as_mut() else { return false };
        match r.not_before {
            Some(t) if now < t && unheard => true,
            Some(t) => {
                r.not_before = None;
                if now >= t {
                    r.hold_off = (r.hold_off * 2).min(max);
                }
                false
            }
            None if acked && unheard => {
                let hold_off = r.hold_off;
                r.not_before = Some(now + hold_off);
                self.note(Note::RivalUnheard {
                    rival: view.holder,
                    hold_off,
                });
                true
            }
            None => false,
        }
    }

    /// The failover transport went down or came back.
    pub(super) fn set_transport(&mut self, now: Instant, up: bool) {
        if up == self.transport_up {
            return;
        }
        self.transport_up = up;
        if !up {
            self.transport_down_since = Some(now);
            return;
        }
        self.transport_down_since = None;
        // It heard nothing meanwhile: what it knows is stale, so it listens afresh before it may claim.
        if self.rank().is_some() && matches!(self.role, PeerState::Standby | PeerState::Listening) {
            self.listen_until = Some(now + self.p.timers.listen());
            self.set_role(PeerState::Listening, "transport back; listening again");
        }
    }

    /// Whether the transport has been down for a dead time (by then the others have stopped hearing
    /// this node, or hear it say it does not hold, and have claimed).
    pub(super) fn deaf_for_dead_time(&self, now: Instant) -> bool {
        self.transport_down_since
            .is_some_and(|t| now >= t + self.p.timers.dead_time(self.p.timers.interval))
    }

    /// A deaf node stops serving the VIP: it cannot hear a higher claim, nor confirm its own.
    pub(super) fn step_down_deaf(&mut self) {
        let why = "transport down for a dead time";
        if self.hold.take().is_some() {
            self.handover = None;
            self.set_role(PeerState::Standby, why);
        } else if self.drain.take().is_some() {
            self.set_role(PeerState::Standby, why);
        }
        self.remove_address();
    }
}
